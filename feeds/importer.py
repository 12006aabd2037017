"""``hashwatch import blocks|prices FILE.csv``: history an operator brings from elsewhere.

Rules (README documents them for operators):

* A header row is required; column names are matched case-insensitively. Unknown columns are
  ignored and named once in the report.
* ``time`` is epoch seconds or ISO 8601 (``2026-02-19T18:54:35Z``, ``...+01:00``). An ISO time
  without an offset is taken as UTC. Epoch values that look like milliseconds are rejected.
* Blocks need ``height,time,bits``. ``bits`` is exactly 8 hex digits with or without ``0x``
  (``1701f303``, as explorers print it), otherwise a decimal integer (``386003715``). Optional:
  ``hash`` (``block_hash`` is accepted as the same column), ``fees_sats``, ``reward_sats``,
  ``tx_count``, ``pool``. A row without a hash gets the placeholder ``import:<height>``: it
  counts like any block, never displaces a real block already stored, and is replaced
  (without a reorg) when the real block at that height arrives from a feed. Imported blocks
  are stored as backfill: their first-seen time is their header time.
* Prices need ``time,price_usd`` and optionally ``source`` (default ``import``; use ``ref`` to
  extend the reference-price history). They become 1-minute candles (open/close = earliest/
  latest row of the minute); an imported minute replaces any stored candle of the same
  source and minute, so importing a file twice gives the same result.
* Any bad row makes the whole import fail with every problem (up to 20) listed by line
  number; nothing is written unless the whole file is good (one transaction).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from feeds.errors import ImportFileError
from feeds.events import Block
from feeds.store import PLACEHOLDER_PREFIX, Store, difficulty_from_bits

MAX_REPORTED_ERRORS = 20
IMPORT_SOURCE = "import"
# Before the genesis block / after year 2200: anything outside is a unit mistake.
_MIN_TIME = 1231006505
_MAX_TIME = 7258118400
_HEX_BITS = re.compile(r"^(?:0[xX])?([0-9a-fA-F]{8})$")
_HASH = re.compile(r"^[0-9a-fA-F]{64}$")

BLOCK_REQUIRED = ("height", "time", "bits")
BLOCK_OPTIONAL = ("hash", "fees_sats", "reward_sats", "tx_count", "pool")
BLOCK_ALIASES = {"block_hash": "hash"}
PRICE_REQUIRED = ("time", "price_usd")
PRICE_OPTIONAL = ("source",)


@dataclass(frozen=True)
class ImportReport:
    path: Path
    kind: str  # "blocks" or "prices"
    rows: int
    #: blocks newly stored, or candles written
    written: int
    ignored_columns: tuple[str, ...] = ()
    first: float | None = None  # lowest height / earliest time
    last: float | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        if self.kind == "blocks":
            what = (
                f"imported {self.rows} block rows from {self.path} "
                f"(heights {self.first:.0f}..{self.last:.0f}; {self.written} new)"
            )
        else:
            what = (
                f"imported {self.rows} price rows from {self.path} as {self.written} "
                f"1-minute candles (source {', '.join(self.sources)})"
            )
        if self.ignored_columns:
            what += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return what


class _Rows:
    """Reads a CSV file into (line number, {column: value}) with the file-level checks."""

    def __init__(
        self,
        path: Path,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        try:
            self.text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ImportFileError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImportFileError(f"{path} is a directory, not a CSV file") from None
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"{path} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not self.text.strip():
            raise ImportFileError(
                f"{path} is empty: expected a header row with {', '.join(required)}"
            )
        reader = csv.reader(self.text.splitlines(keepends=True))
        header = next(reader)
        names = [h.strip().lower() for h in header]
        aliases = aliases or {}
        self.columns: dict[str, int] = {}
        ignored: list[str] = []
        for index, name in enumerate(names):
            canonical = aliases.get(name, name)
            if canonical in required or canonical in optional:
                if canonical in self.columns:
                    raise ImportFileError(f"{path}: column {canonical!r} appears twice")
                self.columns[canonical] = index
            elif name:
                ignored.append(header[index].strip())
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ImportFileError(
                f"{path}: missing required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (header has: {', '.join(h.strip() for h in header)})"
            )
        self.ignored = tuple(ignored)
        self._reader = reader

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        for row in self._reader:
            line = self._reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            yield (
                line,
                {
                    name: (row[i].strip() if i < len(row) else "")
                    for name, i in self.columns.items()
                },
            )


class _Errors:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []
        self.count = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append(f"  line {line}: {message}")

    def raise_if_any(self, what: str) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise ImportFileError(
            f"{self.path}: {self.count} bad row{'s' if self.count > 1 else ''}; "
            f"no {what} were imported:\n" + "\n".join(self.items) + tail
        )


def parse_time(text: str) -> float:
    """Epoch seconds or ISO 8601 -> epoch seconds. Raises ``ValueError`` with a reason."""
    if not text:
        raise ValueError("time is empty")
    try:
        value = float(text)
    except ValueError:
        iso = text.replace(" ", "T", 1) if "T" not in text and " " in text else text
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            raise ValueError(
                f"time {text!r} is neither epoch seconds nor ISO 8601 (e.g. 2026-02-19T18:54:35Z)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # documented: naive ISO times are UTC
        value = parsed.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"time {text!r} is not a number")
    if value > _MAX_TIME and value / 1000 <= _MAX_TIME:
        raise ValueError(f"time {text!r} looks like milliseconds; epoch seconds expected")
    if not _MIN_TIME <= value <= _MAX_TIME:
        raise ValueError(f"time {text!r} is outside 2009-01-03 .. 2200-01-01")
    return value


def parse_bits(text: str) -> int:
    """``1701f303`` / ``0x1701f303`` (exactly 8 hex digits) or a decimal integer."""
    m = _HEX_BITS.match(text)
    if m:
        bits = int(m.group(1), 16)
    elif text.isdigit():
        bits = int(text)
    else:
        raise ValueError(
            f"bits {text!r} is neither 8 hex digits (e.g. 1701f303) nor a decimal integer"
        )
    try:
        difficulty_from_bits(bits)
    except ValueError as exc:
        raise ValueError(f"bits {text!r} is not a valid compact target ({exc})") from None
    return bits


def _int(name: str, text: str, *, optional: bool = True) -> int | None:
    if not text:
        if optional:
            return None
        raise ValueError(f"{name} is empty")
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{name} {text!r} is negative")
    return value


def import_blocks_csv(store: Store, path: str | Path) -> ImportReport:
    """Import block headers from CSV (see the module docstring); all or nothing."""
    path = Path(path)
    rows = _Rows(path, BLOCK_REQUIRED, BLOCK_OPTIONAL, BLOCK_ALIASES)
    errors = _Errors(path)
    parsed: list[Block] = []
    seen: dict[int, int] = {}
    for line, row in rows:
        try:
            height = _int("height", row["height"], optional=False)
            assert height is not None  # optional=False guarantees it
            if height in seen:
                raise ValueError(f"height {height} already given on line {seen[height]}")
            block_time = parse_time(row["time"])
            if block_time != int(block_time):
                raise ValueError(f"block time {row['time']!r} is not a whole second")
            bits = parse_bits(row["bits"])
            raw_hash = row.get("hash", "")
            if raw_hash and not _HASH.match(raw_hash):
                raise ValueError(f"hash {raw_hash!r} is not 64 hex digits")
            block = Block(
                height=height,
                hash=raw_hash.lower() or f"{PLACEHOLDER_PREFIX}{height}",
                prev_hash=None,
                time=int(block_time),
                bits=bits,
                source=IMPORT_SOURCE,
                received_at=block_time,
                fees_sats=_int("fees_sats", row.get("fees_sats", "")),
                reward_sats=_int("reward_sats", row.get("reward_sats", "")),
                tx_count=_int("tx_count", row.get("tx_count", "")),
                pool=row.get("pool") or None,
                backfill=True,
            )
        except ValueError as exc:
            errors.add(line, str(exc))
            continue
        seen[height] = line
        parsed.append(block)
    errors.raise_if_any("blocks")
    if not parsed:
        raise ImportFileError(f"{path} has a header but no data rows")

    # Link each block to the previous height of the same file, so the imported chain is
    # consistent; the first block's parent is unknown.
    by_height = {b.height: b.hash for b in parsed}
    blocks = [
        dataclasses.replace(b, prev_hash=by_height.get(b.height - 1))
        for b in sorted(parsed, key=lambda b: b.height)
    ]
    before = store.block_count(include_orphaned=True)
    store.write_events(blocks)  # one transaction: all or nothing
    written = store.block_count(include_orphaned=True) - before
    return ImportReport(
        path=path,
        kind="blocks",
        rows=len(blocks),
        written=max(written, 0),
        ignored_columns=rows.ignored,
        first=blocks[0].height,
        last=blocks[-1].height,
    )


def import_prices_csv(store: Store, path: str | Path) -> ImportReport:
    """Import prices from CSV as 1-minute candles (see the module docstring); all or nothing."""
    path = Path(path)
    rows = _Rows(path, PRICE_REQUIRED, PRICE_OPTIONAL)
    errors = _Errors(path)
    points: list[tuple[str, float, float]] = []
    seen: dict[tuple[str, float], int] = {}
    for line, row in rows:
        try:
            at = parse_time(row["time"])
            raw = row["price_usd"]
            try:
                price = float(raw)
            except ValueError:
                raise ValueError(f"price_usd {raw!r} is not a number") from None
            if not math.isfinite(price) or price <= 0:
                raise ValueError(f"price_usd {raw!r} must be a positive number")
            source = row.get("source") or IMPORT_SOURCE
            key = (source, at)
            if key in seen:
                raise ValueError(f"{source} time {row['time']} already given on line {seen[key]}")
        except ValueError as exc:
            errors.add(line, str(exc))
            continue
        seen[key] = line
        points.append((source, at, price))
    errors.raise_if_any("prices")
    if not points:
        raise ImportFileError(f"{path} has a header but no data rows")

    points.sort()
    candles: dict[tuple[str, int], list[float]] = {}
    for source, at, price in points:
        minute = int(at // 60) * 60
        c = candles.get((source, minute))
        if c is None:
            candles[(source, minute)] = [price, price, price, price, 1]
        else:  # points are in time order: the last one seen closes the minute
            c[1] = max(c[1], price)
            c[2] = min(c[2], price)
            c[3] = price
            c[4] += 1
    with store.transaction() as db:
        db.conn.executemany(
            "INSERT OR REPLACE INTO candles (source, minute, open, high, low, close, n) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s, m, o, h, lo, c, int(n)) for (s, m), (o, h, lo, c, n) in candles.items()],
        )
    return ImportReport(
        path=path,
        kind="prices",
        rows=len(points),
        written=len(candles),
        ignored_columns=rows.ignored,
        first=points[0][1],
        last=max(p[1] for p in points),
        sources=tuple(sorted({s for s, _, _ in points})),
    )
