"""Blocks panel: recent blocks with height, age, interval, pool, transactions, fees, reward."""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from feeds.events import Block
from tui import format as fmt
from tui.messages import BlockRow
from tui.widgets.panel import Panel, data

KEEP = 30


def row_from_block(b: Block) -> BlockRow:
    # Backfilled blocks were never "seen" live: their age counts from the header time.
    first_seen = float(b.time) if b.backfill else b.received_at
    return BlockRow(
        height=b.height,
        hash=b.hash,
        time=b.time,
        first_seen=first_seen,
        tx_count=b.tx_count,
        fees_sats=b.fees_sats,
        reward_sats=b.reward_sats,
        pool=b.pool,
    )


def merge(
    rows: Iterable[BlockRow], new: Iterable[BlockRow], keep: int = KEEP
) -> tuple[BlockRow, ...]:
    """Newest first, one row per height; a new hash at a known height (reorg) replaces the
    old row and drops the stale rows above it."""
    by_height = {r.height: r for r in rows}
    for r in new:
        old = by_height.get(r.height)
        if old is not None and old.hash != r.hash:
            for h in [h for h in by_height if h > r.height]:
                del by_height[h]
        by_height[r.height] = r
    return tuple(sorted(by_height.values(), key=lambda r: -r.height)[:keep])


def _interval(newer: BlockRow, older: BlockRow | None) -> str:
    if older is None or older.height != newer.height - 1:
        return fmt.DASH
    delta = newer.time - older.time
    # Header times are not monotonic: a negative interval is real data, shown as such.
    return ("-" if delta < 0 else "") + fmt.duration(abs(delta))


COLUMNS = ("height", "age", "interval", "pool", "tx", "fees ₿", "reward ₿")
#: pool is the only left-aligned column
LEFT = frozenset({"pool"})


def _distribute(total: int, ratios: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``ratios``, rounding up as it goes (Rich's
    ``ratio_distribute``, so the columns land where a Rich ``Table(expand=True)`` puts them)."""
    left, remaining, out = sum(ratios), total, []
    for r in ratios:
        share = math.ceil(r * remaining / left) if left > 0 else remaining
        out.append(share)
        left -= r
        remaining -= share
    return out


def table_lines(cells: list[tuple[str, ...]], width: int) -> list[str] | None:
    """The table as lines of exactly ``width`` cells: the layout of ``Table(box=None,
    expand=True, padding=(0, 1), pad_edge=False)`` with no-wrap columns, built with string
    arithmetic (a Rich table measures and renders every cell as a renderable: ~30x slower,
    and the ages make this panel repaint every second). None when the columns do not fit."""
    n = len(COLUMNS)
    pads = [(0 if i == 0 else 1, 0 if i == n - 1 else 1) for i in range(n)]
    content = [max(cell_len(row[i]) for row in cells) for i in range(n)]
    widths = [max(1, c + lp + rp) for c, (lp, rp) in zip(content, pads, strict=True)]
    spare = width - sum(widths)
    if spare < 0:
        return None
    if spare:
        widths = [w + extra for w, extra in zip(widths, _distribute(spare, widths), strict=True)]
    lines = []
    for row in cells:
        parts = []
        for i, (cell, w, (lp, rp)) in enumerate(zip(row, widths, pads, strict=True)):
            gap = w - lp - rp - cell_len(cell)
            body = cell + " " * gap if COLUMNS[i] in LEFT else " " * gap + cell
            parts.append(" " * lp + body + " " * rp)
        lines.append("".join(parts))
    return lines


class BlocksPanel(Panel):
    TITLE = "Blocks"
    USES_SNAPSHOT = False

    DEFAULT_CSS = """
    BlocksPanel { height: 1fr; min-height: 4; }
    """

    rows: reactive[tuple[BlockRow, ...]] = data(tuple)

    def cells(self) -> list[tuple[str, ...]]:
        """Header and the rows that fit, as strings."""
        fit = max(1, self.content_size.height - 1) if self.content_size.height else len(self.rows)
        rows = self.rows
        out: list[tuple[str, ...]] = [COLUMNS]
        for i, r in enumerate(rows[:fit]):
            older = rows[i + 1] if i + 1 < len(rows) else None
            out.append(
                (
                    f"{r.height:,}",
                    fmt.age(self.now - r.first_seen),
                    _interval(r, older),
                    (r.pool or "unknown")[:16],
                    fmt.num(r.tx_count),
                    fmt.btc(r.fees_sats, 3),
                    fmt.btc(r.reward_sats, 3),
                )
            )
        return out

    def build(self) -> Group | Table | Text:
        if not self.rows:
            return Text("no blocks yet", style="dim")
        cells = self.cells()
        lines = table_lines(cells, self.content_size.width)
        if lines is not None:
            # One Text per line: a tick that changes one age re-renders one line.
            return Group(Text(lines[0], style="dim"), *(Text(line) for line in lines[1:]))
        # Too narrow for every column: let Rich shrink them.
        table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="dim")
        for name in COLUMNS:
            table.add_column(name, justify="left" if name in LEFT else "right", no_wrap=True)
        for row in cells[1:]:
            table.add_row(*row)
        return table
