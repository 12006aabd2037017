"""``hashwatch run --headless`` as a real subprocess against local servers only.

Every upstream (mempool websocket and REST, Coinbase, Kraken, Bitstamp websockets and the
REST price fallbacks) points at the demo servers on 127.0.0.1 in this test's event loop; the
database is a real SQLite file. Signals: SIGTERM and SIGINT stop it within 2 s with the last
data flushed; SIGHUP with an invalid config keeps it running and says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support_cli import (
    HASHWATCH,
    Collector,
    Upstreams,
    arun,
    assert_clean_logs,
    cli_env,
    db_count,
    db_rows,
    local_feeds_toml,
    local_upstreams,
    run,
    start_collector,
    wait_for,
    wait_running,
)


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with local_upstreams() as up:
        yield up


async def push_and_stop(up: Upstreams, c: Collector, sig: signal.Signals) -> None:
    block = await up.mempool.add_block()
    up.exchange.publish_price(66_666.5)
    for proto in ("coinbase", "kraken", "bitstamp"):
        await up.exchange.drain(proto)
    # Long enough for loopback delivery, about the writer's 250 ms flush interval: what is
    # asserted below is often stored only by the shutdown flush.
    await asyncio.sleep(0.2)
    c.proc.send_signal(sig)
    code, took = await c.wait_exit(5.0)
    assert code == 0, c.stderr
    assert took < 2.0, f"exit took {took:.2f} s"
    assert db_count(c.db, "blocks", "hash = ?", [block.hash]) == 1, "the last block is stored"
    assert db_count(c.db, "price_ticks", "price_usd = 66666.5") >= 1, "the last price is stored"
    # every block of the local chain exactly once (backfill + live push)
    assert db_count(c.db, "blocks", "orphaned = 0") == db_count(c.db, "blocks")
    heights = db_count(c.db, "(SELECT DISTINCT height FROM blocks)")
    assert heights == db_count(c.db, "blocks")
    assert_clean_logs(c.stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_headless_runs_and_stops_on_signal(
    tmp_path: Path, upstreams: Upstreams, sig: signal.Signals
) -> None:
    c = await start_collector(tmp_path, upstreams.feeds_toml())
    try:
        await wait_running(upstreams, c)
        assert upstreams.mempool.ws_connections >= 1
        for proto in ("coinbase", "kraken", "bitstamp"):
            assert upstreams.exchange.stats[proto].subscribes >= 1, proto
        # `hashwatch status --json` from another process while the collector writes
        await wait_for(
            lambda: db_count(c.db, "feed_status", "state = 'live'") >= 4, 10.0, "live feeds"
        )
        r = await arun(["status", "--json", "--db", c.db], tmp_path)
        assert r.code == 0, r.err
        status = json.loads(r.out)
        assert status["tip"]["height"] == upstreams.mempool.chain.tip.height
        assert 64_000 < status["metrics"]["price_usd"] < 67_000
        for source in ("mempool", "coinbase", "kraken", "bitstamp"):
            feed = status["feeds"][source]
            assert feed["state"] == "live", (source, feed)
            assert set(feed) >= {"state", "since", "last_message_age_s", "reconnects", "last_error"}
        await push_and_stop(upstreams, c, sig)
        assert "stopped" in c.stderr
        # Backfill asked the local REST server (and nothing else: every URL is local).
        assert upstreams.mempool.hits, "REST backfill used the local server"
    finally:
        await c.kill()


async def test_sighup_with_invalid_config_keeps_running(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    c = await start_collector(tmp_path, upstreams.feeds_toml())
    try:
        await wait_running(upstreams, c)
        c.config.write_text(upstreams.feeds_toml() + '\n[alerts]\neval_interval = "15 minutes"\n')
        c.proc.send_signal(signal.SIGHUP)
        await wait_for(
            lambda: "keeping the old rules" in c.stderr, 5.0, "the reload refusal in the log"
        )
        assert "15 minutes" in c.stderr, "the log says why"
        await asyncio.sleep(0.3)
        assert c.proc.returncode is None, "still running after a bad SIGHUP"
        # A valid config on the next SIGHUP is taken without complaint.
        c.config.write_text(upstreams.feeds_toml())
        before = c.stderr.count("keeping the old rules")
        c.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: "alerts: reloaded" in c.stderr, 5.0, "the reload in the log")
        assert c.proc.returncode is None
        assert c.stderr.count("keeping the old rules") == before
        # An operator action from another process is applied by the running collector.
        r = await arun(["silence", "hashprice-floor", "--for", "4h", "--db", c.db], tmp_path)
        assert r.code == 0, r.err
        await wait_for(
            lambda: db_count(c.db, "operator_actions", "done_at IS NOT NULL") == 1,
            10.0,
            "the collector to apply the silence",
        )
        until = db_rows(
            c.db, "SELECT silenced_until FROM alert_state WHERE rule = 'hashprice-floor'"
        )
        assert until and until[0][0] > time.time() + 3.9 * 3600, until
        # ... and it still collects and still stops cleanly.
        await push_and_stop(upstreams, c, signal.SIGTERM)
    finally:
        await c.kill()


def test_config_points_nowhere_but_localhost(tmp_path: Path) -> None:
    """The config these tests use leaves no URL at a public default (checked through the
    CLI's own --show-config, so a key added later with an internet default is caught)."""
    toml = local_feeds_toml(
        mempool_ws="ws://127.0.0.1:1/api/v1/ws",
        mempool_rest="http://127.0.0.1:1/api",
        exchange_ws={p: f"ws://127.0.0.1:1/ws/{p}" for p in ("coinbase", "kraken", "bitstamp")},
        exchange_rest={
            p: f"http://127.0.0.1:1/rest/{p}" for p in ("coinbase", "kraken", "bitstamp")
        },
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    r = run(["--show-config", "--config", cfg], tmp_path)
    assert r.code == 0, r.err
    urls = re.findall(r"\b(?:wss?|https?)://[^\s\"']+", r.out)
    assert len(urls) >= 8
    assert {urlsplit(u).hostname for u in urls} == {"127.0.0.1"}, urls


async def test_collector_fails_cleanly_on_a_bad_database(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    db.write_bytes(b"not a database" * 100)
    proc = await asyncio.create_subprocess_exec(
        str(HASHWATCH),
        "run",
        "--headless",
        "--db",
        str(db),
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err
    assert b"not SQLite" in err
    assert db.read_bytes() == b"not a database" * 100
    assert os.listdir(tmp_path) == ["collector.db"] or set(os.listdir(tmp_path)) <= {
        "collector.db",
        ".config",
        ".local",
    }


async def test_cancel_while_an_event_arrives_is_not_swallowed() -> None:
    """Regression: the collector hung on SIGTERM when a cancellation met a just-set event in
    ``Subscription.get_batch`` (asyncio.wait_for on Python 3.11 returned the result instead
    of raising, so the loop around it never stopped)."""
    from feeds.bus import Bus
    from feeds.events import PriceTick

    bus = Bus()
    sub = bus.subscribe([PriceTick], maxsize=10, name="t")
    task = asyncio.create_task(sub.get_batch(timeout=5.0))
    await asyncio.sleep(0)  # now waiting
    bus.publish(PriceTick(source="coinbase", price_usd=1.0, time=1.0, received_at=1.0))
    task.cancel()  # in the same loop iteration as the wake-up
    with pytest.raises(asyncio.CancelledError):
        await task
    sub.close()


async def test_sigterm_during_a_slow_backfill_stops_within_2s(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """The REST backfill hangs on a slow upstream: SIGTERM still ends the collector in time
    (the requests in flight are cancelled, not awaited)."""
    upstreams.mempool.fail_rest("/v1/blocks", times=100, status=200, delay_s=3.5)
    c = await start_collector(tmp_path, upstreams.feeds_toml())
    try:
        await wait_for(
            lambda: upstreams.mempool.rest_in_flight >= 1, 20.0, "a backfill request in flight"
        )
        c.proc.send_signal(signal.SIGTERM)
        code, took = await c.wait_exit(5.0)
        assert code == 0, c.stderr
        assert took < 2.0, f"exit took {took:.2f} s"
        assert_clean_logs(c.stderr)
    finally:
        await c.kill()
