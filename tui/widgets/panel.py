"""Base for the dashboard panels: metric snapshot and wall-clock ``now`` in as reactives.

Panels render Rich text from their reactives only; nothing here reads SQLite or the bus.

Repaints happen only when what a panel shows changes. Inputs are ``data`` reactives (no
automatic repaint); when any of them changes, the panel rebuilds its content once (after the
current batch of assignments) and asks Textual for a repaint only if the text or styles differ
from what it last asked to show. So a new metric snapshot that moves nothing a panel shows, or
a once-a-second tick on a panel whose ages read the same, costs a string build, not a paint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.geometry import Size
from textual.reactive import Reactive, reactive
from textual.widget import Widget

from feeds.events import MetricsSnapshot
from tui import format as fmt

#: panels narrower than this (content columns) use short labels
NARROW_BELOW = 48


def data(default: Any) -> Any:
    """A panel input: changing it repaints the panel only if the shown content changes."""
    return reactive(default, repaint=False)


def signature(r: RenderableType) -> object:
    """What a renderable shows, comparable with ``==`` (a fresh object for unknown kinds)."""
    if isinstance(r, Text):
        return (r.plain, tuple(r.spans), str(r.style), r.justify, r.overflow, r.no_wrap, r.end)
    if isinstance(r, Group):
        return tuple(signature(x) for x in r.renderables)
    return object()  # never equal: always repaint


class Panel(Widget):
    """A titled panel. Subclasses set ``TITLE`` and implement ``build``."""

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
    #: names of the ``data`` inputs (collected per subclass)
    _inputs: tuple[str, ...] = ()

    #: the newest metrics (DOMAIN.md names); None until the first snapshot arrives
    snapshot: reactive[MetricsSnapshot | None] = data(None)
    #: wall-clock seconds, ticked once a second by the App from its injected clock
    now: reactive[float] = data(0.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, Panel):
                names.update((k, None) for k, v in vars(klass).items() if isinstance(v, Reactive))
        cls._inputs = tuple(names)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_pending = False
        self._shown: object = None  # signature of the content last sent to the screen
        self._built: tuple[Size, RenderableType] | None = None  # content for the next paint

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        for name in self._inputs:
            self.watch(self, name, self._input_changed, init=False)

    def _input_changed(self) -> None:
        self._built = None
        if not self._check_pending:
            # One check after the whole batch of assignments (a flush sets several inputs).
            self._check_pending = True
            self.call_next(self._repaint_if_changed)

    def _repaint_if_changed(self) -> None:
        self._check_pending = False
        if not self.is_mounted:
            return
        content = self.build()
        shown = signature(content)
        self._built = (self.content_size, content)
        if shown != self._shown:
            self._shown = shown
            self.refresh()

    def _on_focus(self, event: Any) -> None:
        self._built = None  # the selection mark depends on focus
        super()._on_focus(event)

    def _on_blur(self, event: Any) -> None:
        self._built = None
        super()._on_blur(event)

    def render(self) -> RenderableType:
        built = self._built
        if built is not None and built[0] == self.content_size:
            return built[1]
        content = self.build()
        self._built = (self.content_size, content)
        return content

    def build(self) -> RenderableType:
        """The panel's content from its inputs (pure: called only to compare or to paint)."""
        return Text("")

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
