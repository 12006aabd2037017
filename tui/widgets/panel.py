"""Base for the dashboard panels: metric snapshot and wall-clock ``now`` in as reactives.

Panels render Rich text from their reactives only; nothing here reads SQLite or the bus.

Repaints happen only where what a panel shows changes. Inputs are ``data`` reactives (no
automatic repaint); when any of them changes, the panel rebuilds its content once (after the
current batch of assignments) as Rich text, renders only the parts (lines of a ``Group``)
whose text or styles differ from the last render, and marks only the screen lines that changed
as dirty. So a snapshot that moves nothing a panel shows, or the once-a-second tick on a
panel whose ages read the same, costs a string build; a new price repaints one line, not the
panel with its chart. The panels render through Textual's line API (``render_line``); the
strips are the ones Textual's own ``render()`` path would produce (same ``visualize`` and
``Visual.to_strips``), so the screen is identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.segment import Segment
from rich.text import Text
from textual.geometry import Region, Size
from textual.reactive import Reactive, reactive
from textual.strip import Strip
from textual.style import Style
from textual.visual import Visual, visualize
from textual.widget import Widget

from feeds.events import MetricsSnapshot
from tui import format as fmt

#: panels narrower than this (content columns) use short labels
NARROW_BELOW = 48
#: Rich's ``Text.__rich_console__`` renders ``Text("\n").join(lines)``; so do we
_JOIN = Text("\n")


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


def _runs(ys: list[int], width: int) -> list[Region]:
    """Consecutive line numbers as regions one screen line high each run."""
    out: list[Region] = []
    start = prev = ys[0]
    for y in ys[1:]:
        if y != prev + 1:
            out.append(Region(0, start, width, prev - start + 1))
            start = y
        prev = y
    out.append(Region(0, start, width, prev - start + 1))
    return out


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
        #: what the lines were rendered for: content size and base style (theme, focus)
        self._lines_key: tuple[Size, Style] | None = None
        self._lines: list[Strip] = []
        #: rendered parts of the current content by signature (reused while unchanged)
        self._parts: dict[object, list[Strip]] = {}

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        for name in self._inputs:
            self.watch(self, name, self._input_changed, init=False)

    def _input_changed(self) -> None:
        if not self._check_pending:
            # One check after the whole batch of assignments (a flush sets several inputs),
            # run by the App's own message loop: no wake-up of this widget's task.
            self._check_pending = True
            self.app.call_next(self._repaint_if_changed)

    def _on_focus(self, event: Any) -> None:
        self._input_changed()  # the selection mark depends on focus
        super()._on_focus(event)

    def _on_blur(self, event: Any) -> None:
        self._input_changed()
        super()._on_blur(event)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines_key = None  # theme or CSS changed: render everything again
        self._parts = {}

    def _render_lines(self) -> list[Strip]:
        """Render the current content, reusing the strips of unchanged parts."""
        content = self.build()
        width, height = self.size
        style = self.visual_style
        key = (self.size, style)
        if key != self._lines_key:
            self._parts = {}
        single = not isinstance(content, Group)
        parts = [content] if single else list(content.renderables)
        fresh: dict[object, list[Strip]] = {}
        lines: list[Strip] = []
        for part in parts:
            sig = signature(part)
            strips = fresh.get(sig) or self._parts.get(sig)
            if strips is None:
                strips = None if single else self._line_strip(part, width, style)
            if strips is None:
                # A part alone in a Group renders exactly as it does inside the panel's Group.
                visual = visualize(self, part if single else Group(part), markup=False)
                strips = Visual.to_strips(self, visual, width, None, style)
            fresh[sig] = strips
            lines.extend(strips)
            if len(lines) >= height:
                break
        self._parts = fresh
        self._lines_key = key
        return lines[:height]

    def _line_strip(self, part: RenderableType, width: int, style: Style) -> list[Strip] | None:
        """A one-line ``Text`` part rendered straight to its strip (None: not such a part).

        Same segments as ``Visual.to_strips`` of the part in a ``Group`` (Rich's Text joins
        its lines, renders spans, Textual adds the panel's base style), without the generic
        machinery around it (console options, measuring, wrapping, cropping, link styles),
        which costs ten times the rendering of a short line. Lines that could wrap, pad or
        carry links take the generic path.
        """
        if not isinstance(part, Text) or part.end != "\n" or part.justify not in (None, "default"):
            return None
        plain = part.plain
        if "\n" in plain or "\t" in plain or cell_len(plain) > width:
            return None
        console = self.app.console
        base = console.get_style(style.rich_style)
        segments = []
        for seg in _JOIN.join([part]).render(console):
            text, seg_style = seg.text, seg.style
            combined = base + seg_style if base else seg_style
            if combined is not None and combined._meta is not None:
                return None  # links or click meta: leave them to Textual
            segments.append(Segment(text, combined) if combined else Segment(text))
        return [Strip(segments)]

    def _repaint_if_changed(self) -> None:
        self._check_pending = False
        if not self.is_mounted or not self.size:
            return
        old_key, old = self._lines_key, self._lines
        new = self._render_lines()
        self._lines = new
        if old_key != self._lines_key or len(new) != len(old):
            # Re-measure only auto-height panels (the feeds footer), only when needed.
            height = self.styles.height
            self.refresh(layout=height is not None and height.is_auto)
            return
        width = self.size.width
        changed = [
            y for y, (a, b) in enumerate(zip(old, new, strict=True)) if a is not b and a != b
        ]
        if changed:
            self.refresh(*_runs(changed, width))

    def render_line(self, y: int) -> Strip:
        """Textual's line API: lines come from the cache the checks keep current."""
        if self.text_selection is not None:
            return super().render_line(y)  # selection highlighting: Textual's own path
        if self._lines_key != (self.size, self.visual_style):
            self._lines = self._render_lines()
        lines = self._lines
        if y < len(lines):
            return lines[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def render(self) -> RenderableType:
        return self.build()

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
