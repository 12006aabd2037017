"""The dashboard's cheap paths draw exactly what the generic ones would, and repaint only what
changed (bench.tui measures the CPU; these pin the behaviour that keeps it low)."""

from __future__ import annotations

import asyncio
import io
import random

import pytest
from fake_runtime import NOW, TIP, FakeRuntime, block, make_history_db, script, settle, snapshot
from rich.console import Console, Group
from rich.table import Table
from textual.visual import Visual, visualize

from feeds.bus import Bus
from feeds.events import PriceTick
from tui import bridge, history
from tui.app import make_app
from tui.widgets.blocks import COLUMNS, LEFT, table_lines
from tui.widgets.panel import Panel
from tui.widgets.price import PricePanel


def _app(tmp_path):
    runtime = FakeRuntime(script(), db_path=make_history_db(tmp_path / "h.db"), demo=True)
    return make_app(None, runtime, clock=lambda: NOW), runtime


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_one_line_parts_render_as_textual_would(tmp_path, size):
    app, _ = _app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        fast = 0
        for panel in app.query(Panel):
            content = panel.build()
            if not isinstance(content, Group):
                continue
            for part in content.renderables:
                strips = panel._line_strip(part, panel.size.width, panel.visual_style)
                if strips is None:
                    continue
                fast += 1
                generic = Visual.to_strips(
                    panel,
                    visualize(panel, Group(part), markup=False),
                    panel.size.width,
                    None,
                    panel.visual_style,
                )
                assert strips == generic, (type(panel).__name__, part.plain)
        assert fast >= 25  # the cheap path is the common one


def test_blocks_table_matches_rich_layout():
    rng = random.Random(5)
    words = ["", "901,000", "10m 30s", "—", "Foundry USA", "unknown", "3,709", "0.049", "₿"]
    checked = 0
    for _ in range(300):
        cells = [COLUMNS] + [
            tuple(rng.choice(words) + "x" * rng.randint(0, 3) for _ in COLUMNS)
            for _ in range(rng.randint(1, 12))
        ]
        width = rng.randint(40, 180)
        lines = table_lines(cells, width)
        if lines is None:  # too narrow: the panel falls back to a Rich table
            continue
        table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False)
        for name in COLUMNS:
            table.add_column(name, justify="left" if name in LEFT else "right", no_wrap=True)
        for row in cells[1:]:
            table.add_row(*row)
        console = Console(width=width, file=io.StringIO(), record=True)
        console.print(table)
        assert console.export_text().split("\n")[:-1] == lines
        checked += 1
    assert checked > 150


async def test_unchanged_content_is_not_repainted_and_a_tick_repaints_its_lines(
    tmp_path, monkeypatch
):
    calls: list[tuple[str, tuple]] = []
    original = Panel.refresh

    def recording(self, *regions, **kwargs):
        calls.append((type(self).__name__, regions))
        return original(self, *regions, **kwargs)

    app, runtime = _app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        monkeypatch.setattr(Panel, "refresh", recording)
        # The same figures in a new snapshot object: nothing on screen changes.
        runtime.publish(snapshot())
        await settle(app, pilot)
        assert calls == []
        # A new price on one exchange: only the price panel, only the line(s) it is on.
        runtime.publish(PriceTick("kraken", 104_321.0, NOW, NOW))
        await settle(app, pilot)
        assert [name for name, _ in calls] == ["PricePanel"]
        regions = calls[0][1]
        price = app.query_one(PricePanel)
        assert regions and sum(r.height for r in regions) < price.size.height
        assert any("104,321" in s.text for s in price._lines)


async def test_theme_change_renders_lines_again(tmp_path):
    app, _ = _app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        price = app.query_one(PricePanel)
        before = price.render_line(0)
        await pilot.press("d")
        await pilot.pause()
        after = price.render_line(0)
        assert after.text == before.text and after != before  # same text, new colours


async def test_pump_gathers_ticks_but_a_block_ends_the_wait():
    bus = Bus()
    posted: list = []
    task = asyncio.create_task(bridge.pump(bus, posted.append, every=lambda: 30.0))
    try:
        await asyncio.sleep(0)
        bus.publish(PriceTick("kraken", 1.0, NOW, NOW))
        for _ in range(200):
            if posted:
                break
            await asyncio.sleep(0.001)
        assert len(posted) == 1  # the first event after a quiet spell goes out at once
        bus.publish(PriceTick("coinbase", 2.0, NOW, NOW))
        await asyncio.sleep(0.01)
        assert len(posted) == 1  # a tick waits for the interval (or something urgent)
        bus.publish(block(TIP + 1, at=NOW))
        for _ in range(200):
            if len(posted) == 3:
                break
            await asyncio.sleep(0.001)
        assert [type(m).__name__ for m in posted] == [
            "PriceUpdated",
            "PriceUpdated",
            "BlockArrived",
        ]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_history_minute_unit_from_one_row(tmp_path):
    import sqlite3

    for minute, scale in ((NOW // 60 * 60, 1.0), (NOW // 60, 60.0)):
        path = tmp_path / f"u{int(scale)}.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE metric_samples (name TEXT, minute INTEGER, value REAL)")
            conn.execute("INSERT INTO metric_samples VALUES ('price_usd', ?, 1.0)", (minute,))
        conn = history.connect_ro(path)
        try:
            assert history._minute_scale(conn, "metric_samples") == scale
            assert history.read_metrics_at(conn, NOW)["price_usd"] == 1.0
        finally:
            conn.close()
