"""Blocks panel: recent blocks with height, age, interval, pool, transactions, fees, reward."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from feeds.events import Block
from tui import format as fmt
from tui.messages import BlockRow
from tui.widgets.panel import Panel

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


class BlocksPanel(Panel):
    TITLE = "Blocks"
    USES_SNAPSHOT = False

    DEFAULT_CSS = """
    BlocksPanel { height: 1fr; min-height: 4; }
    """

    rows: reactive[tuple[BlockRow, ...]] = reactive(tuple)

    def render(self) -> Table | Text:
        if not self.rows:
            return Text("no blocks yet", style="dim")
        table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="dim")
        for name in ("height", "age", "interval", "pool", "tx", "fees ₿", "reward ₿"):
            table.add_column(name, justify="left" if name == "pool" else "right", no_wrap=True)
        fit = max(1, self.content_size.height - 1) if self.content_size.height else len(self.rows)
        rows = self.rows
        for i, r in enumerate(rows[:fit]):
            older = rows[i + 1] if i + 1 < len(rows) else None
            table.add_row(
                f"{r.height:,}",
                fmt.age(self.now - r.first_seen),
                _interval(r, older),
                (r.pool or "unknown")[:16],
                fmt.num(r.tx_count),
                fmt.btc(r.fees_sats, 3),
                fmt.btc(r.reward_sats, 3),
            )
        return table
