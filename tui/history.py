"""Read-only SQLite reads for the history views (run in a thread worker, never on a timer).

Each read opens its own ``mode=ro`` connection (the collector's writer thread owns the only
write connection) and tolerates a missing database or table: history is a nicety, the live
panels never wait for it.
"""

from __future__ import annotations

import logging
import pathlib
import sqlite3
from collections.abc import Iterable

from tui.messages import AlertRow, BlockRow, History

log = logging.getLogger(__name__)

DAY = 86400.0
PRICE_POINTS = 24 * 60
DAILY_POINTS = 180
BLOCK_ROWS = 30
ALERT_HISTORY_ROWS = 20
#: names read at ~24 h and ~7 d ago to explain the revenue change
PAST_METRICS = ("hashprice", "price_usd", "difficulty", "fees_avg_144", "subsidy_sats")
#: a ``minute`` column below this is counted in epoch minutes, not epoch seconds
_EPOCH_MINUTES_BELOW = 1e8


def connect_ro(path: pathlib.Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    conn.row_factory = sqlite3.Row
    return conn


def _rows(conn: sqlite3.Connection, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
    try:
        return conn.execute(sql, tuple(args)).fetchall()
    except sqlite3.Error as exc:  # table not created yet, older schema: show what we can
        log.debug("history query failed (%s): %s", exc, sql.split()[0:6])
        return []


def _minute_scale(conn: sqlite3.Connection, table: str) -> float:
    # Any one row tells the unit. Not MAX(minute): the key starts with source/name, so a
    # MAX over the table scans it (0.3 s on a year of metric samples, after every block).
    rows = _rows(conn, f"SELECT minute AS m FROM {table} LIMIT 1")  # table is a constant
    top = rows[0]["m"] if rows else None
    return 60.0 if top is not None and top < _EPOCH_MINUTES_BELOW else 1.0


def read_prices(
    conn: sqlite3.Connection, now: float
) -> tuple[tuple[tuple[int, float], ...], float | None]:
    scale = _minute_scale(conn, "candles")
    since = (now - DAY) / scale
    rows = _rows(
        conn,
        "SELECT minute, close FROM candles WHERE source = 'ref' AND minute >= ? "
        "ORDER BY minute LIMIT ?",
        (since, PRICE_POINTS + 1),
    )
    rows = [r for r in rows if r["close"] is not None]
    points = tuple((int(r["minute"] * scale), float(r["close"])) for r in rows)
    # A 24 h change needs a price from about 24 h ago, not merely the oldest one we hold.
    first = points[0][1] if rows and rows[0]["minute"] * scale <= now - DAY + 1800 else None
    return points, first


def read_daily(conn: sqlite3.Connection) -> tuple[tuple[int, float], ...]:
    rows = _rows(
        conn,
        "SELECT day, AVG(hashrate_hs) AS h FROM daily_history WHERE hashrate_hs IS NOT NULL "
        "GROUP BY day ORDER BY day DESC LIMIT ?",
        (DAILY_POINTS,),
    )
    return tuple((int(r["day"]), float(r["h"])) for r in reversed(rows))


def read_blocks(conn: sqlite3.Connection) -> tuple[BlockRow, ...]:
    rows = _rows(
        conn,
        "SELECT height, hash, time, first_seen, tx_count, fees_sats, reward_sats, pool "
        "FROM blocks WHERE orphaned = 0 ORDER BY height DESC LIMIT ?",
        (BLOCK_ROWS,),
    )
    return tuple(
        BlockRow(
            height=int(r["height"]),
            hash=str(r["hash"]),
            time=int(r["time"]),
            first_seen=float(r["first_seen"] if r["first_seen"] is not None else r["time"]),
            tx_count=r["tx_count"],
            fees_sats=r["fees_sats"],
            reward_sats=r["reward_sats"],
            pool=r["pool"],
        )
        for r in rows
    )


def read_alerts(
    conn: sqlite3.Connection, now: float
) -> tuple[tuple[AlertRow, ...], tuple[AlertRow, ...]]:
    active = _rows(
        conn,
        "SELECT s.rule, s.state, s.since, s.last_value, s.silenced_until, "
        "(SELECT h.severity FROM alert_history h WHERE h.rule = s.rule "
        " ORDER BY h.at DESC LIMIT 1) AS severity, "
        "(SELECT h.message FROM alert_history h WHERE h.rule = s.rule "
        " ORDER BY h.at DESC LIMIT 1) AS message "
        "FROM alert_state s WHERE s.state IN ('pending', 'firing') OR s.silenced_until > ?",
        (now,),
    )
    hist = _rows(
        conn,
        "SELECT rule, severity, state, at, value, threshold, message FROM alert_history "
        "WHERE state IN ('pending', 'firing', 'resolved') ORDER BY at DESC LIMIT ?",
        (ALERT_HISTORY_ROWS,),
    )
    return (
        tuple(
            AlertRow(
                rule=r["rule"],
                severity=r["severity"] or "",
                state=r["state"],
                since=float(r["since"] or now),
                message=r["message"] or "",
                value=r["last_value"],
                silenced_until=r["silenced_until"],
            )
            for r in active
        ),
        tuple(
            AlertRow(
                rule=r["rule"],
                severity=r["severity"] or "",
                state=r["state"],
                since=float(r["at"]),
                message=r["message"] or "",
                value=r["value"],
                threshold=r["threshold"],
            )
            for r in hist
        ),
    )


def read_metrics_at(
    conn: sqlite3.Connection, at: float, scale: float | None = None
) -> dict[str, float | None]:
    """Each metric's last sample at or before ``at`` (within a day of it, else missing)."""
    if scale is None:
        scale = _minute_scale(conn, "metric_samples")
    out: dict[str, float | None] = {}
    for name in PAST_METRICS:
        rows = _rows(
            conn,
            "SELECT value FROM metric_samples WHERE name = ? AND minute <= ? AND minute >= ? "
            "ORDER BY minute DESC LIMIT 1",
            (name, at / scale, (at - DAY) / scale),
        )
        out[name] = float(rows[0]["value"]) if rows and rows[0]["value"] is not None else None
    return out


def load(path: pathlib.Path | None, now: float) -> History:
    """Everything the history views show, read in one short-lived read-only connection."""
    if path is None or not pathlib.Path(path).exists():
        return History(at=now)
    try:
        conn = connect_ro(pathlib.Path(path))
    except sqlite3.Error as exc:
        log.warning("cannot open %s for history: %s", path, exc)
        return History(at=now)
    try:
        points, first = read_prices(conn, now)
        active, hist = read_alerts(conn, now)
        scale = _minute_scale(conn, "metric_samples")
        return History(
            at=now,
            price_points=points,
            price_24h_ago=first,
            daily_hashrate=read_daily(conn),
            blocks=read_blocks(conn),
            alerts_active=active,
            alert_history=hist,
            past_24h=read_metrics_at(conn, now - DAY, scale),
            past_7d=read_metrics_at(conn, now - 7 * DAY, scale),
        )
    finally:
        conn.close()
