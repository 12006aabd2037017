"""The durable outbox against real local receivers and a real SQLite file.

Millisecond backoffs and a 10 ms poll keep every test well under a second of real time; the
storm-control and heartbeat tests drive an injected clock instead of waiting 10 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3

import pytest

from alerts.notify import AppriseNotifier
from alerts.outbox import OutboxSender, enqueue, send_test, transition_key
from alerts.settings import NotifyTarget
from feeds.errors import UsageError
from feeds.events import AlertState, AlertTransition
from feeds.store import Store
from tests.support_receivers import HttpReceiver, SmtpReceiver, free_port, wait_until

ALL = ("info", "warning", "critical")
T0 = 1_736_000_000.0
CTX = {
    "metric": "hashprice",
    "condition": "below",
    "price_usd": 71_234.0,
    "hashrate_7d": 8.1e20,
    "difficulty": 1.1e14,
    "difficulty_projected_change_pct": 3.2,
    "hashprice": 38.7,
}
FAST = (0.002, 0.005, 0.01)


def tgt(url: str, name: str = "", severities: tuple[str, ...] = ALL) -> NotifyTarget:
    return NotifyTarget(name=name, url=url, severities=severities)


def firing(rule: str = "hashprice-floor", at: float = T0, severity: str = "critical"):
    return AlertTransition(
        rule=rule,
        severity=severity,
        previous=AlertState.PENDING,
        state=AlertState.FIRING,
        at=at,
        value=38.7,
        threshold=40.0,
        message="hashprice $38.70/PH/day below $40.00/PH/day",
        fired_at=at,
    )


def reminder(t: AlertTransition, at: float) -> AlertTransition:
    return dataclasses.replace(t, previous=AlertState.FIRING, at=at, reminder=True)


def resolved(t: AlertTransition, at: float) -> AlertTransition:
    return dataclasses.replace(
        t,
        previous=AlertState.FIRING,
        state=AlertState.RESOLVED,
        at=at,
        value=42.5,
        message="hashprice $42.50/PH/day above $40.00/PH/day",
    )


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "hw.db")
    yield s
    s.close()


@pytest.fixture
async def http():
    rx = await HttpReceiver().start()
    yield rx
    await rx.stop()


@pytest.fixture
def smtp():
    rx = SmtpReceiver().start()
    yield rx
    rx.stop()


def emit(store: Store, targets, *transitions: AlertTransition) -> int:
    with store.transaction() as db:
        return sum(enqueue(db, t, CTX, targets) for t in transitions)


def rows(store: Store, target: str | None = None) -> list[dict]:
    sql = "SELECT * FROM outbox" + (" WHERE target = ?" if target else "") + " ORDER BY id"
    return store.query(sql, (target,) if target else ())


def sender(store: Store, targets, **kw) -> OutboxSender:
    kw.setdefault("retry_delays", FAST)
    kw.setdefault("poll_interval_s", 0.01)
    notifier = kw.pop("notifier", None) or AppriseNotifier(timeout_s=5.0, min_interval_s=0)
    return OutboxSender(store.path, notifier, targets, **kw)


@contextlib.asynccontextmanager
async def running(s: OutboxSender):
    task = asyncio.create_task(s.run())
    try:
        yield task
    finally:
        task.cancel()
        # the sender must stop promptly when cancelled (clean shutdown, no stray tasks)
        done, _ = await asyncio.wait([task], timeout=3)
        assert done, "sender did not stop when cancelled"
        with contextlib.suppress(asyncio.CancelledError):
            await task


def incident() -> list[AlertTransition]:
    f = firing()
    return [f, reminder(f, T0 + 3600), reminder(f, T0 + 7200), resolved(f, T0 + 8100)]


# ------------------------------------------------------------------------------ enqueue


def test_enqueue_routes_by_severity_and_skips_duplicates(store):
    targets = [tgt("json://a", "all"), tgt("json://b", "pager", ("critical",)), tgt("json://c")]
    targets.append(tgt("json://d", "info-only", ("info",)))
    assert emit(store, targets, firing()) == 3
    assert emit(store, targets, firing()) == 0  # replay after a restart: same keys
    assert [r["target"] for r in rows(store)] == ["all", "pager", "3"]
    row = rows(store)[0]
    assert row["title"].startswith("[CRITICAL] FIRING hashprice-floor: hashprice $38.70")
    assert row["key"] == transition_key(firing(), "all")
    assert row["delivered_at"] is None and row["attempts"] == 0


def test_enqueue_is_part_of_the_callers_transaction(store):
    with pytest.raises(RuntimeError), store.transaction() as db:
        assert enqueue(db, firing(), CTX, [tgt("json://a")]) == 1
        raise RuntimeError("the transition write failed")
    assert rows(store) == []


def test_reminders_get_distinct_keys():
    f = firing()
    keys = {transition_key(t, "x") for t in incident()}
    assert len(keys) == 4
    assert transition_key(reminder(f, T0 + 60), "x") != transition_key(reminder(f, T0 + 120), "x")


# ------------------------------------------------------------------------------ delivery


async def test_incident_is_delivered_exactly_in_order_to_each_channel(store, http, smtp):
    targets = [
        tgt(http.json_url(), "chat"),
        tgt(smtp.url(), "pager", ("critical",)),
        tgt(http.json_url("info-only"), "log", ("info",)),
    ]
    emit(store, targets, *incident())
    s = sender(store, targets)
    async with running(s):
        await wait_until(lambda: len(http.requests) == 4 and len(smtp.messages) == 4)
        await wait_until(lambda: all(r["delivered_at"] for r in rows(store)))
    want = [
        "[CRITICAL] FIRING hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day",
        "[CRITICAL] FIRING hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day "
        "(reminder, firing for 1h)",
        "[CRITICAL] FIRING hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day "
        "(reminder, firing for 2h)",
        "[CRITICAL] RESOLVED hashprice-floor: hashprice $42.50/PH/day above $40.00/PH/day",
    ]
    assert http.titles() == want
    assert smtp.subjects() == want
    assert [r.body["type"] for r in http.requests] == ["failure"] * 3 + ["success"]
    assert "It lasted 2h 15m" in http.requests[3].body["message"]
    assert "• Price: $71,234" in smtp.messages[0].text
    assert all(r.path == "/hook" for r in http.requests)  # nothing went to the info target
    assert [r["attempts"] for r in rows(store)] == [1] * 8
    assert s.delivered == {"chat": 4, "pager": 4}


async def test_target_failing_with_500_recovers_in_order_without_stalling_others(store, http, smtp):
    http.fail_next = 10**9
    targets = [tgt(http.json_url(), "chat"), tgt(smtp.url(), "mail")]
    emit(store, targets, *incident())
    async with running(sender(store, targets)):
        # the broken target does not hold the healthy one back
        await wait_until(lambda: len(smtp.messages) == 4)
        await wait_until(lambda: (rows(store, "chat")[0]["attempts"] or 0) >= 3)
        assert http.requests == []
        head = rows(store, "chat")[0]
        assert head["delivered_at"] is None and "500" in head["last_error"]
        assert all(r["attempts"] == 0 for r in rows(store, "chat")[1:])  # in order: head first
        http.fail_next = 0
        await wait_until(lambda: all(r["delivered_at"] for r in rows(store)))
    assert http.titles() == smtp.subjects()
    assert len(http.requests) == 4


async def test_refused_connections_then_recovery(store):
    port = free_port()
    rx = HttpReceiver(port)
    targets = [tgt(f"json://127.0.0.1:{port}/hook")]
    emit(store, targets, *incident())
    try:
        async with running(sender(store, targets)):
            await wait_until(lambda: (rows(store)[0]["attempts"] or 0) >= 2)
            assert "connection" in rows(store)[0]["last_error"].lower()
            await rx.start()  # the target comes back on the same address
            await wait_until(lambda: len(rx.requests) == 4)
        assert [t.split(":")[0] for t in rx.titles()] == [
            "[CRITICAL] FIRING hashprice-floor"
        ] * 3 + ["[CRITICAL] RESOLVED hashprice-floor"]
        assert rx.titles()[1].endswith("(reminder, firing for 1h)")
    finally:
        await rx.stop()


async def test_smtp_temporary_failures_then_delivery_in_order(store, smtp):
    smtp.fail_next = 2
    targets = [tgt(smtp.url())]
    emit(store, targets, *incident())
    async with running(sender(store, targets)):
        await wait_until(lambda: len(smtp.messages) == 4)
    assert smtp.attempts == 6
    assert [s.split(" ")[1] for s in smtp.subjects()] == ["FIRING"] * 3 + ["RESOLVED"]
    assert rows(store)[0]["attempts"] == 3


async def test_restart_between_enqueue_and_delivery_loses_nothing(store, http):
    http.fail_next = 10**9
    targets = [tgt(http.json_url())]
    emit(store, targets, *incident())
    async with running(sender(store, targets)):
        await wait_until(lambda: (rows(store)[0]["attempts"] or 0) >= 1)
    # A send already in its thread when the sender stops still reaches the server (and would
    # count as a duplicate, at-least-once): let it finish against the broken target first.
    await asyncio.sleep(0.05)
    assert http.requests == []
    # a new process: a new sender on the same database, the target is healthy again
    http.fail_next = 0
    async with running(sender(store, targets)):
        await wait_until(lambda: all(r["delivered_at"] for r in rows(store)))
        await asyncio.sleep(0.05)  # a duplicate would show up here
    assert len(http.requests) == 4
    assert [t.split(" ")[1] for t in http.titles()] == ["FIRING"] * 3 + ["RESOLVED"]


async def test_slow_target_does_not_delay_the_others(store, http, smtp):
    http.hang = True
    targets = [tgt(http.json_url(), "slow"), tgt(smtp.url(), "mail")]
    emit(store, targets, *incident())
    async with running(sender(store, targets)):
        await wait_until(lambda: len(smtp.messages) == 4, limit_s=3.0)
        assert http.requests == []
        http.release()
        await wait_until(lambda: len(http.requests) == 4)


# ------------------------------------------------------------------------------ storm control


async def test_storm_is_folded_into_one_digest(store, http):
    now = [T0]
    targets = [tgt(http.json_url())]
    storm = [firing(f"rule-{i:02d}", at=T0 + i) for i in range(10)]
    emit(store, targets, *storm)
    s = sender(store, targets, max_per_target_per_10m=3, clock=lambda: now[0])
    async with running(s):
        await wait_until(lambda: all(r["delivered_at"] for r in rows(store)))
        await asyncio.sleep(0.05)
        titles = http.titles()
        assert len(titles) == 3
        assert titles[0].startswith("[CRITICAL] FIRING rule-00:")
        assert titles[1].startswith("[CRITICAL] FIRING rule-01:")
        assert titles[2] == "[CRITICAL] DIGEST: 8 alert messages folded"
        digest = http.requests[2].body["message"]
        assert [f"FIRING rule-{i:02d}:" in digest for i in range(2, 10)] == [True] * 8
        assert "rule-01:" not in digest
        # one attempt per send; the folded rows are delivered by the digest's send
        assert [r["attempts"] for r in rows(store)] == [1, 1, 1] + [0] * 7
        # the window is full: a new message waits for it to move on, then goes alone
        emit(store, targets, firing("late", at=T0 + 100))
        await asyncio.sleep(0.1)
        assert len(http.requests) == 3
        now[0] = T0 + 601
        s.wake()
        await wait_until(lambda: len(http.requests) == 4)
    assert http.titles()[3].startswith("[CRITICAL] FIRING late:")


async def test_storm_window_survives_a_restart(store, http):
    now = [T0]
    targets = [tgt(http.json_url())]
    emit(store, targets, firing("a"), firing("b"))
    async with running(sender(store, targets, max_per_target_per_10m=2, clock=lambda: now[0])):
        await wait_until(lambda: all(r["delivered_at"] for r in rows(store)))
    emit(store, targets, firing("c"))
    now[0] = T0 + 60
    async with running(sender(store, targets, max_per_target_per_10m=2, clock=lambda: now[0])):
        await asyncio.sleep(0.1)
        assert len(http.requests) == 2  # the new process remembers the 2 sends of this window


# ------------------------------------------------------------------------------ secrets


async def test_secrets_never_reach_rows_or_logs(store, http, caplog):
    caplog.set_level(logging.DEBUG)
    http.fail_next = 2
    secret_url = http.json_url("hook/SECRETPATH123") + "?token=SECRETQUERY99"
    targets = [tgt(secret_url, "ops")]
    emit(store, targets, firing())
    async with running(sender(store, targets)):
        await wait_until(lambda: rows(store)[0]["delivered_at"] is not None)
    assert len(http.requests) == 1
    row = rows(store)[0]
    assert row["attempts"] == 3 and "500" in row["last_error"]
    dump = "\n".join(str(r) for r in rows(store))
    assert "outbox: target ops" in caplog.text  # the failures were logged ...
    for secret in ("SECRETPATH123", "SECRETQUERY99"):
        assert secret not in dump
        assert secret not in caplog.text  # ... without the secrets


# ------------------------------------------------------------------------------ heartbeat


async def test_heartbeat_once_per_period(store, http, smtp):
    period = 1000.0
    now = [T0 + 10]
    targets = [tgt(http.json_url()), tgt(smtp.url(), "pager", ("critical",))]
    summary = {"price_usd": 70_000.0, "active_alerts": [("hashprice-floor", "critical", T0)]}
    s = sender(
        store, targets, clock=lambda: now[0], heartbeat_s=period, heartbeat_summary=lambda: summary
    )
    async with running(s):
        await asyncio.sleep(0.05)
        assert http.requests == []  # no heartbeat at start-up
        now[0] = (T0 // period + 1) * period + 1
        await wait_until(lambda: len(http.requests) == 1 and len(smtp.messages) == 1)
        now[0] += period / 2
        await asyncio.sleep(0.1)
    assert len(http.requests) == 1
    assert http.titles() == ["[INFO] hashwatch still watching: 1 alert firing"]
    assert "• Price: $70,000" in http.requests[0].body["message"]
    assert "[CRITICAL] hashprice-floor since" in smtp.messages[0].text


# ------------------------------------------------------------------------------ writer path


class ThreadWriter:
    """Stands in for feeds/writer.py: ``await call(fn, *args)`` runs ``fn(store, *args)`` on
    one thread that owns the write connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0
        self._lock = asyncio.Lock()

    async def call(self, fn, *args):
        self.calls += 1
        async with self._lock:
            return await asyncio.to_thread(fn, self.store, *args)


async def test_writes_go_through_the_writer_when_given(tmp_path, http):
    # check_same_thread is off on the store's write connection, and the lock serialises use
    st = Store.open(tmp_path / "w.db")
    try:
        targets = [tgt(http.json_url())]
        emit(st, targets, *incident())
        w = ThreadWriter(st)
        async with running(sender(st, targets, writer=w)):
            await wait_until(lambda: all(r["delivered_at"] for r in rows(st)))
        assert w.calls == 4
        assert len(http.requests) == 4
    finally:
        st.close()


# ------------------------------------------------------------------------------ test-alert


async def test_send_test_reports_each_target(http):
    targets = [tgt(http.json_url(), "chat"), tgt(f"json://127.0.0.1:{free_port()}/x")]
    notifier = AppriseNotifier(timeout_s=5.0, min_interval_s=0)
    results = await send_test(targets, notifier=notifier, clock=lambda: T0)
    assert [(label, ok) for label, ok, _ in results] == [("chat", True), ("2", False)]
    assert results[0][2] is None and "connection" in results[1][2].lower()
    assert http.titles() == ["[INFO] hashwatch test alert"]
    assert "notify target chat" in http.requests[0].body["message"]
    only = await send_test(targets, "chat", notifier=notifier)
    assert [label for label, _, _ in only] == ["chat"] and len(http.requests) == 2
    by_position = await send_test(targets, "2", notifier=notifier)
    assert [(label, ok) for label, ok, _ in by_position] == [("2", False)]
    with pytest.raises(UsageError, match="chat, 2"):
        await send_test(targets, "nope", notifier=notifier)


def test_sender_reads_with_its_own_connection(store):
    # the database is a plain SQLite file others can read while the sender works
    emit(store, [tgt("json://a")], firing())
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    finally:
        conn.close()
