"""The soak's invariant checkers and its results table.

They read only a finished run's artefacts (a run directory), so that they can be run again on
a kept run and tested on a doctored one:

* ``soak.db``: the collector's database;
* ``expected.json``: what the harness served and did (active chain, orphans it made, the
  price window, the collector's down intervals, the targets, resource samples, faults);
* ``receivers/<target>.jsonl``: every message each local receiver accepted;
* ``logs/collector-*.log``: the collector's stderr, one file per start.

Data and delivery checks are invariants (a violation fails the run). Memory is judged only on
the full month (``judge_memory``); CPU and database size are reported.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXCHANGE_SOURCES = ("coinbase", "kraken", "bitstamp")
#: states whose transitions are delivered (history also holds pending/no_data steps)
DELIVERED_STATES = ("firing", "resolved")
MEMORY_GROWTH_LIMIT_PCT = 10.0
#: longest silence of the exchange ticks allowed outside injected outages (seconds)
MAX_TICK_GAP_S = 10.0
#: ``[CRITICAL] FIRING rule-name: message`` (alerts.messages.alert_title)
_TITLE = re.compile(r"^\[(\w+)\] (\w+) ([A-Za-z0-9_.-]+)")
#: the last line of every alert body: ``2026-03-01 12:00:00 UTC · hashwatch``
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)")
_LOG_PROBLEMS = ("Traceback", "was never retrieved", "Task was destroyed")


@dataclass
class Check:
    name: str
    ok: bool
    value: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: False for figures that are reported but not asserted in this mode
    asserted: bool = True


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_expected(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "expected.json").read_text())


def _connect(run_dir: Path) -> sqlite3.Connection:
    # Read-only and without creating anything: the checker must not repair what it judges.
    return sqlite3.connect(f"file:{run_dir / 'soak.db'}?mode=ro", uri=True)


# ------------------------------------------------------------------------------ data
def check_blocks(run_dir: Path, expected: dict[str, Any]) -> Check:
    """Every block of the served active chain stored exactly once and active; every stored
    orphan is one the harness made by a reorg, and is marked orphaned."""
    want = {(int(h), str(x)) for h, x in expected["active"]}
    known_orphans = set(expected["orphans"])
    lo = min(h for h, _ in want)
    hi = max(h for h, _ in want)
    with _connect(run_dir) as conn:
        active = conn.execute(
            "SELECT height, hash FROM blocks WHERE orphaned = 0 AND height BETWEEN ? AND ?",
            (lo, hi),
        ).fetchall()
        orphaned = {r[0] for r in conn.execute("SELECT hash FROM blocks WHERE orphaned = 1")}
        dup_heights = conn.execute(
            "SELECT height, COUNT(*) FROM blocks WHERE orphaned = 0 "
            "GROUP BY height HAVING COUNT(*) > 1"
        ).fetchall()
        dup_hashes = conn.execute(
            "SELECT hash, COUNT(*) FROM blocks GROUP BY hash HAVING COUNT(*) > 1"
        ).fetchall()
    got = {(int(h), str(x)) for h, x in active}
    missing = sorted(want - got)
    unexpected = sorted(got - want)
    stray_orphans = sorted(orphaned - known_orphans)
    duplicates = len(dup_heights) + len(dup_hashes) + (len(active) - len(got))
    ok = not missing and not unexpected and not stray_orphans and duplicates == 0
    value = (
        f"{len(got)}/{len(want)} stored once; {len(orphaned)} orphans marked "
        f"(of {len(known_orphans)} made); missing {len(missing)}, duplicated {duplicates}"
    )
    return Check(
        "blocks stored exactly once",
        ok,
        value,
        {
            "expected": len(want),
            "stored": len(got),
            "missing": missing[:20],
            "unexpected": unexpected[:20],
            "duplicated": duplicates,
            "orphans_marked": len(orphaned & known_orphans),
            "orphans_made": len(known_orphans),
            "stray_orphans": stray_orphans[:20],
        },
    )


def check_orphans_seen(run_dir: Path, expected: dict[str, Any]) -> Check:
    """The reorg path was exercised: at least one orphan the harness made is stored."""
    with _connect(run_dir) as conn:
        orphaned = {r[0] for r in conn.execute("SELECT hash FROM blocks WHERE orphaned = 1")}
    seen = len(orphaned & set(expected["orphans"]))
    need = 1 if expected["orphans"] else 0
    return Check("reorg observed (orphans marked)", seen >= need, f"{seen} orphan(s) marked")


def check_integrity(run_dir: Path) -> Check:
    with _connect(run_dir) as conn:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    ok = rows == ["ok"]
    return Check("PRAGMA integrity_check", ok, "ok" if ok else "; ".join(rows[:5]))


def _excused(minute: int, outages: list[list[float]]) -> bool:
    """A minute lost to an injected outage: the collector was down for all of it."""
    return any(a <= minute and minute + 60 <= b for a, b in outages)


def _uncovered(a: float, b: float, outages: list[list[float]]) -> float:
    """Seconds of [a, b] outside every outage."""
    return (b - a) - sum(max(0.0, min(b, y) - max(a, x)) for x, y in outages)


def check_price_minutes(run_dir: Path, expected: dict[str, Any]) -> Check:
    """Every full minute of the price window has an exchange candle and a reference candle,
    except minutes the collector was down for entirely (SIGKILL to back up)."""
    t0, t1 = expected["price_window"]
    outages = expected.get("outages", [])
    # Every minute with at least 20 s inside the window (at 4 ticks/s per source, a minute
    # without a candle there is lost data, not bad luck).
    minutes = [
        m
        for m in range(int(t0 // 60) * 60, int(t1 // 60) * 60 + 1, 60)
        if min(m + 60, t1) - max(m, t0) >= 20
    ]
    marks = ",".join("?" for _ in EXCHANGE_SOURCES)
    with _connect(run_dir) as conn:
        exch = {
            int(r[0])
            for r in conn.execute(
                f"SELECT DISTINCT minute FROM candles WHERE source IN ({marks})", EXCHANGE_SOURCES
            )
        }
        ref = {int(r[0]) for r in conn.execute("SELECT minute FROM candles WHERE source = 'ref'")}
        per_source = {
            s: {int(r[0]) for r in conn.execute("SELECT minute FROM candles WHERE source=?", (s,))}
            for s in EXCHANGE_SOURCES
        }
        ticks = [
            float(r[0])
            for r in conn.execute(
                f"SELECT time FROM price_ticks WHERE source IN ({marks}) AND time BETWEEN ? AND ? "
                "ORDER BY time",
                (*EXCHANGE_SOURCES, t0, t1),
            )
        ]
    # Finer than minutes: the longest silence between stored exchange ticks (3 sources at
    # 4 ticks/s each) outside the collector's down time.
    edges = [t0, *ticks, t1]
    gaps = [
        (a, b) for a, b in itertools.pairwise(edges) if _uncovered(a, b, outages) > MAX_TICK_GAP_S
    ]
    longest = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
    missing = [m for m in minutes if (m not in exch or m not in ref) and not _excused(m, outages)]
    excused = [m for m in minutes if (m not in exch or m not in ref) and _excused(m, outages)]
    source_gaps = {s: sum(1 for m in minutes if m not in got) for s, got in per_source.items()}
    return Check(
        "price minutes present",
        not missing and not gaps and bool(minutes) and bool(ticks),
        f"{len(minutes) - len(missing) - len(excused)}/{len(minutes)} minutes; missing "
        f"{len(missing)}, excused by outages {len(excused)}; {len(gaps)} tick gaps > "
        f"{MAX_TICK_GAP_S:g} s outside outages (longest silence {longest:.1f} s)",
        {
            "minutes": len(minutes),
            "ticks": len(ticks),
            "tick_gaps": [[fmt_time(a), round(b - a, 1)] for a, b in gaps[:20]],
            "missing": [fmt_time(m) for m in missing[:20]],
            "excused": len(excused),
            "per_source_missing_minutes": source_gaps,
        },
    )


# -------------------------------------------------------------------------- delivery
def parse_message(record: dict[str, Any]) -> tuple[str, str, str] | None:
    """(rule, STATE, time) of an alert message as a receiver got it, None for others."""
    m = _TITLE.match(str(record.get("title", "")))
    stamps = _STAMP.findall(str(record.get("body", "")))
    if m is None or not stamps:
        return None
    return m.group(3), m.group(2).upper(), stamps[-1]


def read_receiver(run_dir: Path, target: str) -> list[dict[str, Any]]:
    path = run_dir / "receivers" / f"{target}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_delivery(run_dir: Path, expected: dict[str, Any]) -> Check:
    """alert_history (firing/resolved) x targets against what each receiver logged."""
    with _connect(run_dir) as conn:
        rows = conn.execute(
            "SELECT rule, state, at FROM alert_history WHERE state IN (?, ?) ORDER BY id",
            DELIVERED_STATES,
        ).fetchall()
    want = Counter((rule, state.upper(), fmt_time(at)) for rule, state, at in rows)
    per_target: dict[str, dict[str, Any]] = {}
    ok = bool(want)
    kills = sorted(
        f["wall"] for f in expected.get("faults_done", []) if f["kind"] == "sigkill" and "wall" in f
    )
    for target in expected["targets"]:
        arrivals: dict[tuple[str, str, str], list[float]] = {}
        for r in read_receiver(run_dir, target):
            if (sig := parse_message(r)) is not None:
                arrivals.setdefault(sig, []).append(float(r.get("received_at", 0.0)))
        got = Counter({sig: len(times) for sig, times in arrivals.items()})
        missing = sorted((want - got).elements())
        unexpected = sorted(set(got) - set(want))
        duplicates = sum(max(0, n - want.get(sig, 0)) for sig, n in got.items() if sig in want)
        per_target[target] = {
            "expected": sum(want.values()),
            "received": sum(got.values()),
            "missing": missing[:20],
            "n_missing": len(missing),
            "duplicates": duplicates,
            "duplicates_around_sigkill": _around_kill(arrivals, want, kills),
            "unexpected": unexpected[:20],
        }
        ok = ok and not missing and not unexpected
    n = sum(want.values())
    dups = sum(t["duplicates"] for t in per_target.values())
    near = sum(t["duplicates_around_sigkill"] for t in per_target.values())
    miss = sum(t["n_missing"] for t in per_target.values())
    return Check(
        "every transition reached every target",
        ok,
        f"{n} transitions x {len(per_target)} targets; missing {miss}, duplicates {dups} "
        f"({near} across a SIGKILL)",
        {"transitions": n, "targets": per_target},
    )


def _around_kill(
    arrivals: dict[tuple[str, str, str], list[float]],
    want: Counter[tuple[str, str, str]],
    kills: list[float],
) -> int:
    """Duplicates whose first and repeated arrival have a SIGKILL between them (a send the
    killed collector made but could not record as delivered: at-least-once by design)."""
    n = 0
    for sig, times in arrivals.items():
        times = sorted(times)
        for i in range(want.get(sig, 0), len(times)):
            if any(times[0] - 1.0 <= k <= times[i] for k in kills):
                n += 1
    return n


# ------------------------------------------------------------------------------ logs
def check_logs(run_dir: Path) -> Check:
    hits: list[str] = []
    files = sorted((run_dir / "logs").glob("collector-*.log"))
    for path in files:
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(p in line for p in _LOG_PROBLEMS):
                hits.append(f"{path.name}:{i}: {line.strip()[:200]}")
    return Check(
        "no unhandled exception in logs",
        not hits,
        f"{len(hits)} in {len(files)} log file(s)",
        {"hits": hits[:20]},
    )


# ------------------------------------------------------------------------- resources
def resources(expected: dict[str, Any]) -> dict[str, Any]:
    """Per simulated day: RSS at its end, CPU spent during it, database size at its end."""
    samples = expected.get("samples", [])
    if len(samples) < 2:
        return {}
    days = []
    for prev, cur in itertools.pairwise(samples):
        days.append(
            {
                "day": cur["day"],
                "rss_mb": round(cur["rss_kb"] / 1024, 1),
                "cpu_s": round(cur["cpu_total_s"] - prev["cpu_total_s"], 2),
                "db_mb": round(cur["db_bytes"] / 1e6, 2),
                "pid": cur["pid"],
            }
        )
    first, last = days[0], days[-1]
    final_db = expected.get("db_final_bytes") or samples[-1]["db_bytes"]
    growth = (last["rss_mb"] / first["rss_mb"] - 1) * 100 if first["rss_mb"] else float("nan")
    n = len(days)
    return {
        "longest_process": _longest_process(days),
        "rss_day1_mb": first["rss_mb"],
        "rss_last_day_mb": last["rss_mb"],
        "rss_growth_pct": round(growth, 1),
        "cpu_s_per_day": round(sum(d["cpu_s"] for d in days) / n, 2),
        "db_mb_per_day": round((final_db - samples[0]["db_bytes"]) / 1e6 / n, 3),
        "db_mb_final": round(final_db / 1e6, 2),
        "days": days,
    }


def _longest_process(days: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth of the collector process that ran longest without a restart (its first
    day-end sample skipped: a process restarted during that day was still warming up)."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for d in days:
        by_pid.setdefault(d["pid"], []).append(d)
    runs = [r[1:] if len(r) > 2 else r for r in by_pid.values()]
    run = max(runs, key=lambda r: r[-1]["day"] - r[0]["day"])
    span = run[-1]["day"] - run[0]["day"]
    growth = run[-1]["rss_mb"] - run[0]["rss_mb"]
    return {
        "pid": run[0]["pid"],
        "from_day": run[0]["day"],
        "to_day": run[-1]["day"],
        "rss_from_mb": run[0]["rss_mb"],
        "rss_to_mb": run[-1]["rss_mb"],
        "mb_per_day": round(growth / span, 2) if span else 0.0,
    }


def judge_memory(res: dict[str, Any], *, asserted: bool) -> Check:
    growth = res.get("rss_growth_pct", float("nan"))
    ok = isinstance(growth, float) and growth <= MEMORY_GROWTH_LIMIT_PCT
    lp = res.get("longest_process") or {}
    longest = (
        f"; longest-running collector (days {lp['from_day']}-{lp['to_day']}): "
        f"{lp['rss_from_mb']} -> {lp['rss_to_mb']} MB, {lp['mb_per_day']:+.2f} MB/day"
        if lp
        else ""
    )
    return Check(
        f"memory day 1 vs last day (<= {MEMORY_GROWTH_LIMIT_PCT:g}%)",
        ok or not asserted,
        f"{res.get('rss_day1_mb')} MB -> {res.get('rss_last_day_mb')} MB ({growth:+.1f}%)"
        + longest
        + ("" if asserted else " [reported, judged on the full month]"),
        asserted=asserted,
    )


# ----------------------------------------------------------------------------- table
def run_checks(run_dir: Path, *, judge_mem: bool) -> tuple[list[Check], dict[str, Any]]:
    expected = load_expected(run_dir)
    checks = [
        check_blocks(run_dir, expected),
        check_orphans_seen(run_dir, expected),
        check_integrity(run_dir),
        check_price_minutes(run_dir, expected),
        check_delivery(run_dir, expected),
        check_logs(run_dir),
    ]
    res = resources(expected)
    if res:
        checks.append(judge_memory(res, asserted=judge_mem))
        checks.append(
            Check("CPU per simulated day", True, f"{res['cpu_s_per_day']} s", asserted=False)
        )
        checks.append(
            Check(
                "database size per simulated day",
                True,
                f"{res['db_mb_per_day']} MB (final {res['db_mb_final']} MB)",
                asserted=False,
            )
        )
    faults = Counter(f["kind"] for f in expected.get("faults_done", []))
    checks.append(
        Check(
            "every fault class injected",
            all(faults.get(k, 0) >= 1 for k in expected.get("fault_kinds", [])),
            ", ".join(f"{k} {faults.get(k, 0)}" for k in expected.get("fault_kinds", [])),
        )
    )
    return checks, res


def render_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  figures", f"{'-' * width}  ------  -------"]
    for c in checks:
        mark = ("PASS" if c.ok else "FAIL") if c.asserted else "info"
        lines.append(f"{c.name:<{width}}  {mark:<6}  {c.value}")
    return "\n".join(lines)


def render_markdown(checks: list[Check]) -> str:
    lines = ["| check | result | figures |", "|---|---|---|"]
    for c in checks:
        mark = ("PASS" if c.ok else "FAIL") if c.asserted else "info"
        lines.append(f"| {c.name} | {mark} | {c.value} |")
    return "\n".join(lines)


def results_json(checks: list[Check], res: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "ok": all(c.ok for c in checks if c.asserted),
        "checks": [asdict(c) for c in checks],
        "resources": res,
    }
