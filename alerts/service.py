"""The alert service: snapshots in, transitions out, durably.

It subscribes to :class:`MetricsSnapshot` (and :class:`OperatorAction`) on the bus, evaluates
each rule on every update of its metric and at least every ``eval_interval_s`` (the slow tick
for elapsed-time rules: "no block for 90 minutes"), and for every evaluation that changed
something writes, in **one transaction** on the store's writer thread:

* the rule's ``alert_state`` row (so a restart neither re-fires nor forgets an incident),
* the transition in ``alert_history`` (reminders are outbox-only),
* its ``outbox`` rows (``alerts.outbox.enqueue``) when the transition is to be delivered.

Only after the commit is the transition published on the bus (the UI shows what is stored)
and the in-memory state advanced: a failed commit leaves the old state, so the next
evaluation produces the transition again instead of losing it.

Operator actions (``hashwatch silence|unsilence``, ``reload``, ``test_alert``) are rows in
``operator_actions``, polled every ``action_poll_s``; each is marked ``done_at``/``result``
in the same transaction as its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alerts import engine
from alerts.engine import RuleState
from alerts.rules import Rule, compile_rules, is_stale
from alerts.windows import WindowSet, minute_of
from feeds.bus import Bus
from feeds.errors import ConfigError, HashwatchError
from feeds.events import AlertState, AlertTransition, Event, MetricsSnapshot, OperatorAction

log = logging.getLogger(__name__)

EVAL_INTERVAL_S = 30.0
ACTION_POLL_S = 2.0

_STATE_COLUMNS = (
    "rule",
    "state",
    "since",
    "active_at",
    "fired_at",
    "resolved_at",
    "last_value",
    "last_eval_at",
    "last_sent_at",
    "silenced_until",
    "fingerprint",
    "keep_firing_since",
)


@dataclass(frozen=True, slots=True)
class _Change:
    rule: Rule
    state: RuleState
    transition: AlertTransition | None
    notify: bool
    context: dict[str, Any]


def _enqueue_fn() -> Callable[..., int] | None:
    """``alerts.outbox.enqueue`` (the delivery module), or None when it is not there."""
    try:
        from alerts.outbox import enqueue
    except ImportError:  # pragma: no cover - the outbox ships with hashwatch
        return None
    return enqueue


# ---------------------------------------------------------------- writer-thread functions
# These run as ``fn(store, ...)`` inside ``Writer.call``'s transaction.


def _columns(conn: Any, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def load_states(store: Any) -> dict[str, RuleState]:
    conn = store.db.conn
    cur = conn.execute("SELECT * FROM alert_state")
    names = [d[0] for d in cur.description]
    return {row[0]: RuleState.from_row(dict(zip(names, row, strict=True))) for row in cur}


def _load_series(
    store: Any, wanted: Sequence[tuple[str, float]], since_for: Mapping[str, float]
) -> dict[str, list[tuple[float, float]]]:
    from alerts.windows import read_series

    conn = store.db.conn
    return {m: read_series(conn, m, since_for[m]) for m in {m for m, _ in wanted}}


def _persist(store: Any, changes: Sequence[_Change], targets: Sequence[Any]) -> int:
    """State rows, history rows and outbox rows for a batch of changes: one transaction."""
    conn = store.db.conn
    have = _columns(conn, "alert_state")
    cols = [c for c in _STATE_COLUMNS if c in have]
    sql = (
        f"INSERT OR REPLACE INTO alert_state ({', '.join(cols)}) "
        f"VALUES ({', '.join('?' for _ in cols)})"
    )
    enqueue = _enqueue_fn()
    queued = 0
    for ch in changes:
        row = ch.state.to_row(ch.rule.name)
        conn.execute(sql, [row[c] for c in cols])
        tr = ch.transition
        if tr is None:
            continue
        if not tr.reminder:
            conn.execute(
                "INSERT INTO alert_history (rule, severity, previous, state, at, value, "
                "threshold, message, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tr.rule,
                    tr.severity,
                    str(tr.previous),
                    str(tr.state),
                    tr.at,
                    tr.value,
                    tr.threshold,
                    tr.message,
                    tr.fired_at,
                ),
            )
        if ch.notify and targets:
            if enqueue is None:
                # SEAM: without alerts/outbox.py the transition is stored but not delivered.
                log.warning("alerts: no outbox module; %s %s not queued", tr.rule, tr.state)
            else:
                queued += enqueue(store.db, tr, ch.context, targets)
    return queued


def _pending_actions(store: Any) -> list[tuple[int, str, dict[str, Any]]]:
    from alerts.actions import pending_actions

    return pending_actions(store.db.conn)


def _finish_action(
    store: Any,
    action_id: int | None,
    result: str,
    now: float,
    changes: Sequence[_Change],
    targets: Sequence[Any],
    test_rows: Sequence[tuple[str, str, str, str, str]] = (),
) -> None:
    _persist(store, changes, targets)
    conn = store.db.conn
    for key, label, severity, title, body in test_rows:
        # As alerts.outbox does: next_attempt_at NULL means due at once.
        conn.execute(
            "INSERT OR IGNORE INTO outbox (key, target, created_at, severity, title, body, "
            "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
            (key, label, now, severity, title, body),
        )
    if action_id is not None:
        conn.execute(
            "UPDATE operator_actions SET done_at = ?, result = ? WHERE id = ?",
            (now, result, action_id),
        )


# ---------------------------------------------------------------- the service


class AlertService:
    """Evaluates rules against live snapshots; see the module docstring.

    ``store``: a ``feeds.writer.Writer`` (anything with ``async call(fn, *args)``), or a
    database path (the service then runs a writer of its own and closes it on exit).
    ``rule_loader``: called for the ``reload`` operator action; returns the new rule set
    (``RuleConfig``s or compiled ``Rule``s) or raises ``ConfigError``.
    ``sender``: the outbox sender, woken after rows were committed (optional).
    """

    def __init__(
        self,
        rules: Sequence[Any],
        store: Any,
        bus: Bus,
        notify_targets: Sequence[Any] = (),
        *,
        clock: Callable[[], float] = time.time,
        eval_interval_s: float = EVAL_INTERVAL_S,
        action_poll_s: float = ACTION_POLL_S,
        rule_loader: Callable[[], Sequence[Any]] | None = None,
        sender: Any = None,
    ) -> None:
        self.rules: list[Rule] = _compile(rules)
        if isinstance(store, str | Path):
            from feeds.writer import Writer

            self._writer: Any = Writer(store)
            self._own_writer = True
        else:
            self._writer = store
            self._own_writer = False
        self.bus = bus
        self.targets = tuple(notify_targets)
        self.clock = clock
        self.eval_interval_s = min(eval_interval_s, EVAL_INTERVAL_S)
        self.action_poll_s = action_poll_s
        self.rule_loader = rule_loader
        self.sender = sender
        self.states: dict[str, RuleState] = {}
        self.windows = WindowSet(self.rules)
        self._stored_states: dict[str, RuleState] = {}
        self._backfill_due: list[tuple[str, float]] = list(self.windows.keys)
        self._latest: MetricsSnapshot | None = None
        self._started = False
        #: counters for status and tests
        self.evaluations = 0
        self.transitions = 0
        self.commit_failures = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load persisted state and backfill the windows (idempotent)."""
        if self._started:
            return
        stored = await self._writer.call(load_states)
        self._stored_states = stored
        for r in self.rules:
            self.states[r.name] = stored.get(r.name, RuleState())
        await self._backfill()
        self._started = True
        log.info("alerts: %s rules loaded, %s with stored state", len(self.rules), len(stored))

    async def run(self) -> None:
        """Evaluate until cancelled."""
        await self.start()
        sub = self.bus.subscribe(
            (MetricsSnapshot, OperatorAction), maxsize=64, name="alerts", replay_latest=True
        )
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.eval_interval_s
        next_poll = loop.time()
        try:
            while True:
                now_m = loop.time()
                if now_m >= next_poll:
                    await self._guard(self.poll_actions())
                    next_poll = now_m + self.action_poll_s
                if now_m >= next_tick:
                    await self._guard(self.tick())
                    next_tick = now_m + self.eval_interval_s
                timeout = max(0.0, min(next_tick, next_poll) - loop.time())
                for event in await sub.get_batch(limit=256, timeout=timeout):
                    await self._guard(self.handle(event))
        finally:
            sub.close()
            if self._own_writer:
                with contextlib.suppress(Exception):
                    await self._writer.close()

    async def _guard(self, coro: Any) -> None:
        """One failing evaluation or action must not stop the service."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except (HashwatchError, OSError, ValueError, RuntimeError) as exc:
            log.error("alerts: %s", exc)
        except Exception:  # the store's sqlite3 errors and anything unexpected: keep running
            log.exception("alerts: unexpected error")

    # ------------------------------------------------------------ events

    async def handle(self, event: Event) -> None:
        if isinstance(event, MetricsSnapshot):
            await self.on_snapshot(event)
        elif isinstance(event, OperatorAction):
            await self.apply_action(None, event.action, dict(event.args))

    async def on_snapshot(self, snap: MetricsSnapshot) -> list[AlertTransition]:
        """New values: feed the windows, evaluate every rule whose metric it carries."""
        self._latest = snap
        self.windows.push_values(snap.at, snap.values)
        due = [r for r in self.rules if r.metric in snap.values]
        return await self.evaluate(due)

    async def tick(self) -> list[AlertTransition]:
        """The slow tick: every rule, with the latest values (ages advanced to now)."""
        if self._backfill_due:
            await self._backfill()
        return await self.evaluate(self.rules)

    def _value(self, metric: str, now: float) -> float | None:
        snap = self._latest
        if snap is None:
            return None
        v = snap.values.get(metric)
        if v is not None and (metric.endswith("_age_s") or metric.startswith("feed_age_s.")):
            # An age keeps growing between snapshots: "no block for 90 minutes" must fire
            # even if snapshots stopped (that is when it matters most).
            v = float(v) + max(0.0, now - snap.at)
        return v

    def _context(self, rule: Rule) -> dict[str, Any]:
        ctx: dict[str, Any] = dict(self._latest.values) if self._latest else {}
        ctx["metric"] = rule.metric
        ctx["condition"] = rule.kind
        return ctx

    async def evaluate(self, rules: Sequence[Rule]) -> list[AlertTransition]:
        """Evaluate ``rules`` now; persist and publish what changed. Returns the transitions."""
        if not self._started:
            await self.start()
        now = self.clock()
        snap = self._latest
        stale_set = snap.stale if snap is not None else frozenset()
        changes: list[_Change] = []
        for rule in rules:
            state = self.states.get(rule.name, RuleState())
            value = self._value(rule.metric, now)
            window = self.windows.stats(rule, now)
            ctx = self._context(rule)
            res = engine.evaluate(
                rule,
                state,
                value,
                window,
                now,
                stale=is_stale(rule.metric, stale_set),
                context=ctx,
            )
            self.evaluations += 1
            if res.transition is not None or res.state.durable() != state.durable():
                changes.append(_Change(rule, res.state, res.transition, res.notify, ctx))
            else:
                self.states[rule.name] = res.state  # last reading only: not worth a write
        if changes:
            await self._commit(changes)
        return [c.transition for c in changes if c.transition is not None]

    async def _commit(self, changes: Sequence[_Change]) -> None:
        try:
            queued = await self._writer.call(_persist, list(changes), self.targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Keep the old states: the next evaluation makes these transitions again.
            self.commit_failures += 1
            log.error("alerts: could not store %s change(s), will retry: %s", len(changes), exc)
            return
        self._after_commit(changes, queued)

    def _after_commit(self, changes: Sequence[_Change], queued: int) -> None:
        for ch in changes:
            self.states[ch.rule.name] = ch.state
            tr = ch.transition
            if tr is None:
                continue
            self.transitions += 1
            self.bus.publish(tr)
            level = (
                logging.INFO
                if tr.state in (AlertState.FIRING, AlertState.RESOLVED)
                else logging.DEBUG
            )
            log.log(level, "alert %s: %s -> %s (%s)", tr.rule, tr.previous, tr.state, tr.message)
        if queued and self.sender is not None:
            self.sender.wake()

    # ------------------------------------------------------------ windows

    async def _backfill(self) -> None:
        keys, self._backfill_due = self._backfill_due, []
        if not keys:
            return
        now = self.clock()
        since = {}
        for m, span in keys:
            since[m] = min(since.get(m, now), minute_of(now) - span - 60.0)
        series = await self._writer.call(_load_series, keys, since)
        for m, span in keys:
            # Start the window afresh: history first, then the live value (a window added by
            # a reload may already hold live values, which would hide older history).
            self.windows.reset(m, span)
            for minute, value in series.get(m, ()):
                if minute >= minute_of(now) - span - 60.0:
                    self.windows.push_one(m, span, minute, value)
            if self._latest is not None:
                self.windows.push_one(m, span, self._latest.at, self._latest.values.get(m))

    # ------------------------------------------------------------ reload

    def reload(self, new_rules: Sequence[Any]) -> tuple[bool, str]:
        """Swap in a new rule set, keeping the state of rules with the same name.

        An invalid set (duplicate names, impossible thresholds) keeps the old rules running;
        the reason is logged and returned. Safe to call from a signal handler on the loop.
        """
        try:
            rules = _compile(new_rules)
        except (ConfigError, TypeError, ValueError) as exc:
            log.error("alerts: new rules are invalid, keeping the old ones: %s", exc)
            return False, f"invalid rules, kept the old ones: {exc}"
        old = {r.name for r in self.rules}
        self.rules = rules
        for r in rules:
            if r.name not in self.states:
                self.states[r.name] = self._stored_states.get(r.name, RuleState())
        self._backfill_due.extend(self.windows.configure(rules))
        added = len({r.name for r in rules} - old)
        removed = len(old - {r.name for r in rules})
        msg = f"reloaded {len(rules)} rules ({added} added, {removed} removed)"
        log.info("alerts: %s", msg)
        return True, msg

    # ------------------------------------------------------------ operator actions

    async def poll_actions(self) -> int:
        """Apply the pending rows of ``operator_actions``; returns how many were applied."""
        pending = await self._read_actions()
        for action_id, action, args in pending:
            await self.apply_action(action_id, action, args)
        return len(pending)

    async def _read_actions(self) -> list[tuple[int, str, dict[str, Any]]]:
        store = getattr(self._writer, "store", None)
        if store is not None and hasattr(store, "query"):
            # A plain read on a read connection (in a thread): no write lock every 2 s.
            rows = await asyncio.to_thread(
                store.query,
                "SELECT id, action, args FROM operator_actions WHERE done_at IS NULL ORDER BY id",
            )
            return [(int(r["id"]), str(r["action"]), _json_args(r["args"])) for r in rows]
        return await self._writer.call(_pending_actions)

    async def apply_action(
        self, action_id: int | None, action: str, args: Mapping[str, Any]
    ) -> str:
        """Apply one operator action; records ``done_at``/``result`` for table rows."""
        now = self.clock()
        changes: list[_Change] = []
        test_rows: list[tuple[str, str, str, str, str]] = []
        rule_name = str(args.get("rule") or "")
        if action in ("silence", "unsilence"):
            rule = next((r for r in self.rules if r.name == rule_name), None)
            if rule is None:
                result = f"error: unknown rule {rule_name!r}"
            else:
                state = self.states.get(rule.name, RuleState())
                if action == "silence":
                    seconds = _seconds(args)
                    if seconds is None or seconds <= 0:
                        result = "error: silence needs a positive duration (seconds)"
                    else:
                        until = now + seconds
                        state = replace(state, silenced_until=until)
                        result = f"silenced {rule.name} until {until:.0f}"
                else:
                    state = replace(state, silenced_until=None)
                    result = f"unsilenced {rule.name}"
                if not result.startswith("error"):
                    changes.append(_Change(rule, state, None, False, {}))
        elif action == "reload":
            if self.rule_loader is None:
                result = "error: reload is not available here (send SIGHUP to the collector)"
            else:
                try:
                    new = self.rule_loader()
                except ConfigError as exc:
                    new, result = None, f"error: invalid config, kept the old rules: {exc}"
                if new is not None:
                    ok, result = self.reload(new)
                    if not ok:
                        result = "error: " + result
        elif action == "test_alert":
            test_rows, result = _test_rows(self.targets, args.get("target"), action_id, now)
        else:
            result = f"error: unknown action {action!r}"
        try:
            await self._writer.call(
                _finish_action, action_id, result, now, changes, self.targets, test_rows
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("alerts: operator action %s failed to store: %s", action, exc)
            return f"error: {exc}"
        self._after_commit(changes, len(test_rows))
        log.info("alerts: operator action %s %s: %s", action, dict(args), result)
        return result

    # ------------------------------------------------------------ introspection

    def snapshot_states(self) -> dict[str, RuleState]:
        return dict(self.states)


def _compile(rules: Sequence[Any]) -> list[Rule]:
    if all(isinstance(r, Rule) for r in rules):
        names = [r.name for r in rules]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"rule name(s) used twice: {', '.join(sorted(dupes))}")
        return list(rules)
    return compile_rules(rules)


def _json_args(text: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _seconds(args: Mapping[str, Any]) -> float | None:
    for key in ("seconds", "duration_s", "for_s"):
        if args.get(key) is not None:
            try:
                return float(args[key])
            except (TypeError, ValueError):
                return None
    if isinstance(args.get("duration"), str):
        from feeds.settings import parse_duration

        try:
            return float(parse_duration(args["duration"], key="duration"))
        except ConfigError:
            return None
    return None


def _test_rows(
    targets: Sequence[Any], target_name: Any, action_id: int | None, now: float
) -> tuple[list[tuple[str, str, str, str, str]], str]:
    """Outbox rows for a test message (delivered like any alert, so it proves the path)."""
    if not targets:
        return [], "error: no notify targets configured"
    from alerts.messages import format_test
    from alerts.outbox import message_key, select_targets

    try:
        chosen = select_targets(targets, str(target_name) if target_name else None)
    except HashwatchError as exc:
        return [], f"error: {exc}"
    rows = []
    stamp = action_id if action_id is not None else round(now, 3)
    for label, _target in chosen:
        title, body = format_test(label, now)
        rows.append((message_key("test", stamp, label), label, "info", title, body))
    return rows, f"test message queued for {len(rows)} target(s)"
