"""Base for the dashboard panels: metric snapshot and wall-clock ``now`` in as reactives.

Panels render Rich text from their reactives only; nothing here reads SQLite or the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from feeds.events import MetricsSnapshot
from tui import format as fmt

#: panels narrower than this (content columns) use short labels
NARROW_BELOW = 48


class Panel(Widget):
    """A titled panel. Subclasses set ``TITLE`` and implement ``render``."""

    DEFAULT_CSS = """
    Panel {
        height: 1fr;
        padding: 0 1;
        border-top: solid $primary;
        border-title-align: left;
        border-title-style: bold;
    }
    """

    TITLE = ""
    #: False for panels that show no ages: the once-a-second tick then costs them nothing
    TICKS = True
    #: False for panels that show no metric: a new snapshot does not repaint them
    USES_SNAPSHOT = True

    #: the newest metrics (DOMAIN.md names); None until the first snapshot arrives
    snapshot: reactive[MetricsSnapshot | None] = reactive(None)
    #: wall-clock seconds, ticked once a second by the App from its injected clock
    now: reactive[float] = reactive(0.0)

    def on_mount(self) -> None:
        self.border_title = self.TITLE

    def metric(self, name: str) -> float | None:
        snap = self.snapshot
        return None if snap is None else snap.values.get(name)

    def is_stale(self, name: str) -> bool:
        snap = self.snapshot
        return snap is not None and name in snap.stale

    def mtext(self, name: str, render: Callable[[float | None], str], *, style: str = "") -> Text:
        """A metric formatted, with "—" when missing and "(stale)" when from stale inputs."""
        return fmt.value_text(render(self.metric(name)), stale=self.is_stale(name), style=style)

    def lbl(self, long: str, short: str) -> str:
        """A label that shortens when the panel is narrow (two columns at 80, three at 120)."""
        return short if self.narrow else long

    @property
    def narrow(self) -> bool:
        return self.content_size.width < NARROW_BELOW

    @property
    def compact(self) -> bool:
        """The vertical budget is tight (anything but a wide *and* tall terminal)."""
        if not self.is_mounted:
            return True
        screen = self.screen
        return not (screen.has_class("-wide") and screen.has_class("-tall"))
