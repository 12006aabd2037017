"""CPU of ``hashwatch run --headless`` at a realistic rate, against an idle Python process.

Local stand-ins of the upstreams run in this process: the mempool demo server (a chain of
``--blocks`` blocks ending now, ``stats`` pushes every few seconds, one block every 10
minutes with the first in the middle of the measured interval) and one exchange server per
price source, together about ``--rate`` price messages per second (plus the Coinbase and
Kraken heartbeats, 1/s each). ``hashwatch run --headless`` runs as a subprocess against them
with a throw-away config and database. After warm-up (backfill done, every price feed
storing), its CPU time (utime + stime from ``/proc/<pid>/stat``, all threads) is measured over
``--seconds``; an idle Python process running a trivial asyncio sleep loop is measured over
the same interval as the baseline. Target: at most 1% of one core.

    python -m bench.cpu_headless [--seconds 60] [--rate 20] [--blocks 2200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    command_line,
    proc_cpu_seconds,
    proc_cpu_split,
    proc_rss_bytes,
    python,
    table,
    thread_cpu_seconds,
    write_result,
)

NAME = "cpu_headless"
TARGET_PCT = 1.0
PRICE_SOURCES = ("coinbase", "kraken", "bitstamp")
#: mempool.space pushes ``stats`` every few seconds to clients that want them.
STATS_INTERVAL_S = 5.0
BLOCK_INTERVAL_S = 600.0
IDLE_SOURCE = """
import asyncio

async def main():
    while True:
        await asyncio.sleep(1)

asyncio.run(main())
"""
#: Exchange ticks only (the store also keeps the reference price as source 'ref').
TICKS_SQL = "SELECT count(*) FROM price_ticks WHERE source IN ('coinbase', 'kraken', 'bitstamp')"


def hashwatch_command() -> list[str]:
    """``hashwatch`` from the interpreter's environment (the console script if installed)."""
    script = Path(python()).parent / "hashwatch"
    if script.exists():
        return [str(script)]
    return [python(), "-c", "import sys; from tui.cli import main; sys.exit(main())"]


def write_config(path: Path, db: Path, urls: dict[str, tuple[str, str]], backfill: int) -> None:
    lines = [
        "[database]",
        f"path = {json.dumps(str(db))}",
        "[feeds]",
        f"backfill_blocks = {backfill}",
    ]
    for name, (ws, rest) in urls.items():
        lines += [
            f"[feeds.{name}]",
            "enabled = true",
            f"ws_url = {json.dumps(ws)}",
            f"rest_url = {json.dumps(rest)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Upstreams:
    """The local servers and the drivers that feed them at a realistic rate."""

    def __init__(self, blocks: int, rate: float, seed: int = 7) -> None:
        self.blocks = blocks
        self.rate = rate
        self.rng = random.Random(seed)
        self.mempool: Any = None
        self.exchanges: dict[str, Any] = {}
        self.prices_pushed = 0
        self.blocks_pushed = 0
        self.price = 90_000.0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> dict[str, tuple[str, str]]:
        from feeds.demo import synth
        from feeds.demo.exchange_server import ExchangeServer
        from feeds.demo.mempool_server import Chain, MempoolDemoServer

        now = time.time()
        chain = Chain(start_height=930_000, start_time=int(now - self.blocks * BLOCK_INTERVAL_S))
        for _ in range(self.blocks):
            chain.next_block()
        self.mempool = MempoolDemoServer(chain, stats_interval_s=STATS_INTERVAL_S)
        today = int(now) // 86_400 * 86_400
        self.mempool.set_daily_prices(synth.daily_price_history(7, today, 366, self.price))
        await self.mempool.start()
        urls = {"mempool": (self.mempool.ws_url, self.mempool.rest_url)}
        for i, name in enumerate(PRICE_SOURCES):
            srv = ExchangeServer(initial_price=self.price, seed=i)
            await srv.start()
            self.exchanges[name] = srv
            urls[name] = (srv.ws_url(name), srv.rest_url(name))
        return urls

    def start_drivers(self, first_block_in_s: float) -> None:
        per_source = self.rate / len(self.exchanges)
        for name, srv in self.exchanges.items():
            self._tasks.append(asyncio.create_task(self._prices(srv, per_source), name=name))
        self._tasks.append(asyncio.create_task(self._blocks(first_block_in_s), name="blocks"))

    async def _prices(self, srv: Any, per_second: float) -> None:
        rng = random.Random(id(srv))
        while True:
            await asyncio.sleep(rng.expovariate(per_second))
            self.price *= 1.0 + rng.gauss(0.0, 0.0002)
            srv.publish_price(round(self.price, 2), time.time())
            self.prices_pushed += 1

    async def _blocks(self, first_in_s: float) -> None:
        await asyncio.sleep(first_in_s)
        while True:
            await self.mempool.add_block(timestamp=int(time.time()))
            self.blocks_pushed += 1
            await asyncio.sleep(BLOCK_INTERVAL_S)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for srv in [*self.exchanges.values(), self.mempool]:
            if srv is not None:
                with contextlib.suppress(Exception):
                    await srv.close()


def _count(db: Path, sql: str) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def _warm(db: Path, blocks: int) -> bool:
    """Backfill stored and every price source storing ticks."""
    if _count(db, "SELECT count(*) FROM blocks WHERE orphaned = 0") < blocks:
        return False
    sql = TICKS_SQL.replace("count(*)", "count(DISTINCT source)")
    return _count(db, sql) == len(PRICE_SOURCES)


PROFILE_WRAPPER = """
import cProfile, signal, sys
prof = cProfile.Profile()
out = sys.argv.pop(1)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def _dump(*_):
    prof.disable()
    prof.dump_stats(out)
signal.signal(signal.SIGUSR2, _dump)
from tui.cli import main
sys.argv[0] = "hashwatch"
sys.exit(main())
"""


async def measure(
    seconds: float,
    rate: float,
    blocks: int,
    warmup_s: float,
    tmp: Path,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    ups = Upstreams(blocks, rate)
    urls = await ups.start()
    db, cfg = tmp / "bench.db", tmp / "config.toml"
    write_config(cfg, db, urls, blocks)
    env = {**os.environ, "HASHWATCH_CONFIG": str(cfg), "NO_COLOR": "1"}
    log_path = tmp / "hashwatch.log"
    started = time.monotonic()
    with log_path.open("wb") as log_fh:
        # With --profile: the same CLI under cProfile, switched on by signal for the interval.
        cmd = (
            hashwatch_command()
            if profile_to is None
            else [python(), "-c", PROFILE_WRAPPER, str(profile_to)]
        )
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "--config",
            str(cfg),
            "--log-level",
            "warning",
            "run",
            "--headless",
            cwd=REPO,
            env=env,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
        idle = await asyncio.create_subprocess_exec(python(), "-c", IDLE_SOURCE)
        try:
            ups.start_drivers(first_block_in_s=1e9)  # blocks rescheduled below
            deadline = started + 120.0
            while not _warm(db, blocks):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"hashwatch did not warm up (exit {proc.returncode}); "
                        f"log: {log_path.read_text(errors='replace')[-2000:]}"
                    )
                await asyncio.sleep(0.25)
            ready_s = time.monotonic() - started
            await asyncio.sleep(warmup_s)  # let start-up work (first snapshots, imports) settle
            # One block in the middle of the measured interval (then every 10 min).
            ups._tasks[-1].cancel()
            ups._tasks[-1] = asyncio.create_task(ups._blocks(seconds / 2), name="blocks")
            if profile_to is not None:
                proc.send_signal(signal.SIGUSR1)  # start profiling the steady state
            ticks0 = _count(db, TICKS_SQL)
            pushed0, blocks0 = ups.prices_pushed, ups.blocks_pushed
            t0 = time.monotonic()
            cpu0, idle0 = proc_cpu_seconds(proc.pid), proc_cpu_seconds(idle.pid)
            threads0 = thread_cpu_seconds(proc.pid)
            sys0 = proc_cpu_split(proc.pid)[1]
            # Per-second samples as well: they show the spike of a block against the rest.
            per_s: list[float] = []
            last, tick = cpu0, t0
            while (remaining := t0 + seconds - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, remaining))
                now_cpu, now = proc_cpu_seconds(proc.pid), time.monotonic()
                per_s.append((now_cpu - last) / max(now - tick, 1e-9) * 100)
                last, tick = now_cpu, now
            cpu1, idle1 = proc_cpu_seconds(proc.pid), proc_cpu_seconds(idle.pid)
            threads1 = thread_cpu_seconds(proc.pid)
            sys1 = proc_cpu_split(proc.pid)[1]
            wall = time.monotonic() - t0
            main_thread = threads1.get(proc.pid, 0.0) - threads0.get(proc.pid, 0.0)
            if profile_to is not None:
                proc.send_signal(signal.SIGUSR2)  # the wrapper dumps its profile
                await asyncio.sleep(1.0)
            rss = proc_rss_bytes(proc.pid)
            pushed, blocks_in = ups.prices_pushed - pushed0, ups.blocks_pushed - blocks0
            # the writer flushes every 250 ms: let the last batch land before counting
            await asyncio.sleep(0.5)
            ticks = _count(db, TICKS_SQL) - ticks0
            stop0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                code = await proc.wait()
            stop_s = time.monotonic() - stop0
        finally:
            for p in (proc, idle):
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            await ups.close()
    return {
        "seconds": round(wall, 2),
        "hashwatch_cpu_s": round(cpu1 - cpu0, 3),
        "hashwatch_cpu_pct": round((cpu1 - cpu0) / wall * 100, 3),
        # the event loop vs everything else (the store writer thread, executor threads)
        "main_thread_cpu_pct": round(main_thread / wall * 100, 3),
        "other_threads_cpu_pct": round((cpu1 - cpu0 - main_thread) / wall * 100, 3),
        "kernel_cpu_pct": round((sys1 - sys0) / wall * 100, 3),
        "per_second_pct_median": round(sorted(per_s)[len(per_s) // 2], 3) if per_s else None,
        "per_second_pct_max": round(max(per_s), 3) if per_s else None,
        "profiled": profile_to is not None,
        "idle_python_cpu_pct": round((idle1 - idle0) / wall * 100, 3),
        "target_pct": TARGET_PCT,
        "meets_target": (cpu1 - cpu0) / wall * 100 <= TARGET_PCT,
        "price_msgs_per_s": round(pushed / wall, 1),
        "price_ticks_stored": ticks,
        "blocks_during_interval": blocks_in,
        "backfill_blocks": blocks,
        "ready_after_s": round(ready_s, 1),
        "warmup_s": warmup_s,
        "rss_mib": round(rss / 2**20, 1),
        "exit_code": code,
        "stop_s": round(stop_s, 2),
    }


def run(
    seconds: float = 60.0,
    rate: float = 20.0,
    blocks: int = 2200,
    warmup_s: float = 10.0,
    *,
    out_dir: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hashwatch-bench-") as tmp:
        prof = Path(tmp) / "hashwatch.prof" if profile else None
        figures = asyncio.run(measure(seconds, rate, blocks, warmup_s, Path(tmp), prof))
        if prof is not None and prof.exists():
            import io
            import pstats

            text = io.StringIO()
            stats = pstats.Stats(str(prof), stream=text)
            stats.sort_stats("tottime").print_stats(25)
            # and the project's own code by cumulative time: which task costs what
            stats.sort_stats("cumulative").print_stats(r"/(feeds|alerts|tui)/", 25)
            print("cProfile of the event-loop thread over the interval (CPU figures inflated):")
            print(text.getvalue())
    print(
        f"cpu_headless: {figures['seconds']:.0f} s steady state, "
        f"{figures['price_msgs_per_s']:.1f} price msgs/s, "
        f"{figures['blocks_during_interval']} block(s), backfill {blocks} blocks"
    )
    rows = [
        ("hashwatch run --headless", f"{figures['hashwatch_cpu_pct']:.2f}%", figures["rss_mib"]),
        ("idle python (asyncio sleep loop)", f"{figures['idle_python_cpu_pct']:.2f}%", "-"),
    ]
    print(table(rows, ["process", "CPU (% of one core)", "RSS MiB"]))
    print(
        f"event-loop thread {figures['main_thread_cpu_pct']:.2f}%, other threads "
        f"{figures['other_threads_cpu_pct']:.2f}% (store writer, executors); "
        f"in the kernel {figures['kernel_cpu_pct']:.2f}%"
    )
    print(
        f"per-second samples: median {figures['per_second_pct_median']:.2f}%, "
        f"max {figures['per_second_pct_max']:.1f}% (a block arrives mid-interval)"
    )
    verdict = "meets" if figures["meets_target"] else "MISSES"
    print(
        f"{verdict} target <= {TARGET_PCT:g}%; {figures['price_ticks_stored']} ticks stored in "
        f"the interval; SIGTERM -> exit {figures['exit_code']} in {figures['stop_s']:.2f} s"
    )
    argv = ["--seconds", f"{seconds:g}", "--rate", f"{rate:g}", "--blocks", str(blocks)]
    path = write_result(
        NAME, figures, command=command_line("bench.cpu_headless", argv), out_dir=out_dir
    )
    print(f"written {path}")
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.cpu_headless", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seconds", type=float, default=60.0, help="measured steady-state interval")
    p.add_argument("--rate", type=float, default=20.0, help="price messages per second, total")
    p.add_argument("--blocks", type=int, default=2200, help="chain length and backfill size")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds after the backfill")
    p.add_argument("--profile", action="store_true", help="cProfile hashwatch over the interval")
    p.add_argument("--out-dir", type=Path, default=None, help="default: bench/results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(
        args.seconds,
        args.rate,
        args.blocks,
        args.warmup,
        out_dir=args.out_dir,
        profile=args.profile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
