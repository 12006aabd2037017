"""feeds.writer: the single writer thread, batching, flush/close, locks and Writer.call."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from support_store import block, chain, dump, tick

from feeds.bus import Bus
from feeds.errors import StoreError
from feeds.store import Store
from feeds.writer import Writer

MINUTE = 1_771_527_240


def fast_retries() -> Iterator[float]:
    return itertools.repeat(0.005)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hw.db"


def counts(path: Path) -> tuple[int, int]:
    with Store.open(path, readonly=True) as s:
        return s.tick_count(), s.block_count()


async def wait_for(predicate) -> None:
    deadline = time.monotonic() + 2.0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def test_run_stores_everything_and_ends_when_subscription_closes(path: Path) -> None:
    bus = Bus()
    writer = Writer(path)
    sub = bus.subscribe(maxsize=100_000, name="writer")
    task = asyncio.create_task(writer.run(sub))
    for i in range(2500):
        bus.publish(tick(70_000 + i, MINUTE + i * 0.01))
    for b in chain(100, 104):
        bus.publish(b)
    sub.close()
    await asyncio.wait_for(task, 2)
    await writer.close()
    assert counts(path) == (2505 - 5, 5)
    # At most 1,000 events per transaction.
    assert writer.batches == 3
    assert writer.events_written == 2505


async def test_a_lone_event_is_flushed_after_the_batch_delay(path: Path) -> None:
    bus = Bus()
    writer = Writer(path, batch_max_delay_s=0.02)
    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    try:
        await writer.open()
        bus.publish(tick(1, MINUTE))
        await wait_for(lambda: counts(path)[0] == 1)
        assert not task.done()
    finally:
        await writer.close()
        await asyncio.wait_for(task, 2)


async def test_flush_commits_what_is_queued(path: Path) -> None:
    bus = Bus()
    writer = Writer(path, batch_max_delay_s=10)  # only flush() can write it in time
    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    try:
        await writer.open()
        for b in chain(100, 102):
            bus.publish(b)
        await asyncio.sleep(0)
        await writer.flush()
        assert counts(path) == (0, 3)
    finally:
        await writer.close()
        await asyncio.wait_for(task, 2)


async def test_close_drains_pending_events_within_two_seconds(path: Path) -> None:
    bus = Bus()
    writer = Writer(path, batch_max_delay_s=10)
    sub = bus.subscribe(maxsize=100_000, name="writer")
    task = asyncio.create_task(writer.run(sub))
    await writer.open()
    for i in range(3000):
        bus.publish(tick(1 + i, MINUTE + i * 0.01))
    started = time.monotonic()
    await writer.close()
    assert time.monotonic() - started < 2.0
    await asyncio.wait_for(task, 2)
    assert counts(path) == (3000, 0)
    with pytest.raises(StoreError, match="closed"):
        await writer.call(lambda s: None)


async def test_cancelled_run_loses_nothing_on_close(path: Path) -> None:
    bus = Bus()
    writer = Writer(path, batch_max_delay_s=10)
    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    await writer.open()
    for b in chain(100, 109):
        bus.publish(b)
    await asyncio.sleep(0.01)  # the run loop takes them into its buffer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.close()
    assert counts(path) == (0, 10)


async def test_replayed_events_after_reconnect_are_harmless(path: Path) -> None:
    events = [*chain(100, 103), tick(1, MINUTE + 1), tick(2, MINUTE + 2)]
    writer = Writer(path)
    await writer.write(events)
    await writer.flush()
    once = dump(path)
    await writer.write(events)
    await writer.write(events[::-1])
    await writer.close()
    assert dump(path) == once


def hold_write_lock(path: Path, seconds: float, started: threading.Event) -> threading.Thread:
    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


@pytest.mark.parametrize("busy_timeout_s", [10.0, 0.01])
async def test_locked_database_waits_and_loses_nothing(path: Path, busy_timeout_s: float) -> None:
    """Another process holds the write lock for 0.3 s: with the normal busy timeout SQLite
    waits; with a tiny one the writer's own retry loop takes over. Either way, all rows."""
    writer = Writer(path, busy_timeout_s=busy_timeout_s, retry_delays=fast_retries)
    await writer.open()
    started = threading.Event()
    holder = hold_write_lock(path, 0.3, started)
    assert await asyncio.to_thread(started.wait, 2)
    events = [*chain(100, 149), *(tick(1 + i, MINUTE + i) for i in range(500))]
    await writer.write(events)
    await writer.flush()
    await asyncio.to_thread(holder.join)
    await writer.close()
    assert counts(path) == (500, 50)
    assert writer.dropped == 0
    if busy_timeout_s < 0.3:
        assert writer.lock_retries > 0
    else:
        assert writer.lock_retries == 0


async def test_call_runs_in_one_transaction_on_the_writer_thread(path: Path) -> None:
    writer = Writer(path)
    threads: list[str] = []

    def transition(store: Store, rule: str, fail: bool) -> int:
        threads.append(threading.current_thread().name)
        store.db["alert_state"].upsert({"rule": rule, "state": "firing", "since": 1.0}, pk="rule")
        store.db["outbox"].insert(
            {"key": f"{rule}:firing:slack", "target": "slack", "created_at": 1.0}
        )
        if fail:
            raise RuntimeError("notifier config broken")
        return 7

    assert await writer.call(transition, "hashprice_low", False) == 7
    with pytest.raises(RuntimeError, match="notifier config broken"):
        await writer.call(transition, "tip_stale", True)
    await writer.close()
    with Store.open(path, readonly=True) as s:
        assert s.query("SELECT rule FROM alert_state") == [{"rule": "hashprice_low"}]
        assert s.query("SELECT key FROM outbox") == [{"key": "hashprice_low:firing:slack"}]
    assert all(name.startswith("hashwatch-writer") for name in threads)
    assert len(threads) == 2


async def test_an_unstorable_event_does_not_take_its_batch_down(path: Path) -> None:
    writer = Writer(path)
    await writer.write([tick(1, MINUTE), replace(block(100), bits=0), *chain(101, 102)])
    await writer.close()
    assert counts(path) == (1, 2)
    assert writer.dropped == 1


async def test_writer_prunes_with_retention_and_injected_clock(path: Path) -> None:
    now = [MINUTE + 10.0]
    writer = Writer(
        path, retention_s=3600, prune_interval_s=0, clock=lambda: now[0], batch_max_delay_s=0.02
    )
    bus = Bus()
    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    await writer.open()
    bus.publish(tick(1, MINUTE))
    await writer.flush()
    assert counts(path)[0] == 1
    now[0] = MINUTE + 7200.0
    bus.publish(tick(2, MINUTE + 7199))
    await wait_for(lambda: counts(path)[0] == 1 and writer.batches >= 2)
    sub.close()
    await asyncio.wait_for(task, 2)
    await writer.close()
    with Store.open(path, readonly=True) as s:
        assert [t.price_usd for t in s.latest_prices()] == [2]
        assert len(s.candles("coinbase")) == 2  # candles are kept


async def test_bad_database_file_fails_early(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"definitely not sqlite" * 10)
    writer = Writer(path)
    with pytest.raises(StoreError, match="not SQLite"):
        await writer.open()
    await writer.close()


async def test_writer_far_behind_keeps_up_without_coalescing_in_bounded_transactions(
    path: Path,
) -> None:
    """A backlog of many full batches is written (each its own transaction of <= 1,000
    events) without the subscription ever reaching its bound."""
    bus = Bus()
    writer = Writer(path)
    sizes: list[int] = []
    original = Store.write_events

    def spy(self: Store, events):  # type: ignore[no-untyped-def]
        events = list(events)
        sizes.append(len(events))
        return original(self, events)

    sub = bus.subscribe(maxsize=20_000, name="writer")
    task = asyncio.create_task(writer.run(sub))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "write_events", spy)
        for i in range(15_000):
            bus.publish(tick(70_000 + i % 7, MINUTE + i * 0.001))
        await writer.flush()
        await wait_for(lambda: sum(sizes) == 15_000)
    sub.close()
    await asyncio.wait_for(task, 2)
    await writer.close()
    assert sub.coalesced == 0
    assert max(sizes) <= 1000
    assert counts(path) == (15_000, 0)


async def test_close_interrupts_an_idle_run_loop_promptly(path: Path) -> None:
    bus = Bus()
    writer = Writer(path)
    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    bus.publish(tick(1.0, MINUTE))
    await writer.flush()
    await asyncio.sleep(0.01)  # the loop now waits up to IDLE_WAKE_S for more
    started = time.monotonic()
    await writer.close()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - started < 0.5
    assert counts(path) == (1, 0)


async def test_trickle_is_flushed_within_the_batch_delay(path: Path) -> None:
    """Events arriving steadily (the writer collects each next batch until its deadline
    without waking for its first event): none waits much longer than batch_max_delay_s."""
    delay = 0.03
    bus = Bus()
    writer = Writer(path, batch_max_delay_s=delay)
    published: dict[float, float] = {}
    latencies: list[float] = []
    original = Store.write_events

    def spy(self: Store, events):  # type: ignore[no-untyped-def]
        events = list(events)
        now = time.monotonic()
        latencies.extend(now - published[e.time] for e in events if e.time in published)
        return original(self, events)

    sub = bus.subscribe(name="writer")
    task = asyncio.create_task(writer.run(sub))
    await writer.flush()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "write_events", spy)
        for i in range(60):
            t = MINUTE + i
            published[t] = time.monotonic()
            bus.publish(tick(1.0 + i, t))
            await asyncio.sleep(0.004)
        await wait_for(lambda: len(latencies) == 60)
    sub.close()
    await asyncio.wait_for(task, 2)
    await writer.close()
    assert counts(path) == (60, 0)
    # Generous slack for a loaded machine; before the flush the events waited ~delay.
    assert max(latencies) < delay + 0.1, max(latencies)
    assert writer.batches < 30  # batched, not one write per event
