"""The ``?`` help screen: key bindings (read from the App, so remapped keys show) and units."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

UNITS = (
    "Hashrate in EH/s (± is the 1/√n standard error of the window). Difficulty in T (10¹²).\n"
    "Hashprice in $/PH/day (1 $/PH/day = 0.001 $/TH/day); hashvalue in sats/PH/day.\n"
    "'—' means not computable yet; '(stale)' marks figures computed from stale inputs."
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 80%; max-width: 90; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close help", id="help.close"),
    ]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self._keys = bindings

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, desc in self._keys:
            table.add_row(key, desc)
        table.add_row("↑ ↓", "select an alert (Alerts panel)")
        table.add_row("ctrl+p", "command palette: every action by name")
        with VerticalScroll():
            yield Static(Text("hashwatch: keys", style="bold"))
            yield Static(table, id="help-keys")
            yield Static(Text(UNITS, style="dim"))
            yield Static(Text("esc, ? or q closes this help; p pauses repaints", style="italic"))
