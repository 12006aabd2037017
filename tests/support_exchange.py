"""Shared helpers for the exchange/transport tests (not a conftest: owned by this area)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from feeds.bus import Bus, Subscription
from feeds.events import Event, FeedState, FeedStatus, PriceTick
from feeds.transport import WsAdapter, run_ws

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

E = TypeVar("E", bound=Event)


def fixture_lines(rel: str) -> list[str]:
    return [line for line in (FIXTURES / rel).read_text().splitlines() if line.strip()]


def fixture_objects(rel: str) -> list[Any]:
    return [json.loads(line) for line in fixture_lines(rel)]


def fast_delays() -> Iterator[float]:
    """Millisecond reconnect delays (websockets' own tests do the same)."""
    return itertools.repeat(0.005)


def fast(cls: type[WsAdapter], **attrs: Any) -> type[WsAdapter]:
    """A subclass with millisecond-scale keepalive timings for tests."""
    defaults = {"idle_ping_after_s": 0.1, "pong_timeout_s": 0.1}
    defaults.update(attrs)
    return type(f"Fast{cls.__name__}", (cls,), defaults)


class Collector:
    """Everything published on a bus, kept in order."""

    def __init__(self, bus: Bus) -> None:
        self.sub: Subscription = bus.subscribe(maxsize=1_000_000, name="test")
        self.events: list[Event] = []

    def drain(self) -> list[Event]:
        self.events.extend(self.sub.get_nowait())
        return self.events

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.drain() if isinstance(e, kind)]

    def states(self, source: str) -> list[FeedState]:
        return [s.state for s in self.of(FeedStatus) if s.source == source]

    def prices(self, source: str | None = None) -> list[PriceTick]:
        return [t for t in self.of(PriceTick) if source is None or t.source == source]

    async def wait_for(
        self, pred: Callable[[Collector], bool], limit_s: float = 5.0, what: str = ""
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not pred(self):
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or pred}: {self.drain()[-8:]}")
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(adapter: WsAdapter, bus: Bus, **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    """run_ws in a task for the duration of the block; cancelled (and awaited) afterwards."""
    kwargs.setdefault("reconnect_delays", fast_delays)
    task = asyncio.create_task(run_ws(adapter, bus, **kwargs))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
