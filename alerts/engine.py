"""The alert state machine: pure, clock injected, one rule at a time.

``step(rule, state, value, window, now, stale=...)`` returns the rule's next state and the
transition it made (None when the state did not change). Nothing here does I/O: the service
persists and publishes, the backtest replays history through the very same function.

States (Prometheus-style, plus a visible "no data")::

    inactive --cond--> pending --held `for`--> firing --cleared (+keep_firing_for)--> resolved
        ^                 |                       |                                   |
        +---- not cond ---+        reminders every `repeat`                 15 min later,
                                                                            or cond again
    no data (window not full, metric None) from any state but firing.

Rules of thumb encoded here:

* no data never fires and never resolves a firing incident (it stays firing, unchanged);
* stale inputs neither fire nor resolve: the state is returned unchanged;
* a silence suppresses notifications only: the state machine runs as usual, and once the
  silence ends a still-firing incident that was never announced is announced;
* a RESOLVED is announced only when ``send_resolved`` and its FIRING was announced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alerts.rules import Rule, WindowArg
from feeds.events import AlertState, AlertTransition

_UNSET = object()

#: How long a resolved incident stays visible as RESOLVED before the rule reads inactive.
RESOLVED_RETENTION_S = 15 * 60.0


@dataclass(frozen=True, slots=True)
class RuleState:
    """One rule's persisted state (the ``alert_state`` table's columns)."""

    state: AlertState = AlertState.INACTIVE
    #: when the current state was entered
    since: float | None = None
    #: when the condition became true for the current pending/firing episode
    active_at: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_value: float | None = None
    last_eval_at: float | None = None
    #: the last notification actually queued (firing, reminder or resolved)
    last_sent_at: float | None = None
    silenced_until: float | None = None
    #: the rule definition this state was computed under (informational)
    fingerprint: str | None = None
    #: while firing: when the rule first read "cleared" (keep_firing_for counts from here)
    keep_firing_since: float | None = None

    def silenced(self, now: float) -> bool:
        return self.silenced_until is not None and now < self.silenced_until

    def durable(self) -> tuple[Any, ...]:
        """The fields whose change must be persisted (everything but the last reading)."""
        return (
            self.state,
            self.since,
            self.active_at,
            self.fired_at,
            self.resolved_at,
            self.last_sent_at,
            self.silenced_until,
            self.fingerprint,
            self.keep_firing_since,
        )

    def to_row(self, rule: str) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["state"] = str(self.state)
        d["rule"] = rule
        return d

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RuleState:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: row[k] for k in row.keys() if k in names}  # noqa: SIM118 - sqlite3.Row
        try:
            kw["state"] = AlertState(kw.get("state") or "inactive")
        except ValueError:
            kw["state"] = AlertState.INACTIVE
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class StepResult:
    state: RuleState
    transition: AlertTransition | None
    #: whether the transition should be delivered (outbox); False while silenced etc.
    notify: bool = False


def _transition(
    rule: Rule,
    prev: AlertState,
    new: AlertState,
    now: float,
    value: float | None,
    x: float | None,
    message: str,
    fired_at: float | None,
    reminder: bool = False,
) -> AlertTransition:
    return AlertTransition(
        rule=rule.name,
        severity=rule.severity,
        previous=prev,
        state=new,
        at=now,
        value=value,
        threshold=rule.threshold_for(x),
        message=message,
        fired_at=fired_at,
        reminder=reminder,
    )


def evaluate(
    rule: Rule,
    state: RuleState,
    value: float | None,
    window: WindowArg,
    now: float,
    *,
    stale: bool = False,
    context: Mapping[str, float | None] | None = None,
    measure: float | object | None = _UNSET,
    render: bool = True,
) -> StepResult:
    """One evaluation of ``rule`` at ``now``; see the module docstring for the semantics.

    ``measure`` (the backtest's fast path) is the rule's measure computed by the caller; the
    window is then not consulted. ``render=False`` leaves the transition's message empty
    (the backtest renders only the transitions it reports).
    """
    if stale:
        return StepResult(state, None)
    x: float | None = rule.measure(value, window) if measure is _UNSET else measure  # type: ignore[assignment]
    cond = None if x is None else rule.fires(x)
    s = state.state
    # Field updates, applied with one dataclasses.replace at the end (it is not cheap).
    upd: dict[str, Any] = {}
    tr_state: AlertState | None = None
    reminder = False
    notify = False
    silenced = state.silenced(now)

    if s is AlertState.FIRING:
        if cond is None:
            pass  # no data never resolves an incident
        elif rule.clears(x):  # type: ignore[arg-type]
            kfs = state.keep_firing_since if state.keep_firing_since is not None else now
            if now - kfs >= rule.keep_firing_for_s:
                tr_state = AlertState.RESOLVED
                announced = (
                    state.last_sent_at is not None
                    and state.fired_at is not None
                    and state.last_sent_at >= state.fired_at
                )
                notify = rule.send_resolved and announced and not silenced
                upd.update(
                    state=AlertState.RESOLVED, since=now, resolved_at=now, keep_firing_since=None
                )
                if notify:
                    upd["last_sent_at"] = now
            elif state.keep_firing_since is None:
                upd["keep_firing_since"] = now
        elif state.keep_firing_since is not None:
            upd["keep_firing_since"] = None
        if tr_state is None and not silenced:
            # Reminders, and the first announcement of an incident that fired while silenced.
            last = state.last_sent_at
            unannounced = last is None or (state.fired_at is not None and last < state.fired_at)
            due = rule.repeat_s > 0 and not unannounced and now - last >= rule.repeat_s  # type: ignore[operator]
            if unannounced or due:
                tr_state, reminder, notify = AlertState.FIRING, True, True
                upd["last_sent_at"] = now
    elif cond is None:
        if s is not AlertState.NO_DATA:
            tr_state = AlertState.NO_DATA
            upd.update(state=AlertState.NO_DATA, since=now, active_at=None)
    elif cond:
        if s is AlertState.PENDING and state.active_at is not None:
            active_at = state.active_at
        else:
            active_at = now
        if now - active_at >= rule.for_s:
            tr_state = AlertState.FIRING
            notify = not silenced
            upd.update(
                state=AlertState.FIRING,
                since=now,
                active_at=active_at,
                fired_at=now,
                keep_firing_since=None,
            )
            if notify:
                upd["last_sent_at"] = now
        elif s is not AlertState.PENDING:
            tr_state = AlertState.PENDING
            upd.update(state=AlertState.PENDING, since=now, active_at=active_at)
    elif s in (AlertState.PENDING, AlertState.NO_DATA) or (
        s is AlertState.RESOLVED
        and now - (state.resolved_at or state.since or now) >= RESOLVED_RETENTION_S
    ):
        tr_state = AlertState.INACTIVE
        upd.update(state=AlertState.INACTIVE, since=now, active_at=None)

    new = dataclasses.replace(
        state, last_value=value, last_eval_at=now, fingerprint=rule.fingerprint, **upd
    )
    if tr_state is None:
        return StepResult(new, None)
    message = rule.render_message(value, window, context, x=x) if render else ""
    fired_at = new.fired_at if tr_state in (AlertState.FIRING, AlertState.RESOLVED) else None
    tr = _transition(rule, s, tr_state, now, value, x, message, fired_at, reminder)
    return StepResult(new, tr, notify)


def step(
    rule: Rule,
    state: RuleState,
    value: float | None,
    window: WindowArg,
    now: float,
    *,
    stale: bool = False,
    context: Mapping[str, float | None] | None = None,
) -> tuple[RuleState, AlertTransition | None]:
    """:func:`evaluate` without the delivery decision."""
    r = evaluate(rule, state, value, window, now, stale=stale, context=context)
    return r.state, r.transition


def next_deadline(rule: Rule, state: RuleState) -> float | None:
    """The earliest time at which ``state`` can change with unchanged inputs (None: never).

    The backtest uses it to skip the minutes where nothing can happen.
    """
    s = state.state
    if s is AlertState.PENDING and state.active_at is not None:
        return state.active_at + rule.for_s
    if s is AlertState.FIRING:
        times = []
        if state.keep_firing_since is not None:
            times.append(state.keep_firing_since + rule.keep_firing_for_s)
        if rule.repeat_s > 0 and state.last_sent_at is not None:
            times.append(state.last_sent_at + rule.repeat_s)
        if state.silenced_until is not None:
            times.append(state.silenced_until)
        return min(times) if times else None
    if s is AlertState.RESOLVED:
        return (state.resolved_at or state.since or 0.0) + RESOLVED_RETENTION_S
    return None
