"""Alert, digest, heartbeat and test messages as (title, body) text.

Plain text on purpose: it reads the same in Slack (apprise posts it as an attachment's text),
in an e-mail client and in a terminal. Titles carry everything a phone notification has room
for: ``[CRITICAL] FIRING hashprice-floor: hashprice $38.70/PH/day below $40.00/PH/day``.
Bodies are short bullet lists (no column alignment: Slack and most mail clients use a
proportional font) and always end with the UTC time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alerts.rules import fmt_duration, fmt_metric
from feeds.events import AlertState, AlertTransition

#: Context lines shown under every alert, in this order (DOMAIN.md metric names).
CONTEXT_METRICS: tuple[tuple[str, str], ...] = (
    ("price_usd", "Price"),
    ("hashrate_7d", "Hashrate (7d)"),
    ("difficulty", "Difficulty"),
    ("difficulty_projected_change_pct", "Projected difficulty change"),
    ("hashprice", "Hashprice"),
    ("margin", "Fleet margin"),
)
#: Heartbeat summary lines, in this order.
HEARTBEAT_METRICS: tuple[tuple[str, str], ...] = (
    *CONTEXT_METRICS[:4],
    ("retarget_eta", "Next retarget"),
    ("hashprice", "Hashprice"),
    ("hashcost", "Fleet hashcost"),
    ("margin", "Fleet margin"),
    ("price_to_cost_pct", "Price vs network cost"),
    ("tip_height", "Tip height"),
    ("tip_age_s", "Last block"),
)
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}
APP = "hashwatch"


def fmt_time(ts: float | None) -> str:
    """``2025-01-02 03:04:05 UTC``; timestamps are epoch seconds (UTC by definition)."""
    if ts is None or not math.isfinite(ts):
        return "n/a"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_value(metric: str | None, value: float | None) -> str:
    """A value with its metric's unit; H/s as EH/s, USD per PH/day, percent, durations."""
    if value is None:
        return "n/a"
    if metric in ("difficulty", "hashrate_difficulty"):
        return f"{value / 1e12:,.2f} T"
    if metric in ("retarget_eta", "tip_time"):
        return fmt_time(value)
    if metric == "difficulty_projected_band_pct":
        return f"±{value:.1f} pp"  # an uncertainty, not a signed change
    if metric is None:
        return f"{value:,.4g}"
    return fmt_metric(metric, value)


def _state_word(t: AlertTransition) -> str:
    return "RESOLVED" if t.state is AlertState.RESOLVED else str(t.state).upper()


def alert_title(t: AlertTransition) -> str:
    """``[SEVERITY] FIRING|RESOLVED rule: summary`` (reminders say so at the end)."""
    title = f"[{t.severity.upper()}] {_state_word(t)} {t.rule}"
    if t.message:
        title += f": {t.message}"
    if t.reminder:
        title += " (reminder"
        if t.fired_at is not None:
            title += f", firing for {fmt_duration(max(0.0, t.at - t.fired_at))}"
        title += ")"
    return title


def _context_lines(
    context: Mapping[str, Any], specs: Sequence[tuple[str, str]], skip: str | None = None
) -> list[str]:
    lines = []
    for name, label in specs:
        if name == skip or name not in context:
            continue
        v = context[name]
        if name == "tip_age_s" and v is not None:
            lines.append(f"• {label}: {fmt_duration(float(v))} ago")
            continue
        lines.append(f"• {label}: {fmt_value(name, v)}")
    return lines


def format_transition(t: AlertTransition, context: Mapping[str, Any]) -> tuple[str, str]:
    """Title and body for one transition.

    ``context`` holds metric values by DOMAIN.md name (price_usd, hashrate_7d, difficulty,
    difficulty_projected_change_pct, hashprice, ...) and may carry two keys about the rule:
    ``metric`` (its metric name, for units) and ``condition`` (``above``, ``below``,
    ``band``, ``drop_pct``, ``change_pct``: percent conditions show their threshold in %).
    """
    metric = context.get("metric")
    metric = metric if isinstance(metric, str) else None
    pct_rule = context.get("condition") in ("drop_pct", "change_pct")
    title = alert_title(t)
    lines: list[str] = []
    sev = t.severity.upper()
    if t.state is AlertState.RESOLVED:
        lines.append(f"{t.rule} ({sev}) is RESOLVED.")
        if t.fired_at is not None:
            lines.append(
                f"It lasted {fmt_duration(max(0.0, t.at - t.fired_at))} "
                f"(firing since {fmt_time(t.fired_at)})."
            )
    elif t.reminder:
        lines.append(f"{t.rule} ({sev}) is still FIRING.")
        if t.fired_at is not None:
            lines.append(f"Firing since {fmt_time(t.fired_at)}.")
    else:
        lines.append(f"{t.rule} ({sev}) is {_state_word(t)}.")
    if t.message:
        lines.append(t.message)
    lines.append("")
    label = metric or "Value"
    lines.append(f"• {label}: {fmt_value(metric, t.value)}")
    if t.threshold is not None:
        thr = f"{t.threshold:g}%" if pct_rule else fmt_value(metric, t.threshold)
        lines.append(f"• Threshold: {thr}")
    ctx = _context_lines(context, CONTEXT_METRICS, skip=metric)
    if ctx:
        lines.append("")
        lines.append("Context:")
        lines.extend(ctx)
    lines.append("")
    lines.append(f"{fmt_time(t.at)} · {APP}")
    return title, "\n".join(lines)


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One message folded into a digest (an outbox row)."""

    created_at: float
    severity: str
    title: str


def max_severity(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: SEVERITY_ORDER.get(s, 0), default="info")


def format_digest(
    items: Sequence[DigestItem], now: float, *, limit: int = 40, window_s: float = 600
) -> tuple[str, str]:
    """One message standing in for many (storm control): every folded title, oldest first."""
    sev = max_severity(i.severity for i in items)
    n = len(items)
    title = f"[{sev.upper()}] DIGEST: {n} alert message{'s' if n != 1 else ''} folded"
    lines = [
        f"Too many alerts for this channel (more than its limit per {fmt_duration(window_s)}):",
        f"these {n} messages were folded into one. Oldest first:",
        "",
    ]
    for item in items[:limit]:
        hhmm = datetime.fromtimestamp(item.created_at, tz=UTC).strftime("%H:%M")
        lines.append(f"• {hhmm} {item.title}")
    if n > limit:
        lines.append(f"• … and {n - limit} more")
    lines.append("")
    lines.append(f"{fmt_time(now)} · {APP}")
    return title, "\n".join(lines)


def format_heartbeat(summary: Mapping[str, Any], now: float) -> tuple[str, str]:
    """The periodic "still watching" message: one screen on what hashwatch sees.

    ``summary`` keys (all optional): metric values by name; ``active_alerts`` — a sequence of
    ``(rule, severity, since)``; ``feeds`` — mapping source -> state; ``started_at``.
    """
    active = list(summary.get("active_alerts") or [])
    title = f"[INFO] {APP} still watching"
    title += f": {len(active)} alert{'s' if len(active) != 1 else ''} firing" if active else ""
    lines = [f"{APP} is running and watching the network."]
    started = summary.get("started_at")
    if isinstance(started, int | float):
        lines.append(f"Up for {fmt_duration(max(0.0, now - float(started)))}.")
    metrics = _context_lines(summary, HEARTBEAT_METRICS)
    if metrics:
        lines += ["", "Now:", *metrics]
    lines += ["", "Firing alerts:" if active else "No alert is firing."]
    for rule, severity, since in active:
        lines.append(f"• [{str(severity).upper()}] {rule} since {fmt_time(since)}")
    feeds = summary.get("feeds") or {}
    if feeds:
        lines += ["", "Feeds:"]
        lines += [f"• {src}: {state}" for src, state in sorted(feeds.items())]
    lines += ["", f"{fmt_time(now)} · {APP}"]
    return title, "\n".join(lines)


def format_test(target_label: str, now: float) -> tuple[str, str]:
    title = f"[INFO] {APP} test alert"
    body = (
        f"This is a test message from {APP} to notify target {target_label}.\n"
        "If you can read it, alerts for this target will reach you.\n"
        "\n"
        f"{fmt_time(now)} · {APP}"
    )
    return title, body
