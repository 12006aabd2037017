"""``hashwatch status`` and ``hashwatch alerts``: everything read from the database.

Status recomputes the metrics from stored blocks, prices and history with the very same
:class:`feeds.metrics.MetricsEngine` the collector runs, so the CLI and the dashboard can
never disagree. It opens the database read-only and writes nothing.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from feeds.runtime import BOOTSTRAP_BLOCKS

ACTIVE_STATES = ("pending", "firing", "no_data")


def _json_number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return None
    return value


def _empty_status(db_path: Path, reason: str) -> dict[str, Any]:
    from feeds.metrics import METRIC_NAMES

    return {
        "database": str(db_path),
        "empty": True,
        "note": reason,
        "tip": None,
        "metrics": {name: None for name in METRIC_NAMES},
        "stale": [],
        "feeds": {},
        "alerts": [],
    }


def _rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    # as_uri() percent-encodes: a path with "?" or "#" in it stays one path
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _feeds_json(feed_rows: list[Any], now: float) -> dict[str, Any]:
    feeds: dict[str, Any] = {}
    for status in feed_rows:
        feeds[status.source] = {
            "state": str(status.state),
            "since": status.since,
            "last_message_age_s": (
                None if status.last_message_at is None else max(0.0, now - status.last_message_at)
            ),
            "reconnects": status.reconnects,
            "last_error": status.last_error,
            "detail": status.detail,
        }
    return feeds


def _active_alerts(db_path: Path) -> list[dict[str, Any]]:
    return [
        {
            "rule": row["rule"],
            "state": row["state"],
            "severity": row.get("severity"),
            "since": row["since"],
            "value": _json_number(row.get("last_value")),
        }
        for row in _rows(
            db_path,
            "SELECT s.*, (SELECT severity FROM alert_history h WHERE h.rule = s.rule "
            "ORDER BY id DESC LIMIT 1) AS severity FROM alert_state s "
            "WHERE state IN ('pending','firing','no_data') ORDER BY since",
        )
    ]


def build_status(config: Any, db_path: Path, *, now: float | None = None) -> dict[str, Any]:
    from feeds.metrics import METRIC_NAMES, MetricsEngine
    from feeds.store import Store

    now = time.time() if now is None else now
    if not db_path.exists():
        return _empty_status(
            db_path, f"no database at {db_path} yet: start the collector with `hashwatch run`"
        )
    store = Store.open(db_path, readonly=True)
    try:
        if store.is_empty():
            # No chain or prices yet, but a collector that cannot reach its upstreams still
            # records feed states and alerts (every price feed down): show those.
            empty = _empty_status(db_path, f"database {db_path} holds no data yet")
            empty["feeds"] = _feeds_json(store.feed_statuses(), now)
            empty["alerts"] = _active_alerts(db_path)
            return empty
        econ = config.economics
        engine = MetricsEngine(
            econ.fleet,
            econ.network,
            price_fresh_after_s=config.feeds.price_fresh_after,
            clock=lambda: now,
        )
        blocks = store.active_blocks(limit=BOOTSTRAP_BLOCKS)
        engine.on_blocks(blocks)
        for point in store.daily_history(since_day=int(now) - 400 * 86400):
            engine.on_daily(point)
        for tick in store.latest_prices():
            engine.on_price(tick)
        feed_rows = store.feed_statuses()
        for status in feed_rows:
            engine.on_feed_status(status)
        snapshot = engine.snapshot(now)
        tip = store.tip()
    finally:
        store.close()

    metrics = {name: _json_number(snapshot.values.get(name)) for name in METRIC_NAMES}
    feeds = _feeds_json(feed_rows, now)
    alerts = _active_alerts(db_path)
    return {
        "database": str(db_path),
        "empty": False,
        "tip": None if tip is None else {"height": tip.height, "hash": tip.hash, "time": tip.time},
        "metrics": metrics,
        "stale": sorted(n for n in snapshot.stale if n in metrics),
        "feeds": feeds,
        "alerts": alerts,
    }


def _fmt(name: str, value: Any) -> str:
    # One formatter for every place that shows a metric (messages, status): units by name.
    from alerts.messages import fmt_value

    return fmt_value(name, value)


def render_status(status: dict[str, Any]) -> str:
    lines = []
    if status["empty"]:
        if not status["feeds"] and not status["alerts"]:
            return status["note"]
        lines.append(status["note"])
    else:
        tip = status["tip"]
        lines.append(f"database: {status['database']}")
        lines.append(f"tip: {tip['height']} {tip['hash']}" if tip else "tip: none")
        stale = set(status["stale"])
        for name, value in status["metrics"].items():
            mark = "  (stale)" if name in stale else ""
            lines.append(f"  {name:<34} {_fmt(name, value)}{mark}")
    if status["feeds"]:
        lines.append("feeds:")
        for source, f in status["feeds"].items():
            age = f["last_message_age_s"]
            age_text = "never" if age is None else f"{age:.0f} s ago"
            err = f"  last error: {f['last_error']}" if f["last_error"] else ""
            lines.append(
                f"  {source:<10} {f['state']:<12} last message {age_text}, "
                f"reconnects {f['reconnects']}{err}"
            )
    lines.append("alerts:" if status["alerts"] else "alerts: none active")
    for a in status["alerts"]:
        lines.append(f"  {a['state'].upper():<8} {a['rule']} ({a['severity']}) value {a['value']}")
    return "\n".join(lines)


def alerts_report(db_path: Path, *, now: float, recent: int = 50) -> dict[str, Any]:
    if not db_path.exists():
        return {"database": str(db_path), "active": [], "recent": [], "note": "no database yet"}
    from feeds.store import Store

    # Validate first: a non-SQLite file or a newer schema is a clear StoreError (exit 1),
    # not an empty report and not a traceback.
    Store.open(db_path, readonly=True).close()
    active = _rows(
        db_path,
        "SELECT rule, state, since, fired_at, last_value, silenced_until FROM alert_state "
        "WHERE state IN ('pending','firing','no_data') ORDER BY since",
    )
    for row in active:
        row["silenced"] = bool(row.get("silenced_until") and row["silenced_until"] > now)
    history = _rows(
        db_path,
        "SELECT rule, severity, previous, state, at, value, threshold, message "
        "FROM alert_history ORDER BY id DESC LIMIT ?",
        (recent,),
    )
    return {"database": str(db_path), "active": active, "recent": history}


def render_alerts(report: dict[str, Any]) -> str:
    lines = []
    if report.get("note"):
        return report["note"]
    lines.append("active:" if report["active"] else "active: none")
    for row in report["active"]:
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row["since"]))
        silenced = "  [silenced]" if row["silenced"] else ""
        lines.append(f"  {row['state'].upper():<8} {row['rule']} since {since}{silenced}")
    lines.append("recent:" if report["recent"] else "recent: none")
    for row in report["recent"]:
        at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row["at"]))
        lines.append(f"  {at} {row['state'].upper():<8} {row['rule']}: {row['message']}")
    return "\n".join(lines)
