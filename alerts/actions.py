"""Operator actions (silence, unsilence, reload, test alert) as rows in a table.

The CLI and the dashboard (also in ``--attach`` mode) only insert rows; the running collector
picks them up within seconds and records the result. A silence issued while no collector runs
is applied when it next starts. This is the one write an attached dashboard makes, and it goes
through SQLite's own locking, never through the collector's data tables.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

VALID_ACTIONS = ("silence", "unsilence", "reload", "test_alert")


def submit_action(db_path: Path, action: str, args: dict[str, Any], *, now: float) -> int:
    if action not in VALID_ACTIONS:
        raise ValueError(f"unknown operator action {action!r}")
    from feeds.store import Store

    # Opening through Store applies migrations, so the table exists even on a new database.
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO operator_actions (action, args, created_at) VALUES (?, ?, ?)",
                (action, json.dumps(args, sort_keys=True), now),
            )
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def pending_actions(conn: sqlite3.Connection) -> list[tuple[int, str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT id, action, args FROM operator_actions WHERE done_at IS NULL ORDER BY id"
    ).fetchall()
    out = []
    for row_id, action, args in rows:
        try:
            parsed = json.loads(args or "{}")
        except ValueError:
            parsed = {}
        out.append((int(row_id), str(action), parsed))
    return out
