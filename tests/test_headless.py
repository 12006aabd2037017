"""``hashwatch run --headless`` as a real subprocess against local servers only.

Every upstream (mempool websocket and REST, Coinbase, Kraken, Bitstamp websockets and the
REST price fallbacks) points at the demo servers on 127.0.0.1 in this test's event loop; the
database is a real SQLite file. Signals: SIGTERM and SIGINT stop it within 2 s with the last
data flushed; SIGHUP with an invalid config keeps it running and says why.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support_cli import (
    HASHWATCH,
    cli_env,
    db_count,
    local_feeds_toml,
    run,
    wait_for,
)

from feeds.demo.exchange_server import ExchangeServer
from feeds.demo.mempool_server import Chain, MempoolDemoServer

#: One log event per line: time, level, logger, message.
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.\-]+: \S"
)
CHAIN_BLOCKS = 30
BACKFILL = 20


@dataclass
class Upstreams:
    mempool: MempoolDemoServer
    exchange: ExchangeServer

    def feeds_toml(self) -> str:
        ex = self.exchange
        return local_feeds_toml(
            mempool_ws=self.mempool.ws_url,
            mempool_rest=self.mempool.rest_url,
            exchange_ws={p: ex.ws_url(p) for p in ("coinbase", "kraken", "bitstamp")},
            exchange_rest={
                "coinbase": ex.rest_url("coinbase"),
                "kraken": ex.rest_url("kraken"),
                # bitstamp has no REST poller, but no default may point outside either
                "bitstamp": ex.rest_url("bitstamp"),
            },
            backfill_blocks=BACKFILL,
        )


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    now = int(time.time())
    chain = Chain(start_height=940_000, start_time=now - CHAIN_BLOCKS * 600)
    for _ in range(CHAIN_BLOCKS - 1):
        chain.next_block()
    mempool = await MempoolDemoServer(chain).start()
    await mempool.set_price(65_000)
    exchange = await ExchangeServer(heartbeat_interval_s=0.5, initial_price=65_000.0).start()
    try:
        yield Upstreams(mempool, exchange)
    finally:
        await exchange.close()
        await mempool.close()


@dataclass
class Collector:
    proc: asyncio.subprocess.Process
    db: Path
    config: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def wait_exit(self, limit_s: float) -> tuple[int, float]:
        started = time.monotonic()
        code = await asyncio.wait_for(self.proc.wait(), limit_s)
        return code, time.monotonic() - started

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_collector(
    tmp_path: Path, config_text: str, env: dict[str, str] | None = None
) -> Collector:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text)
    cfg.chmod(0o600)
    db = tmp_path / "collector.db"
    err = tmp_path / "stderr.log"
    with err.open("wb") as err_file:
        proc = await asyncio.create_subprocess_exec(
            str(HASHWATCH),
            "run",
            "--headless",
            "--config",
            str(cfg),
            "--db",
            str(db),
            cwd=tmp_path,
            env=cli_env(tmp_path, env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err_file,
        )
    return Collector(proc, db, cfg, err)


async def wait_running(up: Upstreams, c: Collector) -> None:
    """Until the backfill and live prices are stored (prices are published meanwhile)."""

    def ready() -> bool:
        assert c.proc.returncode is None, f"collector exited early:\n{c.stderr}"
        up.exchange.publish_price(65_000 + (time.time() % 10))
        return (
            db_count(c.db, "blocks") >= BACKFILL
            and db_count(c.db, "price_ticks", "source = 'coinbase'") > 0
            and db_count(c.db, "price_ticks", "source = 'kraken'") > 0
        )

    await wait_for(ready, 20.0, "backfilled blocks and live prices in the database", step=0.1)


def assert_clean_logs(text: str) -> None:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the collector logs something"
    bad = [line for line in lines if not LOG_LINE.match(line)]
    assert not bad, "every stderr line is one log event with a level:\n" + "\n".join(bad)


async def push_and_stop(up: Upstreams, c: Collector, sig: signal.Signals) -> None:
    block = await up.mempool.add_block()
    up.exchange.publish_price(66_666.5)
    for proto in ("coinbase", "kraken", "bitstamp"):
        await up.exchange.drain(proto)
    # Long enough for loopback delivery, shorter than the writer's 250 ms flush interval:
    # what is asserted below is stored by the shutdown flush.
    await asyncio.sleep(0.1)
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
        await asyncio.sleep(0.3)
        assert c.proc.returncode is None
        assert c.stderr.count("keeping the old rules") == before
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
