"""The one long-lived worker between the bus and the App, plus the repaint coalescer.

``pump`` iterates a bus subscription and posts typed messages (never touches widgets).
``DisplayBuffer`` keeps the newest value per key between repaints; the App drains it from a
``set_interval`` at ``refresh_per_second``, so a 10 Hz price feed costs at most 4 repaints a
second, and pausing the display simply stops draining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from textual.message import Message

from feeds.bus import Bus
from feeds.events import (
    AlertTransition,
    BackfillProgress,
    Block,
    DailyPoint,
    Event,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)
from tui import messages as m

log = logging.getLogger(__name__)

KINDS: tuple[type[Event], ...] = (
    Block,
    PriceTick,
    FeedStatus,
    MetricsSnapshot,
    AlertTransition,
    BackfillProgress,
    DailyPoint,
)
#: a UI that is behind coalesces ticks/snapshots in the bus beyond this many pending events
SUBSCRIPTION_MAXSIZE = 512
#: blocks kept per flush: a backfill flood only ever shows its newest rows
MAX_PENDING_BLOCKS = 64


def to_message(event: Event) -> Message | None:
    """The Textual message mirroring a bus event (None for kinds the UI ignores)."""
    match event:
        case PriceTick():
            return m.PriceUpdated(event)
        case MetricsSnapshot():
            return m.MetricsUpdated(event)
        case FeedStatus():
            return m.FeedStatusChanged(event)
        case BackfillProgress():
            return m.BackfillUpdated(event)
        case Block():
            return m.BlockArrived(event)
        case DailyPoint():
            return m.DailyPointArrived(event)
        case AlertTransition():
            return m.AlertChanged(event)
    return None


async def pump(
    bus: Bus, post: Callable[[Message], object], *, every: Callable[[], float] | None = None
) -> None:
    """Forward bus events as messages until cancelled. Starts from the bus's latest values
    so a dashboard opened late shows current prices and metrics at once.

    With ``every`` (seconds, asked each round: the App's repaint interval), the pump wakes
    at most that often while events stream in: price ticks and snapshots wait in the
    subscription (coalesced per key beyond its bound) and go out together, so 20 ticks a
    second cost a few wake-ups of this worker and of the App instead of 20 of each (about
    0.4% of a core). The App would only show them at its next repaint anyway. A block or an
    alert transition still ends the wait at once; an idle bus costs no wake-ups."""
    sub = bus.subscribe(KINDS, maxsize=SUBSCRIPTION_MAXSIZE, name="tui", replay_latest=True)
    try:
        batch = await sub.get_batch(limit=SUBSCRIPTION_MAXSIZE)
        while True:
            for event in batch:
                msg = to_message(event)
                if msg is not None:
                    post(msg)
            if sub.closed:
                return
            batch = []
            if every is not None:
                batch = await sub.get_batch(
                    limit=SUBSCRIPTION_MAXSIZE, timeout=every(), min_events=SUBSCRIPTION_MAXSIZE
                )
            if not batch:  # nothing came meanwhile: sleep until something does
                batch = await sub.get_batch(limit=SUBSCRIPTION_MAXSIZE)
    finally:
        sub.close()


@dataclass
class Pending:
    """Everything that changed since the last repaint."""

    snapshot: MetricsSnapshot | None = None
    ticks: dict[str, PriceTick] = field(default_factory=dict)
    feeds: dict[str, FeedStatus] = field(default_factory=dict)
    backfill: dict[str, BackfillProgress] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    daily: list[DailyPoint] = field(default_factory=list)
    transitions: list[AlertTransition] = field(default_factory=list)
    history: m.History | None = None

    def empty(self) -> bool:
        return not (
            self.snapshot
            or self.ticks
            or self.feeds
            or self.backfill
            or self.blocks
            or self.daily
            or self.transitions
            or self.history
        )


class DisplayBuffer:
    """Latest-value store between messages and repaints (pure, no Textual)."""

    def __init__(self) -> None:
        self._p = Pending()
        self.blocks_seen = 0

    def note(self, event: Event | m.History) -> None:
        p = self._p
        match event:
            case MetricsSnapshot():
                p.snapshot = event
            case PriceTick():
                p.ticks[event.source] = event
            case FeedStatus():
                p.feeds[event.source] = event
            case BackfillProgress():
                p.backfill[event.what] = event
            case Block():
                self.blocks_seen += 1
                p.blocks.append(event)
                if len(p.blocks) > MAX_PENDING_BLOCKS:
                    # Drop the lowest height, not the earliest arrival: REST backfill comes
                    # newest-first, so its last blocks are the oldest (arrival order of
                    # the kept ones is preserved for reorg replacement in the panel).
                    p.blocks.remove(min(p.blocks, key=lambda b: b.height))
            case DailyPoint():
                p.daily.append(event)
            case AlertTransition():
                p.transitions.append(event)
            case m.History():
                p.history = event

    def drain(self) -> Pending:
        out, self._p = self._p, Pending()
        return out
