"""Difficulty and epoch panel: difficulty in T, last retarget %, a progress bar through the
epoch, projected change with its band, blocks remaining and ETA, halving countdown."""

from __future__ import annotations

import datetime as dt

from rich.console import Group
from rich.text import Text

from tui import format as fmt
from tui.widgets.panel import Panel

EPOCH = 2016
HALVING = 210_000
#: the halving countdown uses the nominal interval: it is years away, precision is not news
NOMINAL_INTERVAL_S = 600


class DifficultyPanel(Panel):
    TITLE = "Difficulty & epoch"

    def epoch_done(self) -> int | None:
        remaining = self.metric("retarget_blocks_remaining")
        if remaining is not None:
            return EPOCH - int(remaining)
        tip = self.metric("tip_height")
        return None if tip is None else int(tip) % EPOCH

    def build(self) -> Group:
        change = self.metric("difficulty_change_pct")
        head = Text.assemble(
            self.mtext("difficulty", fmt.difficulty, style="bold"),
            ("  last retarget ", "dim"),
            self.mtext(
                "difficulty_change_pct", lambda v: fmt.pct(v, 2), style=fmt.signed_style(change)
            ),
        )
        done = self.epoch_done()
        remaining = self.metric("retarget_blocks_remaining")
        width = max(6, self.content_size.width - 24)
        progress = Text.assemble(
            ("epoch ", "dim"),
            fmt.bar(None if done is None else done / EPOCH, width),
            f" {fmt.pct(None if done is None else done / EPOCH * 100, 0, sign=False)}",
            f"  {fmt.num(remaining)} left",
        )
        band = self.metric("difficulty_projected_band_pct")
        eta = self.metric("retarget_eta")
        eta_in = None if eta is None else eta - self.now
        projected = Text.assemble(
            ("next ", "dim"),
            self.mtext("difficulty_projected_change_pct", lambda v: fmt.pct(v, 2)),
            (f" ±{band:.1f}" if band is not None else "", "dim"),
            ("  ETA ", "dim"),
            fmt.value_text(fmt.duration(eta_in), stale=self.is_stale("retarget_eta")),
        )
        if eta is not None and not self.narrow:
            when = dt.datetime.fromtimestamp(eta, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            projected.append(f" ({when})", style="dim")
        tip = self.metric("tip_height")
        halving = Text("halving ", style="dim")
        if tip is None:
            halving.append(fmt.DASH)
        else:
            blocks = HALVING * (int(tip) // HALVING + 1) - int(tip)
            halving.append(f"{blocks:,} blocks", style="")
            halving.append(f" ~{fmt.duration(blocks * NOMINAL_INTERVAL_S)}")
        return Group(head, progress, projected, halving)
