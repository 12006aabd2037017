"""Alerts panel: firing and pending alerts with durations, recent history; select one (up and
down) to silence it. The panel only shows state; the App submits the operator action."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.reactive import reactive

from feeds.events import AlertState, AlertTransition
from tui import format as fmt
from tui.messages import AlertRow
from tui.widgets.panel import Panel, data

ACTIVE = (AlertState.PENDING.value, AlertState.FIRING.value)
#: transitions worth a history line; INACTIVE/NO_DATA churn (start-up, warm-up) is noise
HISTORY_STATES = (*ACTIVE, AlertState.RESOLVED.value)
HISTORY_KEEP = 20
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def row_from_transition(t: AlertTransition, previous: AlertRow | None = None) -> AlertRow:
    since = t.at
    # A reminder or a repeated FIRING keeps the original start so the duration keeps growing.
    if previous is not None and previous.state == t.state.value:
        since = previous.since
    return AlertRow(
        rule=t.rule,
        severity=t.severity,
        state=t.state.value,
        since=since,
        message=t.message,
        value=t.value,
        threshold=t.threshold,
        silenced_until=None if previous is None else previous.silenced_until,
    )


def apply(
    active: dict[str, AlertRow],
    history: tuple[AlertRow, ...],
    transitions: Iterable[AlertTransition],
) -> tuple[dict[str, AlertRow], tuple[AlertRow, ...]]:
    """Fold transitions into (active alerts by rule, newest-first history)."""
    active = dict(active)
    hist = list(history)
    for t in transitions:
        if t.state.value in ACTIVE:
            active[t.rule] = row_from_transition(t, active.get(t.rule))
        else:
            active.pop(t.rule, None)
        if not t.reminder and t.state.value in HISTORY_STATES:
            hist.insert(0, row_from_transition(t))
    hist.sort(key=lambda r: -r.since)
    return active, tuple(hist[:HISTORY_KEEP])


class AlertsPanel(Panel, can_focus=True):
    TITLE = "Alerts"

    DEFAULT_CSS = """
    AlertsPanel { height: 1fr; min-height: 4; }
    AlertsPanel:focus { border-top: heavy $accent; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Previous alert", show=False, id="alerts.up"),
        Binding("down,j", "cursor(1)", "Next alert", show=False, id="alerts.down"),
    ]

    #: pending/firing alerts by rule
    active: reactive[dict[str, AlertRow]] = data(dict)
    #: recent transitions, newest first
    history: reactive[tuple[AlertRow, ...]] = data(tuple)
    cursor: reactive[int] = data(0)
    #: silences this UI asked for (rule -> until), shown until the store confirms them
    requested: reactive[dict[str, float]] = data(dict)

    def ordered(self) -> list[AlertRow]:
        """Firing before pending, then oldest first: the order rows are shown and selected."""
        return sorted(self.active.values(), key=lambda r: (r.state != "firing", r.since, r.rule))

    @property
    def selected(self) -> AlertRow | None:
        rows = self.ordered()
        return rows[min(self.cursor, len(rows) - 1)] if rows else None

    def action_cursor(self, step: int) -> None:
        n = len(self.active)
        self.cursor = (self.cursor + step) % n if n else 0

    def _silence_text(self, r: AlertRow) -> str:
        until = max(r.silenced_until or 0.0, self.requested.get(r.rule, 0.0))
        return f" silenced {fmt.duration(until - self.now)}" if until > self.now else ""

    def build(self) -> Group:
        lines: list[Text] = []
        rows = self.ordered()
        sel = self.selected
        for r in rows:
            mark = "▶ " if (r is sel and self.has_focus) else "  "
            t = Text(mark)
            t.append(r.state.upper(), style="bold reverse" if r.state == "firing" else "bold")
            t.append(f" {r.severity[:4]:<4} ", style=SEVERITY_STYLE.get(r.severity, ""))
            t.append(r.rule, style="bold")
            t.append(f" {fmt.duration(self.now - r.since)}")
            t.no_wrap, t.overflow = True, "ellipsis"
            lines.append(t)
            # Second line: the silence (always) and, when there is room, message and value.
            detail = Text("    ")
            silence = self._silence_text(r)
            if silence:
                detail.append(silence.strip(), style="italic")
            if not self.compact and r.message:
                detail.append(("  " if silence else "") + r.message, style="dim")
                if r.value is not None:
                    detail.append(f" (now {r.value:,.4g})", style="dim")
            if detail.plain.strip():
                detail.no_wrap, detail.overflow = True, "ellipsis"
                lines.append(detail)
        if not rows:
            lines.append(Text("  nothing firing or pending", style="dim"))
        if self.history:
            lines.append(Text("recent", style="dim underline"))
        for r in self.history:
            when = dt.datetime.fromtimestamp(r.since, tz=dt.UTC).strftime("%m-%d %H:%M")
            t = Text(f"  {when} ", style="dim")
            t.append(r.state.upper())
            t.append(f" {r.rule}")
            if not self.narrow and r.message:
                t.append(f"  {r.message}", style="dim")
            t.no_wrap, t.overflow = True, "ellipsis"
            lines.append(t)
        return Group(*lines)
