"""Shared helpers for the metrics tests: the real block file and independent recomputations.

The recomputations here are deliberately naive (slices, sums, direct lookups) so they check
the incremental code in ``feeds.chain`` rather than repeat it.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, replace
from pathlib import Path

from feeds.events import Block

BLOCKS_CSV = Path(__file__).parent / "data" / "blocks_937440_942199.csv"


@dataclass(frozen=True)
class Row:
    height: int
    time: int
    bits: int
    difficulty: float
    period: int


@functools.cache
def rows() -> tuple[Row, ...]:
    with BLOCKS_CSV.open(newline="") as f:
        return tuple(
            Row(
                int(r["height"]),
                int(r["time"]),
                int(r["bits"], 16),
                float(r["difficulty"]),
                int(r["retarget_period"]),
            )
            for r in csv.DictReader(f)
        )


def fake_fees(height: int) -> int | None:
    """Deterministic fees: every 3rd block unknown, and a 100-block stretch with none known."""
    if height % 3 == 0 or 940_000 <= height < 940_100:
        return None
    return (height * 7919) % 10_000_000


def hash_of(height: int, branch: str = "") -> str:
    return f"{branch}h{height}"


@functools.cache
def blocks(with_fees: bool = True) -> tuple[Block, ...]:
    """The file as backfilled ``Block`` events with synthetic, linked hashes."""
    return tuple(
        Block(
            height=r.height,
            hash=hash_of(r.height),
            prev_hash=hash_of(r.height - 1),
            time=r.time,
            bits=r.bits,
            source="csv",
            received_at=float(r.time),
            fees_sats=fake_fees(r.height) if with_fees else None,
            backfill=True,
        )
        for r in rows()
    )


def branch(chain: list[Block], fork_height: int, n: int, tag: str, dt: int = 0) -> list[Block]:
    """n blocks of an alternative branch on top of ``fork_height`` of ``chain``.

    ``dt`` shifts their timestamps, so windows that wrongly kept orphans would differ.
    """
    by_h = {b.height: b for b in chain}
    out: list[Block] = []
    prev = by_h[fork_height].hash
    for h in range(fork_height + 1, fork_height + 1 + n):
        top = by_h[max(by_h)]
        src = by_h.get(h) or replace(top, time=top.time + 600 * (h - top.height))
        b = replace(src, height=h, hash=hash_of(h, tag), prev_hash=prev, time=src.time + dt)
        out.append(b)
        prev = b.hash
    return out
