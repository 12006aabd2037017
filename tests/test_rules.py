"""Rule compilation, conditions with hysteresis, window semantics and message templates."""

from __future__ import annotations

import pytest

from alerts.rules import WindowStats, compile_rules, fmt_metric, is_stale, render_template
from feeds.errors import ConfigError
from tests.support_alerts import rule, spec

FULL = WindowStats(True, 100.0, 100.0)


@pytest.mark.parametrize(
    ("kw", "value", "window", "cond", "cleared"),
    [
        # above / below, strict, clear defaults to the threshold itself
        ({"above": 5.0}, 5.1, None, True, False),
        ({"above": 5.0}, 5.0, None, False, True),
        ({"below": 40.0}, 39.9, None, True, False),
        ({"below": 40.0}, 40.0, None, False, True),
        # hysteresis: below 40, clear at 42 -> 41 is neither firing nor cleared
        ({"below": 40.0, "clear": 42.0}, 41.0, None, False, False),
        ({"below": 40.0, "clear": 42.0}, 42.0, None, False, True),
        ({"above": 5.0, "clear": 3.0}, 4.0, None, False, False),
        ({"above": 5.0, "clear": 3.0}, 3.0, None, False, True),
        # band: both together mean "outside"
        ({"above": 5.0, "below": -5.0}, 6.0, None, True, False),
        ({"above": 5.0, "below": -5.0}, -6.0, None, True, False),
        ({"above": 5.0, "below": -5.0}, 0.0, None, False, True),
        # drop_pct: at least 10% below the window's max
        ({"drop_pct": 10.0, "window": 3600.0}, 90.0, FULL, True, False),
        ({"drop_pct": 10.0, "window": 3600.0}, 90.01, FULL, False, True),
        ({"drop_pct": 10.0, "window": 3600.0, "clear": 5.0}, 93.0, FULL, False, False),
        ({"drop_pct": 10.0, "window": 3600.0, "clear": 5.0}, 95.0, FULL, False, True),
        # change_pct: sign gives direction
        ({"change_pct": -10.0, "window": 86400.0}, 90.0, FULL, True, False),
        ({"change_pct": -10.0, "window": 86400.0}, 91.0, FULL, False, True),
        ({"change_pct": -10.0, "window": 86400.0}, 120.0, FULL, False, True),
        ({"change_pct": 10.0, "window": 86400.0}, 110.0, FULL, True, False),
        ({"change_pct": 10.0, "window": 86400.0}, 80.0, FULL, False, True),
        ({"change_pct": -10.0, "window": 86400.0, "clear": -5.0}, 93.0, FULL, False, False),
        # no data: value None, window missing or not yet full
        ({"below": 40.0}, None, None, None, None),
        ({"drop_pct": 10.0, "window": 3600.0}, 50.0, None, None, None),
        ({"drop_pct": 10.0, "window": 3600.0}, 50.0, WindowStats(False, 100, 100), None, None),
        ({"change_pct": -10.0, "window": 60.0}, 50.0, WindowStats(True, 0.0, 0.0), None, None),
    ],
)
def test_condition_and_cleared(kw, value, window, cond, cleared) -> None:
    r = rule(**kw)
    assert r.condition(value, window) is cond
    assert r.cleared(value, window) is cleared


def test_window_may_be_a_plain_list_and_includes_the_current_value() -> None:
    r = rule(drop_pct=10.0, window=3600.0)
    assert r.condition(80.0, [100.0, 95.0, 85.0]) is True
    assert r.condition(95.0, [90.0, 92.0]) is False  # the current value is the max
    assert r.condition(80.0, []) is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({}, "exactly one condition"),
        ({"above": 1.0, "drop_pct": 5.0, "window": 60.0}, "exactly one condition"),
        ({"drop_pct": 10.0}, "window"),
        ({"change_pct": 0.0, "window": 60.0}, "must not be 0"),
        ({"drop_pct": -1.0, "window": 60.0}, "positive"),
        ({"below": 40.0, "clear": 39.0}, "firing side"),
        ({"above": 5.0, "clear": 6.0}, "firing side"),
        ({"change_pct": -10.0, "window": 60.0, "clear": -12.0}, "firing side"),
        ({"above": 5.0, "below": -5.0, "clear": 0.0}, "band"),
    ],
)
def test_invalid_rules_are_config_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        rule(**kw)


def test_duplicate_names_rejected_and_fingerprint_tracks_definition() -> None:
    with pytest.raises(ConfigError, match="twice"):
        compile_rules([spec(name="a", above=1.0), spec(name="a", below=1.0)])
    a, b = compile_rules([spec(name="a", above=1.0), spec(name="b", above=1.0)])
    assert a.fingerprint != b.fingerprint
    assert rule(name="a", above=1.0).fingerprint == a.fingerprint


def test_stale_inputs() -> None:
    assert is_stale("hashprice", frozenset({"price_usd"}))  # depends on price
    assert is_stale("difficulty", frozenset({"difficulty"}))
    assert not is_stale("difficulty", frozenset({"price_usd"}))
    # freshness metrics measure staleness: never "stale inputs" themselves
    assert not is_stale("price_age_s", frozenset({"price_age_s", "price_usd"}))
    assert not is_stale("feed_age_s.coinbase", frozenset({"feed_age_s.coinbase"}))


def test_message_template_safe_and_formatted() -> None:
    r = rule(
        name="hashprice-floor",
        below=40.0,
        message="{rule}: hashprice {value} below {threshold}; price {price_usd}; {nope} {oops:.2f}",
    )
    msg = r.render_message(38.7, None, {"price_usd": 71234.5})
    assert msg == (
        "hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day; price $71,234; n/a n/a"
    )


def test_message_dotted_metric_and_probability_and_spec() -> None:
    out = render_template(
        "age {feed_age_s.coinbase}, luck {block_gap_probability}, gap {tip_age_s}, {value:.1f}",
        {"feed_age_s.coinbase": 150.0, "block_gap_probability": 1 / 160000, "tip_age_s": 5520},
        value=3.14159,
        threshold=None,
        rule="r",
        metric="x",
    )
    assert out == "age 2m, luck 1 in 160,000, gap 1h 32m, 3.1"


def test_malformed_template_is_shown_as_written() -> None:
    r = rule(below=40.0, message="broken {value")
    assert r.render_message(1.0) == "broken {value"


def test_default_messages() -> None:
    assert rule(below=40.0).render_message(38.7) == "hashprice $38.70/PH/day below $40.00/PH/day"
    m = rule(metric="hashrate_7d", drop_pct=10.0, window=30 * 86400.0).render_message(
        9e20, WindowStats(True, 1e21, 1e21)
    )
    assert m.startswith("hashrate_7d 900.0 EH/s, 10% below its 30d maximum")
    pct = rule(change_pct=-10.0, window=86400.0).render_message(
        85.0, WindowStats(True, 100.0, 100.0)
    )
    assert "-15.0% over 1d" in pct and "threshold -10.0%" in pct


def test_pct_rule_placeholders_are_percent() -> None:
    # RuleConfig documents {value} as the percent change for window rules.
    r = rule(
        change_pct=-10.0,
        window=86400.0,
        clear=-5.0,
        message="{name} {value} over {window} (limit {threshold}, clear {clear}) now {hashprice}",
    )
    assert r.render_message(85.0, WindowStats(True, 100.0, 100.0)) == (
        "r -15.0% over 1d (limit -10.0%, clear -5.0%) now $85.00/PH/day"
    )
    d = rule(drop_pct=10.0, window=3600.0, message="{value} below peak (>= {threshold})")
    assert d.render_message(80.0, WindowStats(True, 100.0, 100.0)) == "20.0% below peak (>= 10.0%)"


def test_fmt_metric_units() -> None:
    assert fmt_metric("price_usd", 71234.4) == "$71,234"
    assert fmt_metric("difficulty_projected_change_pct", 5.234) == "+5.2%"
    assert fmt_metric("hashprice", None) == "n/a"
