"""Tiny runs of every benchmark so they cannot rot. No timing assertions: the benches report
ratios, and a loaded CI machine must not fail a test because it is slow. What is asserted is
what would make a figure meaningless: frames not stored, an empty year, a missing result
file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bench import backtest as bench_backtest
from bench import cpu_headless, ingest
from bench import tui as bench_tui
from bench.common import proc_cpu_seconds, table, thread_cpu_seconds, write_result


def _result(out: Path, name: str) -> dict:
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["bench"] == name
    assert doc["command"].startswith(f"python -m bench.{name}")
    assert doc["machine"]["cpus"] >= 1
    return doc["figures"]


def test_ws_text_frame_lengths() -> None:
    assert ingest.ws_text_frame(b"ab") == b"\x81\x02ab"
    assert ingest.ws_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ingest.ws_text_frame(b"x" * 70_000)[:2] == b"\x81\x7f"


def test_burst_has_distinct_upstream_times() -> None:
    frames = ingest._burst(50)
    times = {json.loads(f)["time"] for f in frames}
    assert len(times) == 50
    assert all(json.loads(f)["type"] == "ticker" for f in frames)


def test_ingest_stores_every_frame(tmp_path: Path) -> None:
    figures = ingest.run(frames=300, repeats=1, out_dir=tmp_path)
    assert figures["every_frame_stored"] is True
    assert {r["mode"] for r in figures["runs"]} == {"raw", "full"}
    assert all(r["frames"] == 300 for r in figures["runs"])
    assert figures["ratio"] > 0
    assert _result(tmp_path, "ingest")["frames"] == 300


def test_backtest_builds_history_and_runs(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    # Blocks start 60 days early, so even 10 days of samples have a 60-day hash ribbon.
    figures = bench_backtest.run(days=10, out_dir=tmp_path, keep_db=db)
    assert figures["metric_samples"] > 10 * 1440 * 10
    assert figures["blocks"] > 70 * 100  # 10 days plus 60 days of lead-in, ~144/day
    assert figures["rules"] >= 10
    assert figures["select_rows"] > 0
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT name FROM metric_samples")}
        ribbon = conn.execute(
            "SELECT min(value), max(value) FROM metric_samples WHERE name = 'hash_ribbon_30_60'"
        ).fetchone()
    assert {"hashprice", "hashrate_7d", "tip_age_s", "price_feeds_live"} <= names
    assert 0.5 < ribbon[0] <= ribbon[1] < 1.5
    assert _result(tmp_path, "backtest")["days"] == 10


def test_cpu_headless_measures_a_running_collector(tmp_path: Path) -> None:
    figures = cpu_headless.run(seconds=1.5, rate=20.0, blocks=300, warmup_s=0.2, out_dir=tmp_path)
    assert figures["price_ticks_stored"] > 0  # the collector was really ingesting
    assert figures["hashwatch_cpu_s"] >= 0
    assert figures["exit_code"] == 0  # SIGTERM: clean exit
    assert figures["blocks_during_interval"] == 1  # mid-interval block
    assert _result(tmp_path, "cpu_headless")["backfill_blocks"] == 300


def test_common_helpers(tmp_path: Path) -> None:
    import os

    assert proc_cpu_seconds(os.getpid()) > 0
    assert os.getpid() in thread_cpu_seconds(os.getpid())
    text = table([("a", 1234.5, 3), ("bb", 0.01234, "x")], ["k", "v", "n"])
    assert "1,234" in text and "0.0123" in text
    path = write_result("t", {"x": 1}, command="python -m bench.t", out_dir=tmp_path)
    assert json.loads(path.read_text())["figures"] == {"x": 1}


def test_tui_draws_both_apps_in_a_pty(tmp_path: Path) -> None:
    figures = bench_tui.run(
        seconds=1.0,
        launches=1,
        cols=160,
        rows=48,
        warmup_s=0.2,
        days=2,
        blocks=300,
        out_dir=tmp_path,
    )
    # both apps drew every title (else run() raises) and were measured while running
    assert figures["dashboard_first_frame_s"] > 0 and figures["minimal_first_frame_s"] > 0
    assert figures["dashboard_peak_rss_mib"] > 10 and figures["minimal_peak_rss_mib"] > 10
    assert _result(tmp_path, "tui")["history_days"] == 2
