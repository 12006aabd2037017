"""The single store writer: drains a bus subscription into batched SQLite transactions.

One dedicated thread (a one-worker executor) owns the only write connection, so writes
never contend inside the process and the event loop never blocks on disk. Batches are
flushed at least every 250 ms or every 1,000 events, whichever comes first. Writes are
idempotent (natural keys, see ``feeds.store``), so replaying a batch is harmless: a batch
that meets "database is locked" (another process, e.g. ``hashwatch import``, holds the
write lock longer than the busy timeout) is retried with backoff, never dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from feeds.bus import Subscription
from feeds.errors import StoreError
from feeds.events import Event
from feeds.store import DEFAULT_BUSY_TIMEOUT_S, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MAX_EVENTS = 1000
BATCH_MAX_DELAY_S = 0.25
PRUNE_INTERVAL_S = 300.0
CLOSE_TIMEOUT_S = 2.0
IDLE_WAKE_S = 5.0
#: Full batches handed to the writer thread in one call when the writer is behind.
MAX_BATCHES_PER_CALL = 32


#: Longest GIL switch interval while a writer runs (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.001


def _shorten_switch_interval() -> None:
    """Every SQLite call of the writer thread releases the GIL and must take it back from
    the event loop, which, busy with a flood of frames, keeps it for the whole switch
    interval: at the default 5 ms a 1,000-event batch (a handful of such calls) took ~50 ms,
    the writer fell behind and price ticks were coalesced (bench/ingest). 1 ms lets it keep
    up. The setting is process-wide and only matters while two threads want the GIL; it
    is never raised, only lowered."""
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def default_retry_delays() -> Iterator[float]:
    """10 ms doubling to 1 s, then 1 s forever."""
    return itertools.chain((0.01 * 2**i for i in range(7)), itertools.repeat(1.0))


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Writer:
    """Owns the store's write connection on its own thread.

    ``retention_s``: when set, the writer prunes raw price ticks older than that every
    ``prune_interval_s`` (and at start); when ``None`` pruning is left to the caller
    (``Writer.call(lambda s: s.prune(now, retention))``).
    """

    def __init__(
        self,
        store_path: str | Path,
        *,
        retention_s: float | None = None,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        retry_delays: Callable[[], Iterator[float]] = default_retry_delays,
        batch_max_events: int = BATCH_MAX_EVENTS,
        batch_max_delay_s: float = BATCH_MAX_DELAY_S,
    ) -> None:
        self.path = Path(store_path)
        self.retention_s = retention_s
        self.prune_interval_s = prune_interval_s
        self.clock = clock
        self.busy_timeout_s = busy_timeout_s
        self.retry_delays = retry_delays
        self.batch_max_events = batch_max_events
        self.batch_max_delay_s = batch_max_delay_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hashwatch-writer"
        )
        self._store: Store | None = None  # touched only on the writer thread (and close)
        self._sub: Subscription | None = None
        # Events taken off the subscription but not yet handed to the thread.
        self._buf: list[Event] = []
        self._stop = asyncio.Event()
        self._run_done: asyncio.Event | None = None
        self._closing = False
        self._closed = False
        self._last_prune = -float("inf")
        # Counters for logs, tests and bench/.
        self.events_written = 0
        self.batches = 0
        self.lock_retries = 0
        self.dropped = 0

    # ------------------------------------------------------------ thread side

    def _ensure_store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.path, busy_timeout_s=self.busy_timeout_s)
        return self._store

    def _retrying(self, what: str, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` (one transaction), retrying on lock errors. While closing,
        gives up after ``CLOSE_TIMEOUT_S`` so shutdown stays bounded."""
        store = self._ensure_store()
        delays = self.retry_delays()
        started = time.monotonic()
        while True:
            try:
                return fn(store)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                if self._closing and time.monotonic() - started > CLOSE_TIMEOUT_S:
                    raise
                self.lock_retries += 1
                delay = next(delays)
                log.warning(
                    "store %s is locked during %s; retrying in %.2f s", self.path, what, delay
                )
                time.sleep(delay)

    def _write_batch(self, batch: Sequence[Event]) -> None:
        try:
            self._retrying("write", lambda s: s.write_events(batch))
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                self.dropped += len(batch)
                log.error(
                    "store %s stayed locked at shutdown: %s events not written",
                    self.path,
                    len(batch),
                )
                return
            self._write_one_by_one(batch, exc)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self._write_one_by_one(batch, exc)
        else:
            self.events_written += len(batch)
        self.batches += 1
        self._maybe_prune()

    def _write_batches(self, batches: Sequence[Sequence[Event]]) -> None:
        for batch in batches:
            self._write_batch(batch)

    def _write_one_by_one(self, batch: Sequence[Event], exc: BaseException) -> None:
        """A batch failed for a reason other than a lock: isolate the bad event(s) so one
        malformed event cannot take its neighbours (or the writer) down with it."""
        log.warning(
            "store write of %s events failed (%s); writing them one by one", len(batch), exc
        )
        for event in batch:
            try:
                self._retrying("write", lambda s, e=event: s.write_events((e,)))
                self.events_written += 1
            except (sqlite3.Error, ValueError, TypeError) as one_exc:
                self.dropped += 1
                log.error("store: dropped unstorable %s event: %s", event.kind, one_exc)

    def _prune_due(self) -> bool:
        return (
            self.retention_s is not None
            and time.monotonic() - self._last_prune >= self.prune_interval_s
        )

    def _maybe_prune(self, force: bool = False) -> None:
        if self.retention_s is None or not (force or self._prune_due()):
            return
        self._last_prune = time.monotonic()
        now = self.clock()
        retention = self.retention_s
        try:
            self._retrying("prune", lambda s: s.prune(now, retention))
        except sqlite3.Error as exc:
            log.warning("store: prune failed (%s); will retry later", exc)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        def in_transaction(store: Store) -> T:
            with store.transaction():
                return fn(store, *args)

        return self._retrying("call", in_transaction)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # ------------------------------------------------------------ loop side

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"the writer for {self.path} is closed")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        # Shielded: cancelling the awaiting task must not un-queue a batch that is already
        # off the bus; the single worker runs it anyway, in order.
        return await asyncio.shield(future)

    async def open(self) -> Store:
        """Open (create, migrate) the store now, so a bad file fails early and clearly."""
        return await self._submit(self._ensure_store)

    @property
    def store(self) -> Store | None:
        """The open store, for reads from other threads (each gets its own connection)."""
        return self._store

    async def _write(self, batch: list[Event]) -> None:
        """Write ``batch`` in transactions of at most ``batch_max_events`` (a flush or close
        after a backlog may hand over more than one batch's worth)."""
        if len(batch) > self.batch_max_events:
            n = self.batch_max_events
            batches = [batch[i : i + n] for i in range(0, len(batch), n)]
            await self._submit(self._write_batches, batches)
        elif batch:
            await self._submit(self._write_batch, batch)

    def _take_pending(self) -> list[Event]:
        batch, self._buf = self._buf, []
        if self._sub is not None:
            batch.extend(self._sub.get_nowait())
        return batch

    async def _wait_batch(
        self, sub: Subscription, limit: int, wait_s: float, min_events: int | None = None
    ) -> list[Event]:
        """``sub.get_batch``; ``close()`` interrupts it with ``sub.wake()``. One await, no
        tasks: a cancellation can only arrive while nothing has been taken off the bus.

        With a batch already started, nothing is due before its deadline unless the batch
        fills up: sleep through single price ticks (``min_events``) instead of waking for
        each (most of an idle collector's event-loop wake-ups)."""
        if min_events is None:
            min_events = limit if self._buf else 1
        return await sub.get_batch(limit=limit, timeout=wait_s, min_events=min_events)

    async def run(self, subscription: Subscription) -> None:
        """Write everything the subscription delivers until it is closed, ``close()`` is
        called, or the task is cancelled (then ``close()`` writes what was left)."""
        self._sub = subscription
        self._run_done = asyncio.Event()
        _shorten_switch_interval()
        loop = asyncio.get_running_loop()
        try:
            await self.open()
            if self.retention_s is not None:
                await self._submit(self._maybe_prune, True)
            deadline = 0.0
            # Set after a flush by deadline (events trickle in steadily): the next batch is
            # collected until then without a wake-up for its first event. Anything that came
            # after that flush started has waited at most batch_max_delay_s by then.
            stream_until: float | None = None
            while not self._stop.is_set():
                room = self.batch_max_events - len(self._buf)
                if stream_until is not None and not self._buf:
                    wait_s = max(0.0, stream_until - loop.time())
                    got = await self._wait_batch(subscription, room, wait_s, min_events=room)
                    stream_until = None  # nothing came: back to waiting for the first event
                    if got:
                        self._buf.extend(got)
                        deadline = loop.time()  # they have waited their time: due now
                else:
                    if subscription.pending():
                        got = subscription.get_nowait(room)  # busy: no waiting, no tasks
                    else:
                        # Idle: nothing to flush, so wake rarely (close() and new events
                        # wake us).
                        wait_s = IDLE_WAKE_S if not self._buf else max(0.0, deadline - loop.time())
                        got = await self._wait_batch(subscription, room, wait_s)
                    if got:
                        if not self._buf:
                            deadline = loop.time() + self.batch_max_delay_s
                        self._buf.extend(got)
                ended = subscription.closed and not subscription.pending()
                if self._buf and (
                    len(self._buf) >= self.batch_max_events or loop.time() >= deadline or ended
                ):
                    if len(self._buf) < self.batch_max_events and not ended:
                        stream_until = loop.time() + self.batch_max_delay_s
                    batches, self._buf = [self._buf], []
                    # Behind by more full batches: hand them over in the same thread call
                    # (each still its own transaction of <= batch_max_events). The run loop
                    # gets a turn only when the feeds let the event loop breathe; one batch
                    # per turn fell behind a flood of frames and price ticks were coalesced.
                    while (
                        len(batches) < MAX_BATCHES_PER_CALL
                        and subscription.pending() >= self.batch_max_events
                    ):
                        batches.append(subscription.get_nowait(self.batch_max_events))
                    await self._submit(self._write_batches, batches)
                elif not self._buf and self._prune_due():
                    await self._submit(self._maybe_prune)
                if ended and not self._buf:
                    break
            await self._write(self._take_pending())
        finally:
            self._run_done.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on the writer thread inside one transaction (for the
        alerts layer: a state transition and its outbox rows commit together)."""
        return await self._submit(self._call, fn, args)

    async def write(self, events: Iterable[Event]) -> None:
        """Write events directly (no bus), in order with everything queued before."""
        await self._write(list(events))

    async def flush(self) -> None:
        """Return once everything taken from the bus so far is committed."""
        await self._write(self._take_pending())
        # Waits for any batch the run loop has in flight (the executor is FIFO).
        await self._submit(lambda: None)

    async def close(self) -> None:
        """Stop ``run``, write what is pending and close the store, within ~2 s."""
        if self._closed:
            return
        self._stop.set()
        if self._sub is not None:
            self._sub.wake()  # the run loop may be waiting for events: let it see _stop
        if self._run_done is not None and not self._run_done.is_set():
            try:
                await asyncio.wait_for(self._run_done.wait(), CLOSE_TIMEOUT_S / 2)
            except TimeoutError:
                log.warning("writer: run loop did not stop in time; closing anyway")
        self._closing = True
        try:
            await self._write(self._take_pending())
            await self._submit(self._close_store)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
        log.info(
            "writer closed: %s events in %s batches, %s lock retries, %s dropped",
            self.events_written,
            self.batches,
            self.lock_retries,
            self.dropped,
        )
