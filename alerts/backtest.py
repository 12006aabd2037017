"""Replay stored history through the rules: when would each have fired and resolved?

One evaluation per closed minute of ``metric_samples`` (the store's 1-minute samples), with the
same :func:`alerts.engine.evaluate` the live service runs and the same window semantics as
:mod:`alerts.windows`. Nothing is sent and nothing is written.

Speed (a year is 525,600 minutes x a dozen rules): each rule makes one pass over its metric's
series to compute its measure and classify every minute as no-data / firing-condition /
in-between (hysteresis) / cleared. The engine then runs only where that class changes or a
timer (``for``, ``keep_firing_for``, ``repeat``, resolved retention) comes due - which is
exactly equivalent to stepping every minute, because between those points the engine's
inputs and clock-driven decisions do not change.
"""

from __future__ import annotations

import bisect
import datetime as dt
import sqlite3
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.engine import RuleState, evaluate, next_deadline
from alerts.rules import WINDOW_GRACE_S, Rule, fmt_duration
from alerts.windows import minute_of, read_series
from feeds.events import AlertState

# Minute classes (see module docstring).
_NODATA, _FIRES, _HOLD, _CLEARS = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class BacktestEvent:
    """One transition the rule would have made (reminders included)."""

    rule: str
    severity: str
    previous: AlertState
    state: AlertState
    at: float
    value: float | None
    threshold: float | None
    message: str
    fired_at: float | None = None
    reminder: bool = False

    @property
    def duration_s(self) -> float | None:
        """For RESOLVED: how long the incident lasted."""
        if self.state is AlertState.RESOLVED and self.fired_at is not None:
            return self.at - self.fired_at
        return None


def _series(store: Any, metric: str, since: float, until: float) -> list[tuple[float, float]]:
    """Stored samples of ``metric`` in ``[since, until]`` from whatever ``store`` is."""
    reader = getattr(store, "reader", None)
    if callable(reader):
        # feeds.store.Store (read-only ones too): its per-thread read connection, straight
        # to tuples (metric_series has no upper bound and builds a list we would copy).
        return read_series(reader(), metric, since, until)
    if hasattr(store, "metric_series"):
        return [
            (float(m), float(v))
            for m, v in store.metric_series(metric, since)
            if m <= until and v is not None
        ]
    return read_series(_connection(store), metric, since, until)


def _connection(store: Any) -> sqlite3.Connection:
    """A sqlite3 connection from a Store, a sqlite-utils Database, a connection or a path."""
    if isinstance(store, sqlite3.Connection):
        return store
    if isinstance(store, str | Path):
        return sqlite3.connect(store)
    for attr in ("conn", "connection", "_conn"):
        c = getattr(store, attr, None)
        if isinstance(c, sqlite3.Connection):
            return c
    db = getattr(store, "db", None)
    if db is not None:
        return _connection(db)
    raise TypeError(f"cannot read metric samples from {type(store).__name__}")


def _measures(rule: Rule, times: Sequence[float], values: Sequence[float]) -> list[float | None]:
    """The rule's measure at every minute (window rules: one O(n) pass).

    The percent arithmetic is ``rules.drop_pct_of``/``change_pct_of`` inlined (same
    expressions, so bit-identical results): a function call per minute per rule is a large
    share of a year's replay.
    """
    if not rule.needs_window:
        return list(values)
    span = float(rule.window_s or 0.0)
    grace = WINDOW_GRACE_S
    out: list[float | None] = []
    append = out.append
    lo = 0  # index of the oldest sample inside the window
    if rule.kind == "change_pct":
        for t, v in zip(times, values, strict=True):
            cutoff = t - span
            while times[lo] < cutoff:
                lo += 1
            if times[lo] > cutoff + grace:
                append(None)  # not full yet, or a gap at the old end
                continue
            first = values[lo]
            append((v - first) / abs(first) * 100.0 if first != 0 else None)
        return out
    # drop_pct: monotonic deque of (time, value), values decreasing: the max is at [0].
    mono: deque[tuple[float, float]] = deque()
    for t, v in zip(times, values, strict=True):
        cutoff = t - span
        while mono and mono[-1][1] <= v:
            mono.pop()
        mono.append((t, v))
        while times[lo] < cutoff:
            lo += 1
        if times[lo] > cutoff + grace:
            append(None)
            continue
        while mono[0][0] < cutoff:
            mono.popleft()
        peak = mono[0][1]
        append((peak - v) / peak * 100.0 if peak > 0 else None)
    return out


def _classes(rule: Rule, xs: Sequence[float | None]) -> list[int]:
    """Classify every minute with the rule's own comparisons (``Rule.comparisons``)."""
    nd, fi, cl, ho = _NODATA, _FIRES, _CLEARS, _HOLD
    if rule.kind == "band":
        a, b = rule.above, rule.below
        return [nd if x is None else fi if (x > a or x < b) else cl for x in xs]  # type: ignore[operator]
    fop, fat, cop, cat = rule.comparisons()
    return [nd if x is None else fi if fop(x, fat) else cl if cop(x, cat) else ho for x in xs]


def backtest_rule(
    rule: Rule,
    times: Sequence[float],
    values: Sequence[float],
    start: float,
    include_states: Collection[AlertState] | None = None,
) -> list[BacktestEvent]:
    """Replay one rule over its metric's series; events only for minutes ``>= start``.

    Minutes before ``start`` are warm-up for the window, not evaluated.
    """
    n = len(times)
    first = bisect.bisect_left(times, start)
    if first >= n:
        return []
    xs = _measures(rule, times, values)
    cls = _classes(rule, xs)
    # Indices where the class changes: the only minutes where the inputs differ.
    changes = [i for i in range(first + 1, n) if cls[i] != cls[i - 1]]
    changes.append(n)
    events: list[BacktestEvent] = []
    state = RuleState()
    i, ci = first, 0
    while i < n:
        t = times[i]
        result = evaluate(rule, state, values[i], None, t, measure=xs[i], render=False)
        state = result.state
        tr = result.transition
        if tr is not None and (include_states is None or tr.state in include_states):
            events.append(
                BacktestEvent(
                    rule=tr.rule,
                    severity=tr.severity,
                    previous=tr.previous,
                    state=tr.state,
                    at=tr.at,
                    value=tr.value,
                    threshold=tr.threshold,
                    message=rule.render_message(values[i], None, x=xs[i]),
                    fired_at=tr.fired_at,
                    reminder=tr.reminder,
                )
            )
        while changes[ci] <= i:
            ci += 1
        nxt = changes[ci]
        deadline = next_deadline(rule, state)
        if deadline is not None:
            nxt = min(nxt, max(i + 1, bisect.bisect_left(times, deadline, i + 1)))
        if tr is not None:
            nxt = min(nxt, i + 1)  # let the state settle (e.g. resolved -> pending)
        i = nxt
    return events


def backtest(
    store: Any,
    rules: Iterable[Rule],
    since_s: float,
    *,
    now: float,
    include_states: Iterable[AlertState] = (AlertState.FIRING, AlertState.RESOLVED),
) -> list[BacktestEvent]:
    """Replay the last ``since_s`` seconds of stored samples through ``rules``.

    ``store`` is a ``feeds.store.Store``, a sqlite-utils ``Database``, a sqlite3 connection or
    a database path. Only closed minutes (ending at or before ``now``) are replayed. Returns
    the transitions into ``include_states`` (pending/no-data/inactive are noise in a report),
    ordered by time.
    """
    start = minute_of(now - since_s)
    last_closed = minute_of(now) - 60.0
    keep = set(include_states)
    rules = list(rules)
    # Each metric is read once, reaching back far enough for its longest window.
    warmups: dict[str, float] = {}
    for rule in rules:
        w = float(rule.window_s or 0.0) + WINDOW_GRACE_S if rule.needs_window else 0.0
        warmups[rule.metric] = max(warmups.get(rule.metric, 0.0), w)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for metric, warmup in warmups.items():
        rows = _series(store, metric, start - warmup, last_closed)
        series[metric] = ([r[0] for r in rows], [r[1] for r in rows])
    events: list[BacktestEvent] = []
    for rule in rules:
        times, values = series[rule.metric]
        if rule.needs_window:
            # Only as much warm-up as this rule's window needs: the same samples as live.
            lo = bisect.bisect_left(times, start - float(rule.window_s or 0.0) - WINDOW_GRACE_S)
        else:
            lo = bisect.bisect_left(times, start)
        times, values = times[lo:], values[lo:]
        events.extend(backtest_rule(rule, times, values, start, keep))
    events.sort(key=lambda e: (e.at, e.rule))
    return events


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def render_backtest(events: Sequence[BacktestEvent]) -> str:
    """A plain-text table for ``hashwatch rules backtest``."""
    if not events:
        return "no rule would have fired in this period"
    lines = []
    for e in events:
        word = "REMINDER" if e.reminder else str(e.state).upper()
        extra = ""
        if e.duration_s is not None:
            extra = f" (lasted {fmt_duration(e.duration_s)})"
        lines.append(
            f"{_utc(e.at)} UTC  {word:<8} [{e.severity.upper()}] {e.rule}: {e.message}{extra}"
        )
    return "\n".join(lines)
