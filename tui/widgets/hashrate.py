"""Hashrate panel: 1d/3d/7d/30d in EH/s with their uncertainty, implied hashrate, distance
from the 30- and 90-day peaks, and a chart of daily hashrate."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.reactive import reactive

from tui import format as fmt
from tui.widgets.panel import Panel, data

DAY = 86400


class HashratePanel(Panel):
    TITLE = "Hashrate (EH/s)"
    TICKS = False

    #: daily network hashrate (UTC day epoch -> H/s), from the store and live backfill points
    daily: reactive[dict[int, float]] = data(dict)

    def _window(self, w: str) -> Text:
        name = f"hashrate_{w}"
        t = Text.assemble((f"{w:>3} ", "dim"), self.mtext(name, self._hr, style="bold"))
        if self.metric(name) is not None:
            t.append(f" ±{fmt.uncertainty_pct(w):.0f}%", style="dim")
        return t

    def _hr(self, v: float | None) -> str:
        # Compact: the unit lives in the title so four windows fit in 38 columns.
        return fmt.hashrate(v, unit=not self.narrow)

    def peak(self, days: int) -> float | None:
        """The snapshot's peak when the metrics engine gives one, else the daily history's."""
        given = self.metric(f"hashrate_peak_{days}d")
        if given is not None:
            return given
        if not self.daily:
            return None
        newest = max(self.daily)
        recent = [h for d, h in self.daily.items() if d > newest - days * DAY]
        return max(recent) if recent else None

    def distance_from_peak(self, days: int) -> float | None:
        h7, peak = self.metric("hashrate_7d"), self.peak(days)
        if h7 is None or not peak:
            return None
        return (h7 / peak - 1.0) * 100.0

    def _implied_and_peaks(self) -> Text:
        """One line; labels shorten when real figures (4-digit EH/s, double-digit percent)
        would wrap it and push the chart off a compact panel."""
        d30, d90 = self.distance_from_peak(30), self.distance_from_peak(90)
        width = self.content_size.width
        labels = (
            (self.lbl("  7d vs peak 30d ", "  peak 30d "), "  90d "),
            ("  vs peak 30d ", "  90d "),
            (" peak30 ", " 90d "),
        )
        line = Text()
        for l30, l90 in labels:
            line = Text.assemble(
                ("impl ", "dim"),
                self.mtext("hashrate_implied", self._hr),
                (l30, "dim"),
                fmt.value_text(fmt.pct(d30)),
                (l90, "dim"),
                fmt.value_text(fmt.pct(d90)),
            )
            if not width or line.cell_len <= width:
                break
        return line

    def build(self) -> Group:
        rows = [
            Text.assemble(self._window("1d"), "  ", self._window("3d")),
            Text.assemble(self._window("7d"), "  ", self._window("30d")),
        ]
        rows.append(self._implied_and_peaks())
        series = [self.daily[d] for d in sorted(self.daily)]
        width = max(8, self.content_size.width - 6)
        height = 1 if self.compact else max(1, self.content_size.height - 4)
        lines = fmt.chart(series, width, height)
        if not lines:
            rows.append(Text("daily: no history yet", style="dim"))
        else:
            for i, line in enumerate(lines):
                label = "daily " if i == len(lines) - 1 else "      "
                rows.append(Text.assemble((label, "dim"), line))
            if not self.compact:
                rows.append(
                    Text(
                        f"      {len(series)} days, {fmt.hashrate(min(series), unit=False)}"
                        f" to {fmt.hashrate(max(series))}",
                        style="dim",
                    )
                )
        return Group(*rows)
