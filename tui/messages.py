"""Textual messages that mirror bus events (posted by ``tui/bridge.py``).

High-rate messages (price ticks, metric snapshots, feed status, backfill progress) implement
``can_replace``: when the App is behind, Textual collapses a backlog to the newest value per
key. Blocks, daily points and alert transitions are never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from feeds.events import (
    AlertTransition,
    BackfillProgress,
    Block,
    DailyPoint,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)


class PriceUpdated(Message):
    def __init__(self, tick: PriceTick) -> None:
        super().__init__()
        self.tick = tick

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PriceUpdated) and message.tick.source == self.tick.source


class MetricsUpdated(Message):
    def __init__(self, snapshot: MetricsSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MetricsUpdated)


class FeedStatusChanged(Message):
    def __init__(self, status: FeedStatus) -> None:
        super().__init__()
        self.status = status

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, FeedStatusChanged) and message.status.source == self.status.source
        )


class BackfillUpdated(Message):
    def __init__(self, progress: BackfillProgress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, BackfillUpdated) and message.progress.what == self.progress.what


class BlockArrived(Message):
    def __init__(self, block: Block) -> None:
        super().__init__()
        self.block = block


class DailyPointArrived(Message):
    def __init__(self, point: DailyPoint) -> None:
        super().__init__()
        self.point = point


class AlertChanged(Message):
    def __init__(self, transition: AlertTransition) -> None:
        super().__init__()
        self.transition = transition


@dataclass(frozen=True)
class BlockRow:
    """One row of the blocks table, from the store or from a live ``Block``."""

    height: int
    hash: str
    time: int
    first_seen: float
    tx_count: int | None = None
    fees_sats: int | None = None
    reward_sats: int | None = None
    pool: str | None = None


@dataclass(frozen=True)
class AlertRow:
    """An alert as the panel shows it: live transitions and ``alert_state`` rows alike."""

    rule: str
    severity: str
    state: str
    since: float
    message: str = ""
    value: float | None = None
    threshold: float | None = None
    silenced_until: float | None = None


@dataclass(frozen=True)
class History:
    """What the history views read from SQLite (one thread-worker read)."""

    at: float
    #: (minute epoch seconds, reference close) of the last 24 h, oldest first
    price_points: tuple[tuple[int, float], ...] = ()
    price_24h_ago: float | None = None
    daily_hashrate: tuple[tuple[int, float], ...] = ()
    blocks: tuple[BlockRow, ...] = ()
    alerts_active: tuple[AlertRow, ...] = ()
    alert_history: tuple[AlertRow, ...] = ()
    #: metric name -> value at ~24 h and ~7 d ago (for revenue change and its drivers)
    past_24h: dict[str, float | None] = field(default_factory=dict)
    past_7d: dict[str, float | None] = field(default_factory=dict)


class HistoryLoaded(Message):
    """Result of a history read; only the newest matters."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HistoryLoaded)
