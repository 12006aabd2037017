"""Table-driven state-machine tests: value series at injected times, expected transitions.

Each case is a rule plus a list of steps ``(t, value)`` (or ``(t, value, "stale")``) and the
transitions expected, written ``(t, "prev->new")`` with ``+r`` for reminders and ``!`` when
the transition is *not* to be notified. No clock, no sleeping: ``now`` is the step's ``t``.
"""

from __future__ import annotations

from typing import Any

import pytest

from alerts.engine import RESOLVED_RETENTION_S, RuleState, evaluate, next_deadline, step
from alerts.rules import Rule, WindowStats
from feeds.events import AlertState
from tests.support_alerts import rule

S = AlertState


def _fmt(tr: Any, notify: bool) -> str:
    s = f"{tr.previous}->{tr.state}"
    if tr.reminder:
        s += "+r"
    if not notify:
        s += "!"
    return s


def run(
    r: Rule, steps: list[tuple], state: RuleState | None = None
) -> tuple[RuleState, list[tuple[float, str]]]:
    state = state or RuleState()
    out: list[tuple[float, str]] = []
    for st in steps:
        t, value = st[0], st[1]
        stale = "stale" in st[2:]
        window = next((x for x in st[2:] if isinstance(x, WindowStats)), None)
        res = evaluate(r, state, value, window, t, stale=stale)
        state = res.state
        if res.transition is not None:
            out.append((t, _fmt(res.transition, res.notify)))
    return state, out


CASES: list[tuple[str, dict, list[tuple], list[tuple[float, str]]]] = [
    (
        "fires at once without for, resolves once not below",
        {"below": 40.0},
        [(0, 45), (60, 39), (120, 38), (180, 41)],
        [(0, "inactive->inactive"), (60, "inactive->firing"), (180, "firing->resolved")],
    ),
    (
        "for: pending until held long enough",
        {"below": 40.0, "for_s": 300},
        [(0, 39), (120, 39), (299, 39), (300, 39), (360, 39)],
        [(0, "inactive->pending!"), (300, "pending->firing")],
    ),
    (
        "for: a blip back over the line resets the hold",
        {"below": 40.0, "for_s": 300},
        [(0, 39), (200, 41), (240, 39), (500, 39), (540, 39)],
        [
            (0, "inactive->pending!"),
            (200, "pending->inactive!"),
            (240, "inactive->pending!"),
            (540, "pending->firing"),
        ],
    ),
    (
        "hysteresis: between threshold and clear keeps firing",
        {"below": 40.0, "clear": 42.0},
        [(0, 39), (60, 41), (120, 41.99), (180, 42.0)],
        [(0, "inactive->firing"), (180, "firing->resolved")],
    ),
    (
        "hysteresis: re-firing needs the threshold again, not just leaving clear",
        {"below": 40.0, "clear": 42.0},
        [(0, 39), (60, 43), (120, 41), (180, 39.5)],
        [(0, "inactive->firing"), (60, "firing->resolved"), (180, "resolved->firing")],
    ),
    (
        "keep_firing_for: resolves only after clear for that long",
        {"above": 5.0, "keep_firing_for_s": 600},
        [(0, 6), (60, 4), (300, 6), (360, 4), (900, 4), (960, 4)],
        [(0, "inactive->firing"), (960, "firing->resolved")],
    ),
    (
        "repeat: reminders while firing, none after resolution",
        {"above": 5.0, "repeat_s": 3600},
        [(0, 6), (1800, 6), (3600, 6), (5000, 6), (7200, 6), (7300, 1), (10800, 1)],
        [
            (0, "inactive->firing"),
            (3600, "firing->firing+r"),
            (7200, "firing->firing+r"),
            (7300, "firing->resolved"),
            (10800, "resolved->inactive!"),
        ],
    ),
    (
        "send_resolved=false: the state resolves but nothing is sent",
        {"above": 5.0, "send_resolved": False},
        [(0, 6), (60, 1)],
        [(0, "inactive->firing"), (60, "firing->resolved!")],
    ),
    (
        "no data is visible and never fires",
        {"below": 40.0},
        [(0, None), (60, None), (120, 39), (180, None)],
        [(0, "inactive->no_data!"), (120, "no_data->firing")],
    ),
    (
        "no data drops a pending hold",
        {"below": 40.0, "for_s": 120},
        [(0, 39), (60, None), (120, 39), (200, 39), (240, 39)],
        [
            (0, "inactive->pending!"),
            (60, "pending->no_data!"),
            (120, "no_data->pending!"),
            (240, "pending->firing"),
        ],
    ),
    (
        "stale inputs neither fire nor resolve",
        {"below": 40.0},
        [(0, 30, "stale"), (60, 39), (120, 50, "stale"), (180, 38), (240, 45)],
        [(60, "inactive->firing"), (240, "firing->resolved")],
    ),
    (
        "resolved goes inactive after the retention, quietly",
        {"above": 5.0},
        [(0, 6), (60, 4), (60 + RESOLVED_RETENTION_S - 1, 4), (60 + RESOLVED_RETENTION_S, 4)],
        [(0, "inactive->firing"), (60, "firing->resolved"), (960, "resolved->inactive!")],
    ),
    (
        "band fires on either side",
        {"above": 5.0, "below": -5.0},
        [(0, 0), (60, 6), (120, 0), (180, -7)],
        [(60, "inactive->firing"), (120, "firing->resolved"), (180, "resolved->firing")],
    ),
    (
        "window not yet full is no data",
        {"drop_pct": 10.0, "window": 3600},
        [
            (0, 80, WindowStats(False, 100, 100)),
            (60, 80, WindowStats(True, 100, 100)),
            (120, 95, WindowStats(True, 100, 100)),
        ],
        [(0, "inactive->no_data!"), (60, "no_data->firing"), (120, "firing->resolved")],
    ),
]


@pytest.mark.parametrize(("title", "kw", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_engine_cases(title, kw, steps, expected) -> None:
    _, got = run(rule(**kw), steps)
    # "inactive->inactive" in a table means "no transition at that step": drop it.
    assert got == [e for e in expected if e[1] != "inactive->inactive"], title


def test_times_are_recorded() -> None:
    r = rule(below=40.0, for_s=60)
    s, _ = run(r, [(10, 39), (70, 39), (130, 45)])
    assert (s.state, s.active_at, s.fired_at, s.resolved_at) == (S.RESOLVED, 10, 70, 130)
    assert s.since == 130 and s.last_value == 45 and s.last_eval_at == 130
    assert s.fingerprint == r.fingerprint


def test_transition_content() -> None:
    r = rule(name="hashprice-floor", below=40.0, clear=42.0, severity="critical")
    s, tr = step(r, RuleState(), 38.7, None, 100.0)
    assert tr is not None and tr.state is S.FIRING and tr.fired_at == 100.0
    assert (tr.rule, tr.severity, tr.value, tr.threshold) == (
        "hashprice-floor",
        "critical",
        38.7,
        40,
    )
    assert tr.message == "hashprice $38.70/PH/day below $40.00/PH/day"
    s, tr = step(r, s, 42.5, None, 400.0)
    assert tr is not None and tr.state is S.RESOLVED and tr.fired_at == 100.0 and tr.at == 400.0


def test_stale_returns_state_unchanged() -> None:
    r = rule(below=40.0)
    s0 = RuleState(state=S.FIRING, since=1.0, fired_at=1.0, last_sent_at=1.0)
    s1, tr = step(r, s0, 100.0, None, 50.0, stale=True)
    assert s1 is s0 and tr is None


def test_no_data_never_resolves_a_firing_incident() -> None:
    r = rule(below=40.0)
    s, out = run(r, [(0, 39), (60, None), (120, None), (180, 39)])
    assert out == [(0, "inactive->firing")] and s.state is S.FIRING


# -- silence ------------------------------------------------------------------------------


def test_silence_suppresses_notifications_but_not_state() -> None:
    r = rule(above=5.0, repeat_s=600)
    s0 = RuleState(silenced_until=1000.0)
    _, out = run(r, [(0, 6), (600, 6), (900, 6), (1000, 6), (1300, 6), (1600, 6)], s0)
    assert out == [
        (0, "inactive->firing!"),  # state moves, nothing sent
        (1000, "firing->firing+r"),  # silence over: the unannounced incident is announced
        (1600, "firing->firing+r"),  # then reminders on schedule
    ]


def test_resolution_of_an_unannounced_incident_is_not_sent() -> None:
    r = rule(above=5.0)
    _, out = run(r, [(0, 6), (60, 1)], RuleState(silenced_until=30.0))
    assert out == [(0, "inactive->firing!"), (60, "firing->resolved!")]


def test_resolved_sent_only_if_firing_was_sent_even_after_silence() -> None:
    r = rule(above=5.0)
    # fired and announced, then silenced, resolves during the silence: not sent
    s, out = run(r, [(0, 6)])
    s = RuleState(**{**_asdict(s), "silenced_until": 500.0})
    s, out = run(r, [(100, 1)], s)
    assert out == [(100, "firing->resolved!")]


def _asdict(s: RuleState) -> dict[str, Any]:
    return {f: getattr(s, f) for f in RuleState.__slots__}


# -- restart in the middle of each state ------------------------------------------------------


RESTART_RULE = {
    "below": 40.0,
    "clear": 42.0,
    "for_s": 300,
    "keep_firing_for_s": 120,
    "repeat_s": 900,
}
RESTART_SERIES = [
    (0, None),  # no data
    (60, 45),  # inactive
    (120, 39),  # pending
    (300, 39),
    (420, 39),  # firing
    (600, 41),  # hysteresis zone: still firing
    (1320, 41),  # reminder
    (1400, 43),  # cleared: keep firing
    (1500, 43),
    (1520, 43),  # resolved
    (1600, 39),  # pending again
]


@pytest.mark.parametrize("cut", range(1, len(RESTART_SERIES)))
def test_restart_anywhere_behaves_the_same(cut: int) -> None:
    """Persist -> reload -> continue gives exactly the uninterrupted run's transitions."""
    r = rule(**RESTART_RULE)
    _, whole = run(r, RESTART_SERIES)
    s, first = run(r, RESTART_SERIES[:cut])
    row = s.to_row(r.name)
    assert row["state"] == str(s.state) and row["rule"] == r.name
    reloaded = RuleState.from_row(row)
    assert reloaded == s
    _, second = run(r, RESTART_SERIES[cut:], reloaded)
    assert first + second == whole


def test_restart_series_covers_every_state() -> None:
    r = rule(**RESTART_RULE)
    _, whole = run(r, RESTART_SERIES)
    assert [x[1] for x in whole] == [
        "inactive->no_data!",
        "no_data->inactive!",
        "inactive->pending!",
        "pending->firing",
        "firing->firing+r",
        "firing->resolved",
        "resolved->pending!",
    ]


def test_from_row_tolerates_unknown_state_and_extra_columns() -> None:
    s = RuleState.from_row({"rule": "x", "state": "bogus", "since": 5.0, "extra": 1})
    assert s.state is S.INACTIVE and s.since == 5.0


def test_next_deadline() -> None:
    r = rule(below=40.0, for_s=300, repeat_s=600, keep_firing_for_s=60)
    assert next_deadline(r, RuleState()) is None
    assert next_deadline(r, RuleState(state=S.PENDING, active_at=10.0)) == 310.0
    firing = RuleState(state=S.FIRING, fired_at=0.0, last_sent_at=100.0, keep_firing_since=200.0)
    assert next_deadline(r, firing) == 260.0
    assert next_deadline(r, RuleState(state=S.RESOLVED, resolved_at=0.0)) == RESOLVED_RETENTION_S
