"""``hashwatch rules backtest --since 365d`` over a year of stored history.

Builds a database with a year of synthetic but realistic history ending now: blocks from a
Poisson process at a drifting hashrate with real retarget arithmetic (about 52,500 blocks),
1-minute reference-price candles from a random walk, and one 1-minute sample per minute of
every metric the default rules read (``hashrate_7d``, ``hashprice``, the difficulty changes,
``price_to_cost_pct``, ``margin``, the feed ages and ``price_feeds_live`` with a few
outages, ``tip_age_s``, ``hash_ribbon_30_60``), derived from those blocks and prices with
the formulas of DOMAIN.md (simplified where only the shape matters).

Then times, in the same run:

* ``alerts.backtest.backtest`` with the default rules (in process);
* the CLI ``hashwatch rules backtest --since 365d`` (a subprocess: start-up included);
* the baseline: a plain ``SELECT minute, value`` of the same rows.

Target: under 10 s (absolute, issue 4).

    python -m bench.backtest [--days 365] [--keep-db PATH]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import logging
import math
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO, command_line, table, write_result
from bench.cpu_headless import hashwatch_command

NAME = "backtest"
TARGET_S = 10.0
DAY = 86_400
MIN = 60
EPOCH = 2016
TWO32 = 2**32
SUBSIDY_BTC = 3.125
#: Network and fleet cost models (DOMAIN.md economics; DESIGN.md defaults' order of size).
NETWORK_HASHCOST = 24.0  # $/PH/day: ~20 J/TH at $0.05/kWh
FLEET_HASHCOST = 21.0
FLEET_NET = 0.98 * 0.97  # pool fee and uptime


def _price_walk(rng: random.Random, n: int, start: float) -> list[float]:
    """Per-minute BTC/USD: geometric walk, ~2.5% daily volatility, mild mean reversion."""
    sigma = 0.025 / math.sqrt(1440)
    out, log_p, anchor = [], math.log(start), math.log(start)
    for _ in range(n):
        log_p += rng.gauss(0.0, sigma) - 2e-6 * (log_p - anchor)
        out.append(math.exp(log_p))
    return out


def _hashrate_true(t: float, t0: float) -> float:
    """H/s: +35%/year trend, a seasonal swing and an autumn capitulation dip."""
    x = (t - t0) / (365 * DAY)
    dip = 1.0 - 0.12 * math.exp(-(((x - 0.7) / 0.05) ** 2))
    return 8.0e20 * (1.0 + 0.35 * x) * (1.0 + 0.05 * math.sin(2 * math.pi * x * 2)) * dip


def simulate_blocks(
    rng: random.Random, t0: float, t1: float, difficulty: float
) -> list[tuple[int, int, float, int]]:
    """(height, time, difficulty, fees_sats) from t0 to t1, retargeting every 2016 blocks."""
    blocks: list[tuple[int, int, float, int]] = []
    height, t, epoch_start = 900_000, t0, t0
    while t < t1:
        rate = _hashrate_true(t, t0) / (difficulty * TWO32)
        t += rng.expovariate(rate)
        fees = int(max(0.0, rng.lognormvariate(math.log(2.5e6), 0.5)))
        blocks.append((height, int(t), difficulty, fees))
        height += 1
        if height % EPOCH == 0:
            span = min(max(t - epoch_start, EPOCH * 600 / 4), EPOCH * 600 * 4)
            difficulty *= EPOCH * 600 / span
            epoch_start = t
    return blocks


def _block_rows(blocks: list[tuple[int, int, float, int]]) -> Iterator[tuple[Any, ...]]:
    from feeds.derive import block_work, difficulty_from_target, target_to_bits
    from feeds.store import work_hex

    prev = None
    bits_cache: dict[float, int] = {}
    for height, t, d, fees in blocks:
        bits = bits_cache.get(d)
        if bits is None:
            # target = max_target / D
            max_target = 0xFFFF * 2**208
            bits = bits_cache[d] = target_to_bits(int(max_target / d))
        h = f"{height:064x}"
        yield (
            h,
            height,
            prev,
            t,
            float(t),
            bits,
            difficulty_from_target(int(0xFFFF * 2**208 / d)),
            work_hex(block_work(bits)),
            2500,
            fees,
            int(SUBSIDY_BTC * 1e8) + fees,
            "Foundry USA",
            "bench",
        )
        prev = h


def build_db(path: Path, days: int, now: float, seed: int = 11) -> dict[str, int]:
    """Write the year (or ``days``) of history ending at the last closed minute before
    ``now``; return row counts."""
    from feeds.store import Store

    rng = random.Random(seed)
    end = int(now // MIN) * MIN - MIN
    n = days * 1440
    start = end - (n - 1) * MIN
    # Blocks from 60 days earlier so the 30-day and 7-day windows are full from the start.
    t_blocks0 = start - 60 * DAY
    blocks = simulate_blocks(rng, t_blocks0, end + MIN, 1.1e14)
    times = [b[1] for b in blocks]
    prices = _price_walk(rng, n, 95_000.0)

    # Per-block prefix sums for window hashrates (work ~ difficulty * 2^32).
    cum = [0.0]
    for _, _, d, _ in blocks:
        cum.append(cum[-1] + d * TWO32)
    fee_ema, fee_avg = 0.0, []
    for _, _, _, fees in blocks:
        fee_ema = fees if not fee_avg else fee_ema + (fees - fee_ema) / 144
        fee_avg.append(fee_ema)

    def window_hashrate(i: int, k: int) -> float:
        j = max(0, i - k)
        span = times[i] - times[j]
        return (cum[i + 1] - cum[j + 1]) / span if span > 0 else float("nan")

    # Daily hashrate (for the ribbon): the 1-day window at each day's last block.
    day_rates: dict[int, float] = {}
    for i, t in enumerate(times):
        day_rates[t // DAY * DAY] = window_hashrate(i, 144)
    days_sorted = sorted(day_rates)
    daily = [day_rates[d] for d in days_sorted]

    # Outages: (source, start minute index, length in minutes); one of them hits all three.
    outages: list[tuple[str, int, int]] = []
    for src in ("coinbase", "kraken", "bitstamp"):
        for _ in range(4):
            outages.append((src, rng.randrange(n), rng.choice((3, 10, 45, 180))))
    whole = rng.randrange(n)
    outages += [(src, whole, 20) for src in ("coinbase", "kraken", "bitstamp")]
    down: dict[str, list[tuple[int, int]]] = {"coinbase": [], "kraken": [], "bitstamp": []}
    for src, i0, length in outages:
        down[src].append((i0, i0 + length))

    series: dict[str, list[tuple[int, float]]] = {
        k: []
        for k in (
            "hashrate_7d",
            "hashprice",
            "difficulty_projected_change_pct",
            "difficulty_change_pct",
            "price_to_cost_pct",
            "margin",
            "feed_age_s.coinbase",
            "feed_age_s.kraken",
            "feed_age_s.bitstamp",
            "price_feeds_live",
            "tip_age_s",
            "hash_ribbon_30_60",
            "price_usd",
        )
    }
    candles: list[tuple[Any, ...]] = []
    bi = 0
    jitter = [rng.uniform(0.0, 3.0) for _ in range(997)]
    for k in range(n):
        m = start + k * MIN
        sample_t = m + MIN - 1  # the last value of the minute
        while bi + 1 < len(times) and times[bi + 1] <= sample_t:
            bi += 1
        height, tip_t, d, _ = blocks[bi]
        p = prices[k]
        series["price_usd"].append((m, p))
        candles.append(("ref", m, p, p * 1.0004, p * 0.9996, p, 12))
        series["tip_age_s"].append((m, float(sample_t - tip_t)))
        hr7 = window_hashrate(bi, 1008)
        series["hashrate_7d"].append((m, hr7))
        # hashprice $/PH/day = P * (subsidy + avg fees) * 86400e15 / (D * 2^32)
        reward_btc = SUBSIDY_BTC + fee_avg[bi] / 1e8
        hp = p * reward_btc * 86_400e15 / (d * TWO32)
        series["hashprice"].append((m, hp))
        series["price_to_cost_pct"].append((m, (hp / NETWORK_HASHCOST - 1.0) * 100.0))
        series["margin"].append((m, hp * FLEET_NET - FLEET_HASHCOST))
        in_epoch = (height + 1) % EPOCH
        epoch_start_i = bi - in_epoch + 1 if in_epoch else bi
        if in_epoch >= 1 and epoch_start_i > 0:
            spent = max(1.0, sample_t - times[epoch_start_i - 1])
            proj = (EPOCH * 600 / (spent / in_epoch * EPOCH) - 1.0) * 100.0
            proj = min(300.0, max(-75.0, proj))  # the consensus clamp (a factor of 4)
            series["difficulty_projected_change_pct"].append((m, proj))
        if bi >= EPOCH:
            last_retarget = bi - in_epoch
            prev_d = blocks[max(0, last_retarget - 1)][2]
            series["difficulty_change_pct"].append((m, (d / prev_d - 1.0) * 100.0))
        live = 3
        for src in ("coinbase", "kraken", "bitstamp"):
            age = jitter[(k * 7 + len(src)) % 997]
            for a, b in down[src]:
                if a <= k < b:
                    age = (k - a + 1) * 60.0
                    live -= 1
                    break
            series[f"feed_age_s.{src}"].append((m, age))
        series["price_feeds_live"].append((m, float(live)))
        di = bisect.bisect_right(days_sorted, m - DAY)  # complete days only
        if di >= 60:
            window = daily[di - 60 : di]
            ribbon = (sum(window[-30:]) / 30) / (sum(window) / 60)
            series["hash_ribbon_30_60"].append((m, ribbon))

    store = Store.open(path)
    try:
        with store.transaction() as db:
            conn = db.conn
            conn.executemany(
                "INSERT INTO blocks (hash, height, prev_hash, time, first_seen, bits, difficulty,"
                " work, tx_count, fees_sats, reward_sats, pool, orphaned, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                _block_rows(blocks),
            )
            conn.executemany(
                "INSERT INTO candles (source, minute, open, high, low, close, n) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                candles,
            )
            for name, points in series.items():
                conn.executemany(
                    "INSERT INTO metric_samples (name, minute, value) VALUES (?, ?, ?)",
                    ((name, mm, v) for mm, v in points if v == v),  # NaN: no sample
                )
    finally:
        store.close()
    return {
        "blocks": len(blocks),
        "candles": len(candles),
        "metric_samples": sum(len(s) for s in series.values()),
        "metrics": len(series),
    }


def time_select(path: Path, metrics: list[str], since: float, until: float) -> tuple[float, int]:
    """Baseline: read the same rows with a plain SELECT (fresh connection, as the CLI)."""
    started = time.perf_counter()
    rows = 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        for name in metrics:
            rows += len(
                conn.execute(
                    "SELECT minute, value FROM metric_samples "
                    "WHERE name = ? AND minute >= ? AND minute <= ? ORDER BY minute",
                    (name, since, until),
                ).fetchall()
            )
    return time.perf_counter() - started, rows


def time_backtest(
    path: Path, days: int, now: float, config_path: Path
) -> tuple[float, int, int, list[str]]:
    from alerts.backtest import backtest
    from alerts.rules import compile_rules
    from feeds.store import Store
    from tui.config import load_config

    config = load_config(config_path, db_override=path, env={})
    rules = compile_rules(config.rules)
    store = Store.open(path, readonly=True)
    try:
        started = time.perf_counter()
        events = backtest(store, rules, days * DAY, now=now)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    return elapsed, len(events), len(rules), sorted({r.metric for r in rules})


def time_cli(path: Path, days: int, config: Path) -> tuple[float | None, str]:
    """Wall time of the CLI (interpreter start-up and imports included), and its summary
    line; (None, the error) when the command fails."""
    started = time.perf_counter()
    out = subprocess.run(
        [
            *hashwatch_command(),
            "--config",
            str(config),
            "--db",
            str(path),
            "--log-level",
            "warning",
            "rules",
            "backtest",
            "--since",
            f"{days}d",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()
        return None, f"exit {out.returncode}: {err[-1] if err else ''}"
    lines = out.stdout.strip().splitlines()
    return elapsed, lines[-1] if lines else ""


def run(days: int = 365, *, out_dir: Path | None = None, keep_db: Path | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="hashwatch-bench-"))
    try:
        db = tmp / "year.db"
        now = time.time()
        t = time.perf_counter()
        counts = build_db(db, days, now)
        build_s = time.perf_counter() - t
        config = tmp / "config.toml"
        config.write_text("", encoding="utf-8")  # built-in defaults: the default rule set
        now = time.time()
        bt_s, n_events, n_rules, metrics = time_backtest(db, days, now, config)
        from alerts.rules import WINDOW_GRACE_S

        since = int((now - days * DAY) // MIN) * MIN - 30 * DAY - WINDOW_GRACE_S
        sel_s, sel_rows = time_select(db, metrics, since, now)
        cli_s, cli_line = time_cli(db, days, config)
        if keep_db is not None:
            shutil.copyfile(db, keep_db)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "days": days,
        **counts,
        "build_db_s": round(build_s, 1),
        "rules": n_rules,
        "transitions": n_events,
        "backtest_s": round(bt_s, 3),
        "cli_s": None if cli_s is None else round(cli_s, 3),
        "cli_summary": cli_line,
        "select_s": round(sel_s, 3),
        "select_rows": sel_rows,
        "ratio_backtest_to_select": round(bt_s / sel_s, 2) if sel_s else None,
        "target_s": TARGET_S,
        # the CLI when it works (start-up included), else the in-process figure
        "meets_target": (bt_s if cli_s is None else cli_s) < TARGET_S,
    }
    print(
        f"backtest: {days} days = {counts['metric_samples']:,} metric samples "
        f"({counts['metrics']} metrics), {counts['blocks']:,} blocks, "
        f"{counts['candles']:,} candles; {n_rules} default rules (db built in {build_s:.0f} s)"
    )
    rows = [
        ("plain SELECT of the same rows (baseline)", sel_s, f"{sel_rows:,} rows"),
        ("alerts.backtest.backtest (in process)", bt_s, f"{n_events} transitions"),
        (
            "hashwatch rules backtest (CLI)",
            "failed" if cli_s is None else cli_s,
            cli_line if cli_s is None else "incl. start-up",
        ),
    ]
    print(table(rows, ["what", "seconds", "note"]))
    verdict = "meets" if figures["meets_target"] else "MISSES"
    judged = f"in process {bt_s:.2f} s" if cli_s is None else f"CLI {cli_s:.2f} s"
    print(
        f"backtest/SELECT = {figures['ratio_backtest_to_select']}x; {judged} "
        f"({verdict} target < {TARGET_S:g} s)"
    )
    argv = ["--days", str(days)]
    path = write_result(
        NAME, figures, command=command_line("bench.backtest", argv), out_dir=out_dir
    )
    print(f"written {path}")
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--keep-db", type=Path, default=None, help="copy the built database here")
    p.add_argument("--out-dir", type=Path, default=None, help="default: bench/results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(args.days, out_dir=args.out_dir, keep_db=args.keep_db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
