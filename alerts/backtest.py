"""Replay stored history through the rules: when would each have fired and resolved?

One step per closed minute of ``metric_samples`` (the store's 1-minute samples) and one per
stored block, at the moment it arrived (``blocks.first_seen``), with the same
:func:`alerts.engine.evaluate` the live service runs and the same window semantics as
:mod:`alerts.windows`. Nothing is sent and nothing is written.

What each rule sees at a step:

* rules on the block-driven metrics (``tip_age_s``, ``tip_height``, ``tip_time``; not window
  rules) read them from the active blocks, not from the samples: at a block's arrival the tip
  height/time jump and ``tip_age_s`` is 0, and ``tip_age_s`` then grows with the clock until
  the next tip. These values are known at every instant, so such a rule changes state exactly
  where it would live: at a block, at the instant the age crosses a threshold ("no block for
  90 minutes" fires at ``first_seen + 5400``, not at the next minute) and at the instant a
  timer (``for``, ``keep_firing_for``, ``repeat``, resolved retention) comes due. A database
  with blocks but no samples (``hashwatch import blocks``) is replayed the same way; one with
  no blocks at all falls back to the stored samples of these metrics.
* every other rule reads its metric's latest minute sample (window rules: the window over
  the samples). A block changes none of those inputs, so at a block step only a due timer
  can move such a rule; block steps count only inside minutes that have a sample (a minute
  without one is a gap in the history: the collector was not running).

Speed (a year is 525,600 minutes and ~60,000 blocks x a dozen rules): each rule makes one
pass over its series to compute its measure and classify every step as no-data /
firing-condition / in-between (hysteresis) / cleared. The engine then runs only where that
class changes or a timer comes due - which is exactly equivalent to evaluating at every
step, because between those points the engine's inputs and clock-driven decisions do not
change.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as dt
import math
import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.engine import RuleState, evaluate, next_deadline
from alerts.rules import WINDOW_GRACE_S, Rule, fmt_duration
from alerts.windows import minute_of, read_series
from feeds.events import AlertState

# Minute classes (see module docstring).
_NODATA, _FIRES, _HOLD, _CLEARS = 0, 1, 2, 3

#: Metrics a block moves, read from the blocks themselves (DOMAIN.md: the newest block;
#: ``tip_age_s`` counts from when it was first seen).
BLOCK_METRICS: frozenset[str] = frozenset({"tip_age_s", "tip_height", "tip_time"})

#: Where a due timer is evaluated: ``(deadline, current step, next class change time)`` ->
#: ``(index of the step whose inputs hold, time, value, measure)``, or None when the next
#: class change comes first.
_TimerStep = Callable[[float, int, float], "tuple[int, float, float | None, float | None] | None"]


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
    """A sqlite3 connection from a Store, a sqlite-utils Database or a connection."""
    if isinstance(store, sqlite3.Connection):
        return store
    reader = getattr(store, "reader", None)
    if callable(reader):
        return reader()
    for attr in ("conn", "connection", "_conn"):
        c = getattr(store, attr, None)
        if isinstance(c, sqlite3.Connection):
            return c
    db = getattr(store, "db", None)
    if db is not None:
        return _connection(db)
    raise TypeError(f"cannot read metric samples from {type(store).__name__}")


@contextlib.contextmanager
def _opened(store: Any) -> Iterator[Any]:
    """``store`` itself, or for a database path one read-only connection closed after use."""
    if not isinstance(store, str | Path):
        yield store
        return
    conn = sqlite3.connect(f"{Path(store).resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class BlockHistory:
    """The active blocks as they arrived over a replay.

    ``tips``: ``(first_seen, height, header time)`` each time the tip moved up, in arrival
    order; the first is the tip already held at the start of the replay, if any.
    ``arrivals``: every block's ``first_seen`` inside the replay, ascending (a block that
    fills a gap below the tip arrives without moving it).
    """

    tips: list[tuple[float, int, int]]
    arrivals: list[float]


def block_history(conn: sqlite3.Connection, start: float, end: float) -> BlockHistory | None:
    """The active blocks seen before ``end``, as of ``start`` onward; None when the database
    holds no block seen by then (no blocks table, or none stored yet)."""
    try:
        before = conn.execute(
            "SELECT first_seen, height, time FROM blocks WHERE orphaned = 0 AND first_seen < ? "
            "ORDER BY height DESC LIMIT 1",
            (start,),
        ).fetchone()
        rows = conn.execute(
            "SELECT first_seen, height, time FROM blocks WHERE orphaned = 0 "
            "AND first_seen >= ? AND first_seen < ? ORDER BY first_seen, height",
            (start, end),
        ).fetchall()
    except sqlite3.OperationalError:
        return None  # not a hashwatch database with blocks: the samples are all there is
    if before is None and not rows:
        return None
    tips: list[tuple[float, int, int]] = []
    top = -1
    if before is not None:
        tips.append((float(before[0]), int(before[1]), int(before[2])))
        top = int(before[1])
    for seen, height, htime in rows:
        # The tip is the highest block seen so far (feeds.chain.latest_seen); a block
        # below it (a gap fill, an out-of-order header time) does not move it.
        if height > top:
            tips.append((float(seen), int(height), int(htime)))
            top = height
    return BlockHistory(tips, [float(r[0]) for r in rows])


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


def _event(rule: Rule, tr: Any, value: float | None, x: float | None) -> BacktestEvent:
    return BacktestEvent(
        rule=tr.rule,
        severity=tr.severity,
        previous=tr.previous,
        state=tr.state,
        at=tr.at,
        value=tr.value,
        threshold=tr.threshold,
        message=rule.render_message(value, None, x=x),
        fired_at=tr.fired_at,
        reminder=tr.reminder,
    )


def _replay(
    rule: Rule,
    times: Sequence[float],
    values: Sequence[float | None],
    xs: Sequence[float | None],
    first: int,
    include_states: Collection[AlertState] | None,
    timer_step: _TimerStep,
) -> list[BacktestEvent]:
    """The event-driven walk over steps ``first..``: evaluate where the class changes, and
    where ``timer_step`` places a timer that comes due before the next class change."""
    n = len(times)
    if first >= n:
        return []
    cls = _classes(rule, xs)
    # Indices where the class changes: the only steps where the inputs differ.
    changes = [i for i in range(first + 1, n) if cls[i] != cls[i - 1]]
    changes.append(n)
    events: list[BacktestEvent] = []
    state = RuleState()
    i, ci = first, 0
    t, v, x = times[i], values[i], xs[i]
    while True:
        result = evaluate(rule, state, v, None, t, measure=x, render=False)
        state = result.state
        tr = result.transition
        if tr is not None and (include_states is None or tr.state in include_states):
            events.append(_event(rule, tr, v, x if rule.needs_window else v))
        while changes[ci] <= i:
            ci += 1
        nxt = changes[ci]
        if tr is not None:
            nxt = min(nxt, i + 1)  # let the state settle (e.g. resolved -> pending)
        deadline = next_deadline(rule, state)
        if deadline is not None and deadline <= t and state.keep_firing_since is not None:
            # keep_firing_for ran out while no data holds the incident: it can act only once
            # data returns (a class change), but a reminder still comes due meanwhile.
            deadline = next_deadline(rule, dataclasses.replace(state, keep_firing_since=None))
        if deadline is not None:
            if deadline > t:
                step = timer_step(deadline, i, times[nxt] if nxt < n else math.inf)
                if step is not None:
                    i, t, v, x = step
                    continue
            else:
                nxt = min(nxt, i + 1)  # overdue (no data holds it): look again next step
        if nxt >= n:
            return events
        i = nxt
        t, v, x = times[i], values[i], xs[i]


def backtest_rule(
    rule: Rule,
    times: Sequence[float],
    values: Sequence[float],
    start: float,
    include_states: Collection[AlertState] | None = None,
    blocks: Sequence[float] = (),
) -> list[BacktestEvent]:
    """Replay one rule over its metric's 1-minute series; events only for steps ``>= start``.

    Minutes before ``start`` are warm-up for the window, not evaluated. ``blocks`` (block
    arrival times, ascending) are steps too, inside minutes that have a sample: there the
    inputs are that minute's, so only a timer coming due can act.
    """
    n = len(times)
    first = bisect.bisect_left(times, start)
    if first >= n:
        return []
    xs = _measures(rule, times, values)
    nb = len(blocks)

    def timer_step(
        deadline: float, i: int, limit: float
    ) -> tuple[int, float, float | None, float | None] | None:
        j = bisect.bisect_left(times, deadline, i + 1)  # the first minute step due
        tj = times[j] if j < n else math.inf
        if nb:
            k = bisect.bisect_left(blocks, deadline)
            if k < nb and blocks[k] < tj and blocks[k] < limit:
                b = blocks[k]
                # Every block up to tj has the same latest sample: if the first is in a
                # minute without one, they all are.
                p = bisect.bisect_right(times, b, i) - 1
                if b < times[p] + 60.0:
                    return p, b, values[p], xs[p]
        if tj < limit:
            return j, tj, values[j], xs[j]
        return None

    return _replay(rule, times, values, xs, first, include_states, timer_step)


def _thresholds(rule: Rule) -> list[float]:
    """The values where the rule's class can change (fire and clear thresholds)."""
    if rule.kind == "band":
        edges = {float(rule.above), float(rule.below)}  # type: ignore[arg-type]
    else:
        _, fire_at, _, clear_at = rule.comparisons()
        edges = {float(fire_at), float(clear_at)}
    return sorted(edges)  # ascending: the crossings of a rising age come in this order


def backtest_block_rule(
    rule: Rule,
    tips: Sequence[tuple[float, int, int]],
    start: float,
    end: float,
    include_states: Collection[AlertState] | None = None,
) -> list[BacktestEvent]:
    """Replay a rule on ``tip_age_s``/``tip_height``/``tip_time`` (not a window rule) over
    ``[start, end)`` from the tip changes ``(first_seen, height, header time)``.

    The metric is known at every instant (a constant per tip, or the age growing from the
    tip's arrival), so the steps are the tip changes, the instants ``tip_age_s`` crosses a
    threshold, and the instants a timer comes due - exactly, not at the next minute. At a
    crossing the rule reads the value just past it: ``above = 5400`` fires at
    ``first_seen + 5400``, the first instant of "more than 5400 s", and reports 5400.
    """
    if rule.needs_window:
        raise ValueError(f"rule {rule.name}: window rules read the minute samples")
    age = rule.metric == "tip_age_s"
    thresholds = _thresholds(rule) if age else []
    at_threshold = set(thresholds)

    def just_past(x: float) -> float:
        return math.nextafter(x, math.inf) if x in at_threshold else x

    times: list[float] = []
    values: list[float | None] = []
    xs: list[float | None] = []
    arrived: list[float] = []  # per step: the first_seen of the tip it belongs to
    for k, (seen, height, htime) in enumerate(tips):
        lo = max(seen, start)
        hi = min(tips[k + 1][0], end) if k + 1 < len(tips) else end
        if lo >= hi:
            continue  # superseded before the replay starts (or at the same instant)
        if age:
            x0 = max(0.0, lo - seen)
            times.append(lo)
            values.append(x0)
            xs.append(just_past(x0))
            arrived.append(seen)
            for c in thresholds:
                if c > x0 and seen + c < hi:
                    times.append(seen + c)
                    values.append(c)
                    xs.append(math.nextafter(c, math.inf))
                    arrived.append(seen)
        else:
            v = float(height if rule.metric == "tip_height" else htime)
            times.append(lo)
            values.append(v)
            xs.append(v)
            arrived.append(seen)

    def timer_step(
        deadline: float, i: int, limit: float
    ) -> tuple[int, float, float | None, float | None] | None:
        if deadline >= limit or deadline >= end:
            return None
        p = bisect.bisect_right(times, deadline, i) - 1
        if not age:
            return p, deadline, values[p], xs[p]
        x = max(0.0, deadline - arrived[p])
        return p, deadline, x, just_past(x)

    return _replay(rule, times, values, xs, 0, include_states, timer_step)


def backtest(
    store: Any,
    rules: Iterable[Rule],
    since_s: float,
    *,
    now: float,
    include_states: Iterable[AlertState] = (AlertState.FIRING, AlertState.RESOLVED),
) -> list[BacktestEvent]:
    """Replay the last ``since_s`` seconds of stored history through ``rules``.

    ``store`` is a ``feeds.store.Store``, a sqlite-utils ``Database``, a sqlite3 connection or
    a database path. Only closed minutes (ending at or before ``now``) are replayed, and the
    blocks that arrived in them. Returns the transitions into ``include_states``
    (pending/no-data/inactive are noise in a report), ordered by time.
    """
    start = minute_of(now - since_s)
    last_closed = minute_of(now) - 60.0
    end = last_closed + 60.0
    keep = set(include_states)
    rules = list(rules)
    with _opened(store) as src:
        try:
            chain = block_history(_connection(src), start, end)
        except TypeError:
            chain = None  # a samples-only source (metric_series)
        on_blocks = [
            chain is not None and r.metric in BLOCK_METRICS and not r.needs_window for r in rules
        ]
        # Each sampled metric is read once, reaching back far enough for its longest window.
        warmups: dict[str, float] = {}
        for rule, blocky in zip(rules, on_blocks, strict=True):
            if blocky:
                continue
            w = float(rule.window_s or 0.0) + WINDOW_GRACE_S if rule.needs_window else 0.0
            warmups[rule.metric] = max(warmups.get(rule.metric, 0.0), w)
        series: dict[str, tuple[list[float], list[float]]] = {}
        for metric, warmup in warmups.items():
            rows = _series(src, metric, start - warmup, last_closed)
            series[metric] = ([r[0] for r in rows], [r[1] for r in rows])
    arrivals = chain.arrivals if chain is not None else []
    events: list[BacktestEvent] = []
    for rule, blocky in zip(rules, on_blocks, strict=True):
        if blocky:
            assert chain is not None
            events.extend(backtest_block_rule(rule, chain.tips, start, end, keep))
            continue
        times, values = series[rule.metric]
        if rule.needs_window:
            # Only as much warm-up as this rule's window needs: the same samples as live.
            lo = bisect.bisect_left(times, start - float(rule.window_s or 0.0) - WINDOW_GRACE_S)
        else:
            lo = bisect.bisect_left(times, start)
        times, values = times[lo:], values[lo:]
        events.extend(backtest_rule(rule, times, values, start, keep, arrivals))
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
