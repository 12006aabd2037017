"""The soak's invariant checkers (bench/soak_report.py) on a small run directory in the soak's
artefact format: they pass on intact data and fail when a block, a price minute or a delivered
message is lost (or a block is duplicated). Plus the store bug the soak found."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alerts.messages import format_transition
from bench import soak_report as sr
from bench.soak_faults import FAULT_KINDS, build_schedule
from feeds.events import AlertState, AlertTransition, Block, PriceTick
from feeds.store import Store

BITS = 0x1701F303
T0 = 1_795_600_020.0  # 20 s into a minute
SPAN_S = 180.0
TARGETS = ("json", "smtp")


def _hash(height: int, branch: int = 0) -> str:
    return f"{branch:02x}{height:062x}"


def _transitions() -> list[AlertTransition]:
    out = []
    for i in range(3):
        fired = T0 + 10 + 50 * i
        common = {
            "rule": "soak-price-dip",
            "severity": "warning",
            "value": 1.0,
            "threshold": 2.0,
            "message": "price low",
        }
        out.append(
            AlertTransition(
                **common, previous=AlertState.INACTIVE, state=AlertState.FIRING, at=fired
            )
        )
        out.append(
            AlertTransition(
                **common,
                previous=AlertState.FIRING,
                state=AlertState.RESOLVED,
                at=fired + 20,
                fired_at=fired,
            )
        )
    return out


def make_run(run_dir: Path) -> Path:
    """A finished run: chain 100..109 with a reorg at 109, 3 exchanges + ref ticking every
    second for 3 minutes, 6 transitions delivered once to each of two receivers."""
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "receivers").mkdir()
    store = Store.open(run_dir / "soak.db")
    prev = None
    events: list[object] = []
    for h in range(100, 110):
        events.append(Block(h, _hash(h), prev, int(T0) + 600 * h, BITS, "mempool", T0))
        prev = _hash(h)
    # the reorg: 109 replaced by a competing block
    events.append(Block(109, _hash(109, 1), _hash(108), int(T0) + 65_400, BITS, "mempool", T0))
    for i in range(int(SPAN_S)):
        for src in (*sr.EXCHANGE_SOURCES, "ref"):
            events.append(PriceTick(src, 68_000.0 + i, T0 + i, T0 + i))
    store.write_events(events)  # type: ignore[arg-type]
    with store.transaction() as db:
        for tr in _transitions():
            db.conn.execute(
                "INSERT INTO alert_history (rule, severity, previous, state, at, value, "
                "threshold, message, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tr.rule,
                    tr.severity,
                    str(tr.previous),
                    str(tr.state),
                    tr.at,
                    tr.value,
                    tr.threshold,
                    tr.message,
                    tr.fired_at,
                ),
            )
    store.close()
    for target in TARGETS:
        with (run_dir / "receivers" / f"{target}.jsonl").open("w") as fh:
            for tr in _transitions():
                title, body = format_transition(tr, {"metric": "price_usd", "price_usd": 1.0})
                fh.write(json.dumps({"received_at": tr.at + 1, "title": title, "body": body}))
                fh.write("\n")
    (run_dir / "logs" / "collector-1.log").write_text("2026 INFO runtime: started\n")
    expected = {
        "active": [[h, _hash(h, 1 if h == 109 else 0)] for h in range(100, 110)],
        "orphans": [_hash(109)],
        "targets": list(TARGETS),
        "price_window": [T0, T0 + SPAN_S - 1],
        "outages": [],
        "faults_done": [{"kind": k} for k in FAULT_KINDS],
        "fault_kinds": list(FAULT_KINDS),
        "samples": [],
    }
    (run_dir / "expected.json").write_text(json.dumps(expected))
    return run_dir


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def _write(run: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with sqlite3.connect(run / "soak.db") as conn:
        conn.execute(sql, params)


def _by_name(run: Path) -> dict[str, sr.Check]:
    checks, _ = sr.run_checks(run, judge_mem=False)
    return {c.name: c for c in checks}


def test_intact_run_passes_every_check(run: Path) -> None:
    checks = _by_name(run)
    assert all(c.ok for c in checks.values()), sr.render_table(list(checks.values()))
    blocks = checks["blocks stored exactly once"].detail
    assert blocks["stored"] == 10 and blocks["orphans_marked"] == 1
    delivery = checks["every transition reached every target"].detail
    assert delivery["transitions"] == 6
    assert all(t["received"] == 6 and t["duplicates"] == 0 for t in delivery["targets"].values())


def test_missing_block_fails(run: Path) -> None:
    _write(run, "DELETE FROM blocks WHERE height = 105")
    check = sr.check_blocks(run, sr.load_expected(run))
    assert not check.ok
    assert check.detail["missing"] == [[105, _hash(105)]] or check.detail["missing"] == [
        (105, _hash(105))
    ]


def test_duplicated_block_fails(run: Path) -> None:
    # A bug that stores a block twice: a second active row at a height (the schema's partial
    # unique index is what normally forbids it, so drop it to simulate the bug).
    _write(run, "DROP INDEX idx_blocks_active_height")
    _write(
        run,
        "INSERT INTO blocks (hash, height, prev_hash, time, first_seen, bits, work, orphaned) "
        "SELECT ?, height, prev_hash, time, first_seen, bits, work, 0 FROM blocks "
        "WHERE height = 104",
        (_hash(104, 7),),
    )
    check = sr.check_blocks(run, sr.load_expected(run))
    assert not check.ok and check.detail["duplicated"] >= 1


def test_unknown_orphan_and_unmarked_orphan_fail(run: Path) -> None:
    _write(run, "UPDATE blocks SET orphaned = 1 WHERE height = 103")
    assert not sr.check_blocks(run, sr.load_expected(run)).ok  # an active block lost
    fresh = make_run(run.parent / "again")
    _write(fresh, "DELETE FROM blocks WHERE orphaned = 1")
    assert not sr.check_orphans_seen(fresh, sr.load_expected(fresh)).ok


def test_missing_price_minute_fails(run: Path) -> None:
    minute = int((T0 + 70) // 60) * 60
    _write(run, "DELETE FROM candles WHERE minute = ? AND source != 'ref'", (minute,))
    check = sr.check_price_minutes(run, sr.load_expected(run))
    assert not check.ok and len(check.detail["missing"]) == 1


def test_missing_price_rows_fail_even_within_a_minute(run: Path) -> None:
    # 15 s of ticks lost (candles intact): the tick-gap check sees it.
    _write(run, "DELETE FROM price_ticks WHERE time BETWEEN ? AND ?", (T0 + 100, T0 + 115))
    check = sr.check_price_minutes(run, sr.load_expected(run))
    assert not check.ok and check.detail["tick_gaps"]


def test_outage_excuses_only_what_it_covers(run: Path) -> None:
    lo, hi = T0 + 100, T0 + 115
    _write(run, "DELETE FROM price_ticks WHERE time BETWEEN ? AND ?", (lo, hi))
    expected = sr.load_expected(run)
    expected["outages"] = [[lo - 1, hi + 1]]
    assert sr.check_price_minutes(run, expected).ok
    minute = int((T0 + 70) // 60) * 60  # a whole minute lost is not covered by that outage
    _write(run, "DELETE FROM candles WHERE minute = ? AND source != 'ref'", (minute,))
    assert not sr.check_price_minutes(run, expected).ok


def test_message_missing_at_a_target_fails(run: Path) -> None:
    path = run / "receivers" / "smtp.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    check = sr.check_delivery(run, sr.load_expected(run))
    assert not check.ok
    assert check.detail["targets"]["smtp"]["n_missing"] == 1
    assert check.detail["targets"]["json"]["n_missing"] == 0


def test_transition_missing_from_history_is_unexpected(run: Path) -> None:
    # A message the receiver got for a transition the database lost (what the soak caught
    # before the store fix) must fail too.
    _write(run, "DELETE FROM alert_history WHERE id = 1")
    check = sr.check_delivery(run, sr.load_expected(run))
    assert not check.ok and check.detail["targets"]["json"]["unexpected"]


def test_duplicates_are_counted_not_failed(run: Path) -> None:
    path = run / "receivers" / "json.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    with path.open("a") as fh:
        fh.write(json.dumps({**first, "received_at": first["received_at"] + 30}) + "\n")
    expected = sr.load_expected(run)
    check = sr.check_delivery(run, expected)
    assert check.ok  # at least once: a duplicate around a SIGKILL is allowed, and reported
    assert check.detail["targets"]["json"]["duplicates"] == 1
    assert check.detail["targets"]["json"]["duplicates_around_sigkill"] == 0
    expected["faults_done"].append({"kind": "sigkill", "wall": first["received_at"] + 10})
    check = sr.check_delivery(run, expected)
    assert check.detail["targets"]["json"]["duplicates_around_sigkill"] == 1


def test_traceback_in_logs_fails(run: Path) -> None:
    with (run / "logs" / "collector-1.log").open("a") as fh:
        fh.write("Traceback (most recent call last):\n  boom\n")
    assert not sr.check_logs(run).ok


def test_integrity_check_runs(run: Path) -> None:
    assert sr.check_integrity(run).ok


def test_schedule_is_seeded_and_covers_every_kind() -> None:
    per_kind = dict.fromkeys(FAULT_KINDS, 1) | {"sigkill": 2}
    a = build_schedule(400, seed=7, per_kind=per_kind)
    assert a == build_schedule(400, seed=7, per_kind=per_kind)
    assert a != build_schedule(400, seed=8, per_kind=per_kind)
    counts = Counter(f.kind for f in a)
    assert all(counts[k] >= 1 for k in FAULT_KINDS) and counts["sigkill"] == 2
    assert all(10 <= f.at_block < 380 for f in a)  # warm-up and a quiet end


def test_memory_judged_only_when_asked() -> None:
    samples = [
        {"day": d, "rss_kb": 1000 * (100 + 20 * (d > 1)), "cpu_total_s": d, "db_bytes": d, "pid": 1}
        for d in range(4)
    ]
    res = sr.resources({"samples": samples})
    assert res["rss_growth_pct"] == 20.0 and res["cpu_s_per_day"] == 1.0
    assert not sr.judge_memory(res, asserted=True).ok
    assert sr.judge_memory(res, asserted=False).ok


def test_other_process_closing_does_not_delete_the_wal_under_an_open_store(tmp_path: Path) -> None:
    """Regression (found by the soak): a second Store.open in the same process read the file
    header with its own descriptor; closing it dropped SQLite's POSIX locks, so another
    process's last connection deleted the WAL and later writes were lost."""
    path = tmp_path / "w.db"
    writer = Store.open(path)
    writer.write_events([PriceTick("coinbase", 1.0, 1.0, 1.0)])
    reader = Store.open(path)  # what the runtime does for the REST backfill
    probe = (
        f"import sqlite3; c = sqlite3.connect({str(path)!r}); "
        "c.execute('BEGIN IMMEDIATE'); c.rollback(); c.close()"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=30)
    assert Path(str(path) + "-wal").exists()
    writer.write_events([PriceTick("coinbase", 2.0, 2.0, 2.0)])
    count = (
        f"import sqlite3; c = sqlite3.connect({str(path)!r}); "
        "print(c.execute('SELECT COUNT(*) FROM price_ticks').fetchone()[0])"
    )
    out = subprocess.run([sys.executable, "-c", count], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "2"
    reader.close()
    writer.close()
