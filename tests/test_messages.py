"""Alert, digest, heartbeat and test message text."""

from __future__ import annotations

import dataclasses

from alerts.messages import (
    DigestItem,
    alert_title,
    fmt_time,
    fmt_value,
    format_digest,
    format_heartbeat,
    format_test,
    format_transition,
)
from feeds.events import AlertState, AlertTransition

T0 = 1_736_000_000.0  # 2025-01-04 14:13:20 UTC
CTX = {
    "metric": "hashprice",
    "condition": "below",
    "price_usd": 71_234.4,
    "hashrate_7d": 8.123e20,
    "difficulty": 1.1376e14,
    "difficulty_projected_change_pct": -5.25,
    "hashprice": 38.7,
}
FIRING = AlertTransition(
    rule="hashprice-floor",
    severity="critical",
    previous=AlertState.PENDING,
    state=AlertState.FIRING,
    at=T0,
    value=38.7,
    threshold=40.0,
    message="hashprice $38.70/PH/day below $40.00/PH/day",
    fired_at=T0,
)


def test_firing_title_and_body():
    title, body = format_transition(FIRING, CTX)
    assert title == "[CRITICAL] FIRING hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day"
    lines = body.splitlines()
    assert lines[0] == "hashprice-floor (CRITICAL) is FIRING."
    assert "• hashprice: $38.70/PH/day" in lines
    assert "• Threshold: $40.00/PH/day" in lines
    assert "• Price: $71,234" in lines
    assert "• Hashrate (7d): 812.3 EH/s" in lines
    assert "• Difficulty: 113.76 T" in lines
    assert "• Projected difficulty change: -5.2%" in lines
    assert not any(ln.startswith("• Hashprice:") for ln in lines)  # it is the value already
    assert lines[-1] == "2025-01-04 14:13:20 UTC · hashwatch"


def test_resolved_says_how_long_it_lasted():
    t = dataclasses.replace(
        FIRING, previous=AlertState.FIRING, state=AlertState.RESOLVED, at=T0 + 8100, value=42.5
    )
    title, body = format_transition(t, CTX)
    assert title.startswith("[CRITICAL] RESOLVED hashprice-floor: ")
    assert "It lasted 2h 15m (firing since 2025-01-04 14:13:20 UTC)." in body
    assert "• hashprice: $42.50/PH/day" in body


def test_reminder_title_and_body():
    t = dataclasses.replace(FIRING, at=T0 + 4 * 3600, reminder=True)
    title, body = format_transition(t, CTX)
    assert title.endswith("(reminder, firing for 4h)")
    assert "FIRING" in title
    assert body.startswith("hashprice-floor (CRITICAL) is still FIRING.\nFiring since 2025-01-04")


def test_pct_rule_threshold_in_percent_and_missing_context():
    t = dataclasses.replace(FIRING, rule="hashrate-drop", value=-12.5, threshold=10.0, message="")
    _, body = format_transition(t, {"metric": "hashrate_7d", "condition": "drop_pct"})
    assert "• Threshold: 10%" in body
    assert "Context:" not in body  # nothing known: no empty section
    assert alert_title(t) == "[CRITICAL] FIRING hashrate-drop"


def test_units():
    assert fmt_value("hashrate_30d", 7.5e20) == "750.0 EH/s"
    assert fmt_value("hashprice", 40) == "$40.00/PH/day"
    assert fmt_value("price_usd", 71000.4) == "$71,000"
    assert fmt_value("tip_age_s", 5400) == "1h 30m"
    assert fmt_value("feed_age_s.coinbase", 130) == "2m"
    assert fmt_value("difficulty", 1.1376e14) == "113.76 T"
    assert fmt_value("retarget_eta", T0) == "2025-01-04 14:13:20 UTC"
    assert fmt_value("hashprice", None) == "n/a"
    assert fmt_time(None) == "n/a"


def test_digest_lists_every_folded_title_oldest_first():
    items = [
        DigestItem(T0 + 60 * i, "warning" if i else "critical", f"[X] FIRING r{i}")
        for i in range(5)
    ]
    title, body = format_digest(items, T0 + 600, limit=3)
    assert title == "[CRITICAL] DIGEST: 5 alert messages folded"
    lines = body.splitlines()
    assert lines[3:7] == [
        "• 14:13 [X] FIRING r0",
        "• 14:14 [X] FIRING r1",
        "• 14:15 [X] FIRING r2",
        "• … and 2 more",
    ]
    assert "10m" in lines[0]


def test_heartbeat_summary():
    summary = {
        **CTX,
        "tip_age_s": 300,
        "active_alerts": [("hashprice-floor", "critical", T0)],
        "feeds": {"kraken": "live", "coinbase": "stale"},
        "started_at": T0 - 86400 * 2,
    }
    title, body = format_heartbeat(summary, T0)
    assert title == "[INFO] hashwatch still watching: 1 alert firing"
    assert "Up for 2d." in body
    assert "• Last block: 5m ago" in body
    assert "• [CRITICAL] hashprice-floor since 2025-01-04 14:13:20 UTC" in body
    assert body.index("• coinbase: stale") < body.index("• kraken: live")
    quiet_title, quiet_body = format_heartbeat({}, T0)
    assert quiet_title == "[INFO] hashwatch still watching"
    assert "No alert is firing." in quiet_body


def test_test_message_names_the_target():
    title, body = format_test("ops-slack", T0)
    assert title == "[INFO] hashwatch test alert"
    assert "notify target ops-slack" in body
