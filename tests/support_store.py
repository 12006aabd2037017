"""Factories and helpers shared by the store, writer and importer tests."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from feeds.events import Block, PriceTick

BITS = 0x1701F303  # the real bits of retarget period 465
T0 = 1_771_527_275  # header time of block 937,440 (tests/data/blocks_937440_942199.csv)


def h(label: str) -> str:
    """A deterministic 64-hex-digit block hash for a label such as 'A100'."""
    return hashlib.sha256(label.encode()).hexdigest()


def block(
    height: int,
    branch: str = "A",
    *,
    prev_branch: str | None = None,
    received_at: float | None = None,
    **kw: Any,
) -> Block:
    """Block ``<branch><height>`` whose parent is ``<prev_branch or branch><height-1>``."""
    parent = f"{prev_branch or branch}{height - 1}"
    return Block(
        height=height,
        hash=h(f"{branch}{height}"),
        prev_hash=h(parent),
        time=T0 + 600 * height,
        bits=BITS,
        source="test",
        received_at=received_at if received_at is not None else T0 + 600 * height + 5.0,
        **kw,
    )


def chain(lo: int, hi: int, branch: str = "A", **kw: Any) -> list[Block]:
    return [block(n, branch, **kw) for n in range(lo, hi + 1)]


def tick(price: float, at: float, source: str = "coinbase") -> PriceTick:
    return PriceTick(source=source, price_usd=price, time=at, received_at=at + 0.1)


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: to compare whole databases."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def active_hashes(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT height, hash FROM blocks WHERE orphaned = 0"))
    finally:
        conn.close()
