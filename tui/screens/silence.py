"""Choose how long to silence one alert: 1 h, 4 h or 24 h (dismisses with seconds or None)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

CHOICES = (("1 hour   (1)", 3600), ("4 hours  (4)", 4 * 3600), ("24 hours (2)", 24 * 3600))


class SilenceScreen(ModalScreen[int | None]):
    DEFAULT_CSS = """
    SilenceScreen { align: center middle; }
    SilenceScreen > Vertical {
        width: 44; height: auto; border: round $warning; background: $surface; padding: 0 1;
    }
    SilenceScreen OptionList { height: auto; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="silence.cancel"),
        Binding("1", "choose(0)", "1 h", show=False, id="silence.1h"),
        Binding("4", "choose(1)", "4 h", show=False, id="silence.4h"),
        Binding("2", "choose(2)", "24 h", show=False, id="silence.24h"),
    ]

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble("Silence ", (self.rule, "bold"), " for:"))
            yield OptionList(*(Option(label, id=f"s{secs}") for label, secs in CHOICES))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_choose(event.option_index)

    def action_choose(self, index: int) -> None:
        self.dismiss(CHOICES[index][1])

    def action_cancel(self) -> None:
        self.dismiss(None)
