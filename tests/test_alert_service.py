"""AlertService against a real SQLite file through the real store writer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import alerts.outbox
from alerts.actions import submit_action
from alerts.service import AlertService
from alerts.settings import NotifyTarget
from feeds.bus import Bus
from feeds.events import AlertState, AlertTransition, MetricsSnapshot
from feeds.writer import Writer
from tests.support_alerts import rule, spec

S = AlertState
TARGETS = (
    NotifyTarget(name="ops", url="json://127.0.0.1:9/hook"),
    NotifyTarget(name="info-only", url="json://127.0.0.1:9/info", severities=("info",)),
)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def q(path: Path, sql: str, *args: Any) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def env(tmp_path: Path):
    path = tmp_path / "hw.db"
    writer = Writer(path)
    await writer.open()
    clock = Clock()
    bus = Bus()
    yield path, writer, clock, bus
    await writer.close()


def snap(clock: Clock, stale: frozenset[str] = frozenset(), **values: float | None) -> Any:
    return MetricsSnapshot(at=clock.t, values=dict(values), stale=stale)


FLOOR = {"name": "hashprice-floor", "below": 40.0, "clear": 42.0, "severity": "critical"}


async def test_transition_state_history_and_outbox_are_stored_together(env) -> None:
    path, writer, clock, bus = env
    sub = bus.subscribe([AlertTransition])
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    assert await svc.on_snapshot(snap(clock, hashprice=45.0, price_usd=70000.0)) == []

    clock.t += 60
    trs = await svc.on_snapshot(snap(clock, hashprice=38.7, price_usd=70000.0))
    assert [(t.previous, t.state) for t in trs] == [(S.INACTIVE, S.FIRING)]
    assert [e.state for e in sub.get_nowait()] == [S.FIRING]  # published after commit
    assert q(path, "SELECT rule, state, fired_at FROM alert_state") == [
        ("hashprice-floor", "firing", clock.t)
    ]
    assert q(path, "SELECT previous, state, value, threshold FROM alert_history") == [
        ("inactive", "firing", 38.7, 40.0)
    ]
    rows = q(path, "SELECT target, severity, title, body FROM outbox")
    assert len(rows) == 1  # the info-only target does not take critical alerts
    target, severity, title, body = rows[0]
    assert (target, severity) == ("ops", "critical")
    assert "FIRING" in title and "hashprice-floor" in title
    assert "$70,000" in body  # context from the snapshot reaches the message

    # hysteresis zone: nothing; then resolved, with its own outbox row
    clock.t += 60
    assert await svc.on_snapshot(snap(clock, hashprice=41.0)) == []
    clock.t += 60
    trs = await svc.on_snapshot(snap(clock, hashprice=42.5))
    assert [t.state for t in trs] == [S.RESOLVED]
    assert [r[0] for r in q(path, "SELECT state FROM alert_history ORDER BY id")] == [
        "firing",
        "resolved",
    ]
    titles = [r[0] for r in q(path, "SELECT title FROM outbox ORDER BY id")]
    assert len(titles) == 2 and "RESOLVED" in titles[1]


async def test_failed_outbox_write_rolls_back_the_transition(env, monkeypatch) -> None:
    path, writer, clock, bus = env
    real = alerts.outbox.enqueue

    def broken(db, transition, context, targets):
        real(db, transition, context, targets)  # rows written ... then a failure
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(alerts.outbox, "enqueue", broken)
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    await svc.on_snapshot(snap(clock, hashprice=30.0))
    assert svc.commit_failures == 1
    assert q(path, "SELECT count(*) FROM alert_state")[0][0] == 0
    assert q(path, "SELECT count(*) FROM alert_history")[0][0] == 0
    assert q(path, "SELECT count(*) FROM outbox")[0][0] == 0
    assert svc.states["hashprice-floor"].state is S.INACTIVE  # not advanced: will retry

    monkeypatch.setattr(alerts.outbox, "enqueue", real)
    clock.t += 30
    trs = await svc.tick()
    assert [t.state for t in trs] == [S.FIRING]
    assert q(path, "SELECT count(*) FROM alert_history")[0][0] == 1
    assert q(path, "SELECT count(*) FROM outbox")[0][0] == 1


async def test_restart_neither_refires_nor_forgets(env) -> None:
    path, writer, clock, bus = env
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    await svc.on_snapshot(snap(clock, hashprice=30.0))
    fired_at = clock.t

    clock.t += 600
    again = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    await again.start()
    assert again.states["hashprice-floor"].state is S.FIRING
    assert await again.on_snapshot(snap(clock, hashprice=30.0)) == []  # no re-fire
    trs = await again.on_snapshot(snap(clock, hashprice=50.0))
    assert [(t.state, t.fired_at) for t in trs] == [(S.RESOLVED, fired_at)]  # not forgotten
    assert q(path, "SELECT count(*) FROM outbox")[0][0] == 2


async def test_pending_survives_restart(env) -> None:
    _path, writer, clock, bus = env
    r = {**FLOOR, "for_s": 300}
    svc = AlertService([spec(**r)], writer, bus, TARGETS, clock=clock)
    await svc.on_snapshot(snap(clock, hashprice=30.0))
    clock.t += 200
    svc2 = AlertService([spec(**r)], writer, bus, TARGETS, clock=clock)
    assert await svc2.on_snapshot(snap(clock, hashprice=30.0)) == []
    clock.t += 100
    trs = await svc2.on_snapshot(snap(clock, hashprice=30.0))
    assert [t.state for t in trs] == [S.FIRING]  # the hold counted from before the restart


async def test_stale_price_neither_fires_nor_resolves(env) -> None:
    path, writer, clock, bus = env
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    assert await svc.on_snapshot(snap(clock, frozenset({"price_usd"}), hashprice=10.0)) == []
    assert q(path, "SELECT count(*) FROM alert_history")[0][0] == 0


async def test_slow_tick_advances_ages(env) -> None:
    _path, writer, clock, bus = env
    gap = spec(name="no-block", metric="tip_age_s", above=5400.0, message="gap {value}")
    svc = AlertService([gap], writer, bus, (), clock=clock)
    assert await svc.on_snapshot(snap(clock, tip_age_s=5000.0)) == []
    clock.t += 300
    assert await svc.tick() == []
    clock.t += 200  # 5500 s without a block, though no snapshot came in meanwhile
    trs = await svc.tick()
    assert [(t.state, t.message) for t in trs] == [(S.FIRING, "gap 1h 32m")]


async def test_windows_are_backfilled_from_stored_samples(env) -> None:
    _path, writer, clock, bus = env
    now = clock.t - clock.t % 60

    def fill(store):
        store.db.conn.executemany(
            "INSERT INTO metric_samples (name, minute, value) VALUES (?, ?, ?)",
            [("hashrate_7d", int(now - 60 * k), 100.0) for k in range(1, 70)],
        )

    await writer.call(fill)
    drop = spec(name="hr-drop", metric="hashrate_7d", drop_pct=10.0, window=3600.0)
    svc = AlertService([drop], writer, bus, (), clock=clock)
    trs = await svc.on_snapshot(snap(clock, hashrate_7d=85.0))
    assert [t.state for t in trs] == [S.FIRING]
    assert "15% below its 1h maximum" in trs[0].message


async def test_window_without_history_is_no_data(env) -> None:
    path, writer, clock, bus = env
    drop = spec(name="hr-drop", metric="hashrate_7d", drop_pct=10.0, window=3600.0)
    svc = AlertService([drop], writer, bus, (), clock=clock)
    trs = await svc.on_snapshot(snap(clock, hashrate_7d=85.0))
    assert [t.state for t in trs] == [S.NO_DATA]
    assert q(path, "SELECT state FROM alert_state") == [("no_data",)]


async def test_operator_actions_silence_unsilence_and_errors(env) -> None:
    path, writer, clock, bus = env
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    await svc.start()
    submit_action(path, "silence", {"rule": "hashprice-floor", "seconds": 3600}, now=clock.t)
    submit_action(path, "silence", {"rule": "nope", "seconds": 60}, now=clock.t)
    submit_action(path, "test_alert", {}, now=clock.t)
    assert await svc.poll_actions() == 3
    done = q(path, "SELECT action, done_at, result FROM operator_actions ORDER BY id")
    assert all(d[1] == clock.t for d in done)
    assert done[0][2].startswith("silenced hashprice-floor")
    assert done[1][2] == "error: unknown rule 'nope'"
    assert done[2][2] == "test message queued for 2 target(s)"
    assert q(path, "SELECT silenced_until FROM alert_state") == [(clock.t + 3600,)]
    assert await svc.poll_actions() == 0  # done rows are not applied twice

    test_rows = q(path, "SELECT count(*) FROM outbox")[0][0]
    assert test_rows == 2
    trs = await svc.on_snapshot(snap(clock, hashprice=30.0))
    assert [t.state for t in trs] == [S.FIRING]  # state moves while silenced ...
    assert q(path, "SELECT count(*) FROM outbox")[0][0] == test_rows  # ... nothing is sent
    assert q(path, "SELECT count(*) FROM alert_history")[0][0] == 1

    submit_action(path, "unsilence", {"rule": "hashprice-floor"}, now=clock.t)
    await svc.poll_actions()
    assert q(path, "SELECT silenced_until FROM alert_state") == [(None,)]
    clock.t += 30
    trs = await svc.tick()  # the incident nobody was told about is announced now
    assert [(t.state, t.reminder) for t in trs] == [(S.FIRING, True)]
    assert q(path, "SELECT count(*) FROM outbox")[0][0] == test_rows + 1


async def test_reload_keeps_state_and_rejects_invalid(env) -> None:
    _path, writer, clock, bus = env
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock)
    await svc.on_snapshot(snap(clock, hashprice=30.0))
    ok, msg = svc.reload([spec(**FLOOR), spec(name="hp-high", above=100.0)])
    assert ok and "1 added" in msg
    assert svc.states["hashprice-floor"].state is S.FIRING
    assert await svc.on_snapshot(snap(clock, hashprice=30.0)) == []  # no re-fire after reload

    ok, msg = svc.reload([spec(name="a", above=1.0), spec(name="a", below=1.0)])
    assert not ok and "twice" in msg
    assert [r.name for r in svc.rules] == ["hashprice-floor", "hp-high"]


async def test_reload_action_uses_loader(env) -> None:
    _path, writer, clock, bus = env
    from feeds.errors import ConfigError

    loads: list[Any] = [[spec(name="x", above=1.0)], ConfigError("bad key 'abve'")]

    def loader():
        item = loads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    svc = AlertService([spec(**FLOOR)], writer, bus, (), clock=clock, rule_loader=loader)
    assert (await svc.apply_action(None, "reload", {})).startswith("reloaded 1 rules")
    assert "bad key" in await svc.apply_action(None, "reload", {})
    assert [r.name for r in svc.rules] == ["x"]


async def test_run_loop_end_to_end_and_cancels_cleanly(env) -> None:
    path, writer, clock, bus = env
    sub = bus.subscribe([AlertTransition])
    svc = AlertService([spec(**FLOOR)], writer, bus, TARGETS, clock=clock, action_poll_s=0.01)
    task = asyncio.create_task(svc.run())
    bus.publish(snap(clock, hashprice=30.0))
    got = await asyncio.wait_for(sub.get(), 5)
    assert got.state is S.FIRING and got.rule == "hashprice-floor"
    submit_action(path, "unsilence", {"rule": "hashprice-floor"}, now=clock.t)
    for _ in range(200):
        if q(path, "SELECT done_at FROM operator_actions")[0][0] is not None:
            break
        await asyncio.sleep(0.01)
    assert q(path, "SELECT result FROM operator_actions") == [("unsilenced hashprice-floor",)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert json.loads(q(path, "SELECT key FROM outbox")[0][0])[:3] == [
        "alert",
        "hashprice-floor",
        "firing",
    ]


def test_rule_helper_is_the_real_config() -> None:
    # Guard: the service tests exercise alerts.settings.RuleConfig, not a stand-in.
    from alerts.settings import RuleConfig

    assert isinstance(spec(name="a", above=1.0), RuleConfig)
    assert rule(name="a", above=1.0, for_s=60).for_s == 60
