"""In-process publish/subscribe with bounded, coalescing subscriber queues.

``publish`` is synchronous and never blocks the producer (a feed adapter must not stall
because the UI is slow). Each subscription has a soft bound: once it holds ``maxsize``
pending events, further *coalescable* events (price ticks, metric snapshots, feed status:
see ``events.COALESCABLE``) replace the pending one with the same key instead of growing
the queue. Everything else (blocks, alert transitions, operator actions) is always queued:
those are rare and must never be dropped.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import AsyncIterator, Iterable
from typing import Any

from feeds.events import COALESCABLE, Event

_KEY_ATTR = COALESCABLE.get
_popleft = collections.deque.popleft


class Subscription:
    """One consumer's view of the bus. Iterate it, or drain it in batches."""

    def __init__(
        self, bus: Bus, kinds: tuple[type[Event], ...] | None, maxsize: int, name: str
    ) -> None:
        self._bus = bus
        self.kinds = kinds
        self.maxsize = maxsize
        self.name = name
        self._queue: collections.deque[Event] = collections.deque()
        # Overflow for coalescable events once the queue is at its bound: newest per key.
        self._overflow: dict[tuple[type[Event], object], Event] = {}
        # Set by ``_put`` only while a ``get_batch`` waits (``_waiting``): publishing to a
        # consumer that is busy or has events pending anyway costs no call at all.
        self._waiter: asyncio.Event = asyncio.Event()
        self._waiting = 0
        self._wake_at = 1  # the waiting get_batch's min_events
        self.coalesced = 0
        self.closed = False

    def wants(self, event: Event) -> bool:
        return self.kinds is None or isinstance(event, self.kinds)

    def _put(self, event: Event) -> None:
        queue = self._queue
        if len(queue) < self.maxsize:
            queue.append(event)
        else:
            key_attr = COALESCABLE.get(type(event))
            if key_attr is None:
                queue.append(event)  # never dropped, bound or not
            else:
                key = (type(event), getattr(event, key_attr))
                if key in self._overflow:
                    self.coalesced += 1
                self._overflow[key] = event
        if self._waiting and (
            len(queue) + len(self._overflow) >= self._wake_at or type(event) not in COALESCABLE
        ):
            self._waiter.set()

    def pending(self) -> int:
        return len(self._queue) + len(self._overflow)

    def get_nowait(self, limit: int | None = None) -> list[Event]:
        """Everything pending (up to ``limit``), oldest first, without waiting."""
        q = self._queue
        if limit is None or limit >= len(q):
            out = list(q)
            q.clear()
        else:
            # popleft driven from C (~15 ns an event instead of ~50 for a comprehension):
            # the writer takes 1,000 at a time from a backlog on the event-loop thread.
            out = list(map(_popleft, itertools.repeat(q, limit)))
        if self._overflow and (limit is None or len(out) < limit):
            out.extend(self._overflow.values())
            self._overflow.clear()
        if not q and not self._overflow:
            self._waiter.clear()
        return out

    async def get_batch(
        self,
        limit: int = 1000,
        timeout: float | None = None,  # noqa: ASYNC109 - the API every subscriber calls
        *,
        min_events: int = 1,
    ) -> list[Event]:
        """Wait until at least ``min_events`` are pending, or any event that is not
        coalescable (a block, an alert ...) is, or ``timeout`` passes; then drain up to
        ``limit`` (on timeout: whatever is pending, possibly nothing).

        ``min_events`` > 1 lets a consumer that only needs to act every so often (the
        writer's batch deadline, the metrics' snapshot spacing) sleep through a stream of
        price ticks instead of waking for each one."""
        if self._should_wait(min_events):
            if self.closed:
                return self.get_nowait(limit)
            self._waiter.clear()  # only a later _put (or wake, or close) may set it
            self._wake_at = max(1, min_events)
            self._waiting += 1
            try:
                if timeout is None:
                    await self._waiter.wait()
                else:
                    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                    # arrives as the event is set, and a loop around get_batch then never
                    # stops (the collector hung on SIGTERM). asyncio.timeout does not.
                    async with asyncio.timeout(timeout):
                        await self._waiter.wait()
            except TimeoutError:
                pass
            finally:
                self._waiting -= 1
                self._wake_at = 1
        return self.get_nowait(limit)

    def _should_wait(self, min_events: int) -> bool:
        n = self.pending()
        if n == 0:
            return True
        if n >= min_events:
            return False
        # Fewer than asked for: an urgent (non-coalescable) one among them is reason enough.
        return all(type(e) in COALESCABLE for e in self._queue)

    def wake(self) -> None:
        """Make a waiting ``get_batch`` return now (with nothing, if nothing is pending): how
        a consumer's own ``close()`` interrupts its read without a second task."""
        self._waiter.set()

    async def get(self) -> Event:
        while True:
            batch = await self.get_batch(limit=1)
            if batch:
                return batch[0]
            if self.closed:
                raise StopAsyncIteration

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            batch = await self.get_batch(limit=256)
            if not batch and self.closed:
                return
            for event in batch:
                yield event

    def close(self) -> None:
        self.closed = True
        self._waiter.set()
        self._bus._unsubscribe(self)


class Bus:
    """Fan-out of events to subscriptions; also remembers the latest event per coalescing key
    so a late subscriber (the UI opening) can start from current values."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        # (subscription, kinds, queue) per subscription: what ``publish`` needs, unpacked
        # once instead of three attribute lookups per event and subscriber.
        self._routes: list[tuple[Subscription, tuple[type[Event], ...] | None, Any]] = []
        self._latest: dict[tuple[type[Event], object], Event] = {}
        self.published = 0

    def subscribe(
        self,
        kinds: Iterable[type[Event]] | None = None,
        *,
        maxsize: int = 10_000,
        name: str = "",
        replay_latest: bool = False,
    ) -> Subscription:
        sub = Subscription(self, tuple(kinds) if kinds is not None else None, maxsize, name)
        self._subs.append(sub)
        self._routes.append((sub, sub.kinds, sub._queue))
        if replay_latest:
            for event in self._latest.values():
                if sub.wants(event):
                    sub._put(event)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes = [r for r in self._routes if r[0] is not sub]

    def publish(self, event: Event) -> None:
        self.published += 1
        cls = type(event)
        key_attr = _KEY_ATTR(cls)
        if key_attr is not None:
            self._latest[cls, getattr(event, key_attr)] = event
        for sub, kinds, queue in self._routes:
            # ``sub.wants`` and ``sub._put``'s common case inlined: this runs for every event
            if kinds is None or isinstance(event, kinds):
                if len(queue) < sub.maxsize and not sub._waiting:
                    queue.append(event)
                else:
                    sub._put(event)

    def latest(self, kind: type[Event]) -> list[Event]:
        return [e for (t, _), e in self._latest.items() if t is kind]

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
