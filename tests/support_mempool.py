"""Test helpers for the mempool.space sources: a tiny block store fed from the bus."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from feeds.bus import Bus, Subscription
from feeds.events import Block, Event

FIXTURES = Path(__file__).parent / "fixtures" / "mempool"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def ms_delays() -> Iterator[float]:
    """Millisecond reconnect/retry backoff for tests."""
    return itertools.repeat(0.005)


class BlockStore:
    """What the real store does with blocks, reduced to what these tests assert: key by hash;
    a different hash at a stored height orphans that block and every block above it."""

    def __init__(self, bus: Bus) -> None:
        self.sub: Subscription = bus.subscribe(maxsize=1_000_000, name="test-store")
        self.by_hash: dict[str, Block] = {}
        self._active: dict[int, str] = {}
        self.orphaned: set[str] = set()
        self.events: list[Event] = []
        self.block_events: list[Block] = []

    @property
    def active(self) -> dict[int, str]:
        """height -> hash of the non-orphaned chain, after applying everything published."""
        self.drain()
        return self._active

    def drain(self) -> list[Event]:
        new = self.sub.get_nowait()
        for ev in new:
            self.events.append(ev)
            if isinstance(ev, Block):
                self.block_events.append(ev)
                self._insert(ev)
        return new

    def _insert(self, b: Block) -> None:
        if b.hash in self.by_hash and b.hash not in self.orphaned:
            return
        active = self._active
        held = active.get(b.height)
        if held is not None and held != b.hash:
            for h in [h for h in active if h >= b.height]:
                self.orphaned.add(active.pop(h))
        self.by_hash[b.hash] = b
        self.orphaned.discard(b.hash)
        active[b.height] = b.hash

    def forget(self, height: int) -> None:
        """Punch a hole (as if that row had never been written)."""
        self.by_hash.pop(self.active.pop(height))

    def tip(self) -> int | None:
        active = self.active
        return max(active) if active else None

    def missing_heights(self, lo: int, hi: int) -> list[int]:
        active = self.active
        return [h for h in range(lo, hi + 1) if h not in active]

    def close(self) -> None:
        self.sub.close()


async def wait_until(pred: Callable[[], bool], within_s: float = 3.0) -> None:
    """Poll ``pred`` every few ms (the thing awaited runs on the same loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)
