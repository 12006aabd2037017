"""Price panel: reference price, each source with its age, 24 h change, a sparkline."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.reactive import reactive

from feeds.events import MetricsSnapshot, PriceTick
from tui import format as fmt
from tui.widgets.panel import Panel, data


class PricePanel(Panel):
    TITLE = "Price BTC/USD"

    #: newest tick per source (ages tick from ``received_at`` against ``now``)
    ticks: reactive[dict[str, PriceTick]] = data(dict)
    #: (minute, reference price) of the last 24 h, oldest first (from the store)
    points: reactive[tuple[tuple[int, float], ...]] = data(tuple)
    #: reference price about 24 h ago (None until a day of history exists)
    price_24h_ago: reactive[float | None] = data(None)
    #: a source whose last tick is older than this is marked stale (config feeds.price_fresh_after)
    fresh_after: float = 60.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Live tail per minute from snapshots, so the sparkline moves without a read. Keyed
        # like the stored candles, so the result does not depend on which arrived first.
        self._tail: dict[int, float] = {}
        self._tail_version = 0
        #: (points, tail version, width, height) -> chart lines: the chart changes about once
        #: a minute, the prices above it up to 4 times a second
        self._chart: tuple[tuple[object, ...], list[str]] | None = None

    def watch_snapshot(self, snap: MetricsSnapshot | None) -> None:
        price = None if snap is None else snap.values.get("price_usd")
        if snap is not None and price is not None:
            minute = int(snap.at // 60) * 60
            if self._tail.get(minute) != price:
                self._tail[minute] = price
                self._tail_version += 1
            horizon = snap.at - 86400
            for old in [m for m in self._tail if m < horizon]:
                del self._tail[old]
                self._tail_version += 1

    def series(self) -> list[float]:
        merged = dict(self.points)
        merged.update(self._tail)
        return [merged[k] for k in sorted(merged)]

    def chart(self, width: int, height: int) -> list[str]:
        """The 24 h chart (``height`` 0: a one-row sparkline), cached until its inputs move."""
        key = (self._tail_version, width, height)
        cached = self._chart
        # the stored points are compared by identity: a history read replaces the tuple
        if cached is not None and cached[0][0] is self.points and cached[0][1:] == key:
            return cached[1]
        series = self.series()
        if height == 0:
            spark = fmt.sparkline(series, width)
            lines = [spark] if spark else []
        else:
            lines = fmt.chart(series, width, height)
        self._chart = ((self.points, *key), lines)
        return lines

    def change_24h(self) -> float | None:
        price, then = self.metric("price_usd"), self.price_24h_ago
        if price is None or not then:
            return None
        return (price / then - 1.0) * 100.0

    def _sources(self) -> list[Text]:
        """One entry per source, packed into lines so an entry never splits across lines."""
        entries = []
        for name, tick in sorted(self.ticks.items()):
            age = max(0.0, self.now - tick.received_at)
            stale = age > self.fresh_after
            e = Text(name, style="dim" if stale else "bold")
            if not self.narrow:
                e.append(f" {fmt.usd(tick.price_usd)}")
            e.append(f" {fmt.age(age)}", style="dim" if stale else "")
            if stale:
                e.append(" stale", style="dim italic")
            entries.append(e)
        if not entries:
            return [Text("no price source yet", style="dim")]
        width = max(10, self.content_size.width)
        lines = [entries[0]]
        for e in entries[1:]:
            if len(lines[-1]) + 3 + len(e) <= width:
                lines[-1] = Text.assemble(lines[-1], (" · ", "dim"), e)
            else:
                lines.append(e)
        return lines

    def build(self) -> Group:
        change = self.change_24h()
        head = Text.assemble(
            self.mtext("price_usd", lambda v: fmt.usd(v), style="bold"),
            "  24h ",
            fmt.value_text(fmt.pct(change), style=fmt.signed_style(change)),
            "  age ",
            self.mtext("price_age_s", fmt.age),
        )
        live = self.metric("price_feeds_live")
        if live is not None and not self.narrow:
            head.append(f"  {int(live)} live", style="dim")
        width = max(8, self.content_size.width - 4)
        sources = self._sources()
        if self.compact:
            spark = self.chart(width, 0)
            chart = Text.assemble(("24h ", "dim"), spark[0] if spark else ("no history yet", "dim"))
            return Group(head, chart, *sources)
        # Roomy layout: the chart fills what the head and the sources leave.
        height = max(1, self.content_size.height - 1 - len(sources))
        lines = self.chart(width, height)
        if not lines:
            return Group(head, *sources, Text("24h: no history yet", style="dim"))
        rows = [
            Text.assemble(("24h " if i == len(lines) - 1 else "    ", "dim"), line)
            for i, line in enumerate(lines)
        ]
        return Group(head, *sources, *rows)
