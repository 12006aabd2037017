"""``hashwatch run --attach``: a read-only view of another collector's database.

The attached collector must notice new data (SQLite's data_version), republish it as bus
events, and never write data; operator actions go through the operator_actions table.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from support_store import T0, chain, dump, tick

from alerts.collector import AttachedCollector
from feeds.events import AlertState, AlertTransition, Block, MetricsSnapshot, PriceTick
from feeds.store import Store
from tui.config import load_config


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "collector.db"
    with Store.open(path) as store:
        store.write_events(chain(100, 300))
        store.write_events([tick(70_000.0, T0 + 600 * 300)])
    return path


def _config(tmp_path: Path, db: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[database]\npath = '{db}'\n")
    return load_config(cfg)


async def _collect(sub, until, limit_s: float = 10.0) -> list:
    seen: list = []
    async with asyncio.timeout(limit_s):
        while not until(seen):
            seen.extend(await sub.get_batch(timeout=0.2))
    return seen


async def test_attach_republishes_existing_and_new_data_and_writes_nothing(
    tmp_path: Path, db: Path
) -> None:
    attached = AttachedCollector(_config(tmp_path, db), clock=lambda: T0 + 600 * 300 + 30)
    attached.POLL_S = 0.02
    sub = attached.bus.subscribe()
    before = dump(db)
    task = asyncio.create_task(attached.run())
    try:
        first = await _collect(sub, lambda s: any(isinstance(e, MetricsSnapshot) for e in s))
        heights = [e.height for e in first if isinstance(e, Block)]
        assert heights and max(heights) == 300
        assert any(isinstance(e, PriceTick) and e.price_usd == 70_000.0 for e in first)
        snap = next(e for e in first if isinstance(e, MetricsSnapshot))
        assert snap.values["tip_height"] == 300
        assert snap.values["hashrate_1d"] is not None

        # Another connection (the collector) commits a new block and an alert transition.
        with Store.open(db) as store:
            store.write_events(chain(301, 301))
            store.db.conn.execute(
                "INSERT INTO alert_history (rule, severity, previous, state, at, value, "
                "threshold, message) VALUES ('hashprice-floor', 'critical', 'pending', "
                "'firing', ?, 38.7, 40, 'hashprice below $40')",
                (T0 + 600 * 301,),
            )
            store.db.conn.commit()
        after_write = dump(db)
        later = await _collect(
            sub,
            lambda s: (
                any(isinstance(e, AlertTransition) for e in s)
                and any(isinstance(e, Block) and e.height == 301 for e in s)
            ),
        )
        transition = next(e for e in later if isinstance(e, AlertTransition))
        assert transition.rule == "hashprice-floor"
        assert transition.state is AlertState.FIRING
        # Old blocks are not republished as new ones.
        assert [e.height for e in later if isinstance(e, Block)] == [301]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The attached view never wrote anything.
    assert before != after_write
    assert dump(db) == after_write


async def test_attach_operator_actions_go_through_the_table(tmp_path: Path, db: Path) -> None:
    attached = AttachedCollector(_config(tmp_path, db))
    attached.submit_action("silence", rule="hashprice-floor", seconds=3600)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT action, args, done_at FROM operator_actions").fetchall()
    finally:
        conn.close()
    assert rows == [("silence", '{"rule": "hashprice-floor", "seconds": 3600}', None)]
