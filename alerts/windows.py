"""Rolling windows over 1-minute metric samples, kept current from live snapshots.

The store keeps one sample per metric per minute (``metric_samples``: the last value of that
minute). A :class:`MetricWindow` mirrors exactly that in memory: closed minutes in a deque, the
still-open minute apart (its value changes with every snapshot), plus a monotonic deque so
the window's maximum costs amortised O(1) per sample. Keeping the open minute outside the
monotonic deque is what keeps it O(1): overwriting the newest entry in place would lose the
smaller values it had evicted.

Window semantics (shared by the live service and the backtest): at time ``now`` in minute
``m``, the window holds the minutes ``>= m - window``; it is *full* once its oldest sample
is within ``WINDOW_GRACE_S`` of that boundary. A gap at the old end (collector was down)
therefore reads "no data" rather than a shorter window in disguise.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import deque
from collections.abc import Iterable

from alerts.rules import WINDOW_GRACE_S, Rule, WindowStats

log = logging.getLogger(__name__)


def minute_of(t: float) -> float:
    return math.floor(t / 60.0) * 60.0


class MetricWindow:
    """The last ``span_s`` seconds of one metric's 1-minute samples."""

    __slots__ = ("_mono", "_samples", "cur_minute", "cur_value", "span_s")

    def __init__(self, span_s: float) -> None:
        self.span_s = float(span_s)
        self._samples: deque[tuple[float, float]] = deque()  # closed minutes, oldest first
        self._mono: deque[tuple[float, float]] = deque()  # decreasing values: max at [0]
        self.cur_minute: float | None = None
        self.cur_value: float | None = None

    def __len__(self) -> int:
        return len(self._samples) + (self.cur_minute is not None)

    def push(self, t: float, value: float | None) -> None:
        """Record ``value`` observed at ``t``: the newest value of a minute wins."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        m = minute_of(t)
        if self.cur_minute is not None:
            if m < self.cur_minute:
                return  # older than what we hold: history arrives before live data
            if m > self.cur_minute:
                self._close()
        self.cur_minute, self.cur_value = m, float(value)

    def _close(self) -> None:
        m, v = self.cur_minute, self.cur_value
        assert m is not None and v is not None
        self._samples.append((m, v))
        mono = self._mono
        while mono and mono[-1][1] <= v:
            mono.pop()
        mono.append((m, v))

    def _evict(self, cutoff: float) -> None:
        s, mono = self._samples, self._mono
        while s and s[0][0] < cutoff:
            s.popleft()
        while mono and mono[0][0] < cutoff:
            mono.popleft()

    def stats(self, now: float) -> WindowStats:
        """Full/max/first over the window ending at ``now`` (evicts what fell out)."""
        cutoff = minute_of(now) - self.span_s
        self._evict(cutoff)
        cur_in = self.cur_minute is not None and self.cur_minute >= cutoff
        if self._samples:
            oldest, first = self._samples[0]
        elif cur_in:
            oldest, first = self.cur_minute, self.cur_value  # type: ignore[assignment]
        else:
            return WindowStats(False, None, None)
        peak = self._mono[0][1] if self._mono else None
        if cur_in and (peak is None or self.cur_value > peak):  # type: ignore[operator]
            peak = self.cur_value
        full = oldest <= cutoff + WINDOW_GRACE_S
        return WindowStats(full, peak, first)


class WindowSet:
    """One :class:`MetricWindow` per (metric, window length) the rules need."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._windows: dict[tuple[str, float], MetricWindow] = {}
        self.configure(rules)

    def configure(self, rules: Iterable[Rule]) -> list[tuple[str, float]]:
        """Keep the windows still needed, add new ones; returns the keys that need backfill."""
        wanted = {(r.metric, float(r.window_s)) for r in rules if r.needs_window and r.window_s}
        self._windows = {k: w for k, w in self._windows.items() if k in wanted}
        added = [k for k in sorted(wanted) if k not in self._windows]
        for k in added:
            self._windows[k] = MetricWindow(k[1])
        return added

    @property
    def keys(self) -> list[tuple[str, float]]:
        return list(self._windows)

    def metrics(self) -> set[str]:
        return {m for m, _ in self._windows}

    def push(self, metric: str, t: float, value: float | None) -> None:
        for (m, _), w in self._windows.items():
            if m == metric:
                w.push(t, value)

    def reset(self, metric: str, span: float) -> None:
        key = (metric, float(span))
        if key in self._windows:
            self._windows[key] = MetricWindow(span)

    def push_one(self, metric: str, span: float, t: float, value: float | None) -> None:
        w = self._windows.get((metric, float(span)))
        if w is not None:
            w.push(t, value)

    def push_values(self, t: float, values: dict[str, float | None]) -> None:
        for (m, _), w in self._windows.items():
            if m in values:
                w.push(t, values[m])

    def stats(self, rule: Rule, now: float) -> WindowStats | None:
        if not rule.needs_window or rule.window_s is None:
            return None
        w = self._windows.get((rule.metric, float(rule.window_s)))
        return w.stats(now) if w is not None else None

    def backfill(
        self, conn: sqlite3.Connection, now: float, keys: Iterable[tuple[str, float]] | None = None
    ) -> int:
        """Load the stored samples each window needs; returns how many were read."""
        n = 0
        for key in list(keys) if keys is not None else list(self._windows):
            metric, span = key
            w = self._windows.get(key)
            if w is None:
                continue
            since = minute_of(now) - span - 60.0
            for minute, value in read_series(conn, metric, since, now):
                w.push(minute, value)
                n += 1
        log.debug("alert windows backfilled with %s samples", n)
        return n


def read_series(
    conn: sqlite3.Connection, metric: str, since: float, until: float | None = None
) -> list[tuple[float, float]]:
    """Stored 1-minute samples of ``metric`` with ``since <= minute (<= until)``, oldest first."""
    if until is None:
        rows = conn.execute(
            "SELECT minute, value FROM metric_samples WHERE name = ? AND minute >= ? "
            "AND value IS NOT NULL ORDER BY minute",
            (metric, since),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT minute, value FROM metric_samples WHERE name = ? AND minute >= ? "
            "AND minute <= ? AND value IS NOT NULL ORDER BY minute",
            (metric, since, until),
        ).fetchall()
    return [(float(m), v) for m, v in rows]
