"""Fault-injecting soak: a month of replayed blocks through the real collector, nothing lost.

    python -m bench.soak            # the full accelerated 30 days (about 25 minutes)
    python -m bench.soak --short    # CI: 3 simulated days, every fault class, < 3 minutes

The harness (this process) runs the local mempool and exchange servers and the notification
receivers (json:// over HTTP, mailto:// over SMTP), all on 127.0.0.1, and the collector as a
**subprocess** (``hashwatch run --headless``), so that SIGKILL is a real kill.

Time. The collector runs on the real clock: it has no accelerated-clock option, and its
freshness, ``for`` holds and retry backoffs are wall-clock intervals. So the month is
compressed on the server side instead: the real blocks of ``feeds/data/blocks_*.csv``
(heights 937440..942199, Feb-Mar 2026, CC0) are served with their real header times and
bits, their spacing divided by the speed-up (a simulated day of ~144 blocks in
``--sec-per-day`` seconds). Prices are synthetic, published at a steady rate on the wall clock
and oscillating so that two rules (a price dip and a hashprice floor) fire and resolve again
and again. "Price minutes" are therefore wall-clock minutes of the run; "per simulated day"
figures are per replayed day of blocks.

Faults come from a seeded schedule tied to the replay (block index), see ``soak_faults``; the
checks are in ``soak_report``. The run directory (database, receivers' logs, collector logs,
``expected.json``) is kept with ``--keep`` or ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import soak_report
from bench.soak_faults import (
    FAULT_KINDS,
    Fault,
    JsonReceiver,
    SmtpReceiver,
    build_schedule,
    hold_write_lock,
)
from feeds.demo.exchange_server import PROTOCOLS, ExchangeServer, bad_frames
from feeds.demo.mempool_server import Chain, MempoolDemoServer

log = logging.getLogger("bench.soak")

REPO = Path(__file__).resolve().parent.parent
BLOCKS_CSV = REPO / "tests" / "data" / "blocks_937440_942199.csv"
RESULTS = REPO / "bench" / "results"
PRICE_MID = 68_000.0
PRICE_STEP_S = 0.25
CLK_TCK = os.sysconf("SC_CLK_TCK")
_CLI = "import sys; from tui.cli import main; sys.exit(main())"


@dataclass
class Plan:
    days: int
    sec_per_day: float
    history_blocks: int
    #: synthetic blocks (600 s apart, bits of the first real block) before the real history,
    #: so that the collector starts with full 30-day windows as after a real first backfill
    #: (the real CSV holds only 4,760 blocks): day 1 and day 30 memory are then comparable.
    synthetic_prefix: int
    #: replayed blocks before the first fault (the full month keeps day 1 quiet, so that its
    #: memory figure comes from a process that has run a whole simulated day)
    warmup_blocks: int
    price_period_s: float
    price_amplitude: float
    per_kind: dict[str, int]
    seed: int
    notify_down_s: float
    settle_s: float
    judge_memory: bool
    mode: str
    #: fault kinds confined to a fraction of the replay
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def short(cls, seed: int) -> Plan:
        return cls(
            days=3,
            sec_per_day=30.0,
            history_blocks=144,
            synthetic_prefix=0,
            warmup_blocks=10,
            price_period_s=24.0,
            price_amplitude=0.18,
            per_kind={k: 1 for k in FAULT_KINDS} | {"ws_cut": 4, "bad_frames": 4, "sigkill": 2},
            seed=seed,
            notify_down_s=8.0,
            settle_s=45.0,
            judge_memory=False,
            mode="short",
        )

    @classmethod
    def full(cls, seed: int, sec_per_day: float) -> Plan:
        per_kind = {
            "ws_cut": 40,
            "bad_frames": 30,
            "reorg": 6,
            "rest_429": 8,
            "rest_500": 8,
            "rest_timeout": 6,
            "notify_down": 8,
            "db_lock": 10,
            "sigkill": 8,
        }
        return cls(
            days=30,
            sec_per_day=sec_per_day,
            history_blocks=440,
            synthetic_prefix=5330 - 440,
            warmup_blocks=150,
            windows={"sigkill": (0.0, 0.5)},
            price_period_s=60.0,
            price_amplitude=0.18,
            per_kind=per_kind,
            seed=seed,
            notify_down_s=20.0,
            settle_s=120.0,
            judge_memory=True,
            mode="full",
        )


@dataclass
class CsvBlock:
    height: int
    time: int
    bits: int
    difficulty: float


def load_blocks(path: Path = BLOCKS_CSV) -> list[CsvBlock]:
    with path.open(newline="") as fh:
        return [
            CsvBlock(int(r["height"]), int(r["time"]), int(r["bits"], 16), float(r["difficulty"]))
            for r in csv.DictReader(fh)
        ]


def hashprice_usd(difficulty: float, price: float, fees_sats: float = 3_500_000) -> float:
    """DOMAIN.md hashprice (USD/PH/day) for the synthetic fees of the demo server."""
    blocks_per_day = 1e15 * 86400 / (difficulty * 2**32)
    return blocks_per_day * (312_500_000 + fees_sats) / 1e8 * price


def write_config(
    path: Path,
    plan: Plan,
    *,
    mempool: MempoolDemoServer,
    exchange: ExchangeServer,
    json_rx: JsonReceiver,
    smtp_rx: SmtpReceiver,
    backfill: int,
    first_difficulty: float,
) -> None:
    floor = hashprice_usd(first_difficulty, PRICE_MID) * 0.93
    feeds = [f'[feeds.mempool]\nws_url = "{mempool.ws_url}"\nrest_url = "{mempool.rest_url}"\n']
    for proto in PROTOCOLS:
        feeds.append(
            f'[feeds.{proto}]\nws_url = "{exchange.ws_url(proto)}"\n'
            f'rest_url = "{exchange.rest_url(proto)}"\n'
        )
    text = f"""# written by bench/soak.py
[database]
price_tick_retention = "24h"

[feeds]
backfill_blocks = {backfill}
rest_fallback_interval = "5s"

{chr(10).join(feeds)}
[alerts]
default_rules = false
eval_interval = "5s"

[notify]
max_per_target_per_10m = 100000
send_timeout = "20s"

[[notify.targets]]
name = "json"
url = "{json_rx.url()}"

[[notify.targets]]
name = "smtp"
url = "{smtp_rx.url()}"

[[rules]]
name = "soak-price-dip"
metric = "price_usd"
severity = "warning"
message = "price {{value:.0f}} below {{threshold:.0f}}"
below = {PRICE_MID * 0.95:.0f}
clear = {PRICE_MID * 0.97:.0f}

[[rules]]
name = "soak-hashprice-floor"
metric = "hashprice"
severity = "critical"
message = "hashprice {{value:.2f}} below {{threshold:.2f}}"
below = {floor:.2f}
clear = {floor * 1.03:.2f}
"""
    path.write_text(text)


def proc_usage(pid: int) -> tuple[int, float]:
    """(RSS in kB, user+system CPU seconds) of a live process, from /proc."""
    rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    cpu = 0.0
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return rss, cpu


def db_bytes(db: Path) -> int:
    """Size of the main database file (the WAL is transient: checkpointed into it)."""
    try:
        return db.stat().st_size
    except OSError:
        return 0


def ro_query(db: Path, sql: str) -> Any:
    """One value from the collector's database (read-only; None while it does not exist)."""
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            row = c.execute(sql).fetchone()
            return row[0] if row else None
    except sqlite3.Error:
        return None


@dataclass
class Soak:
    plan: Plan
    run_dir: Path
    blocks: list[CsvBlock]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    cpu_dead: float = 0.0
    orphans: list[str] = field(default_factory=list)
    outages: list[list[float]] = field(default_factory=list)
    faults_done: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    publishing: bool = True
    price_frozen: bool = False
    started_at: float = 0.0

    @property
    def db(self) -> Path:
        return self.run_dir / "soak.db"

    # ------------------------------------------------------------------ collector
    def start_collector(self) -> None:
        self.starts += 1
        logf = (self.run_dir / "logs" / f"collector-{self.starts}.log").open("wb")
        exe = Path(sys.executable).with_name("hashwatch")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", _CLI]
        cmd += [
            "run",
            "--headless",
            "--config",
            str(self.run_dir / "config.toml"),
            "--db",
            str(self.db),
            "--log-level",
            "info",
        ]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
        logf.close()
        log.info("collector start #%d pid %d", self.starts, self.proc.pid)

    def kill_collector(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        _, cpu = proc_usage(self.proc.pid)
        self.cpu_dead += cpu
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def cpu_total(self) -> float:
        return self.cpu_dead + (proc_usage(self.proc.pid)[1] if self.proc else 0.0)

    async def sample(self, day: int) -> None:
        assert self.proc is not None
        # A collector restarted a moment ago has no meaningful RSS yet.
        await asyncio.sleep(max(0.0, self.started_at + 3.0 - time.monotonic()))
        rss, _ = proc_usage(self.proc.pid)
        self.samples.append(
            {
                "day": day,
                "t": time.time(),
                "pid": self.proc.pid,
                "rss_kb": rss,
                "cpu_total_s": round(self.cpu_total(), 3),
                "db_bytes": db_bytes(self.db),
            }
        )
        log.info(
            "day %d: rss %.1f MB, cpu %.1f s, db %.1f MB",
            day,
            rss / 1024,
            self.cpu_total(),
            db_bytes(self.db) / 1e6,
        )

    # ------------------------------------------------------------------ prices
    def price_at(self, t: float) -> float:
        if self.price_frozen:
            return PRICE_MID
        p = self.plan
        return PRICE_MID * (1 + p.price_amplitude * math.sin(2 * math.pi * t / p.price_period_s))

    async def publish_prices(self, exchange: ExchangeServer) -> None:
        t0 = time.monotonic()
        while self.publishing:
            exchange.publish_price(round(self.price_at(time.monotonic() - t0), 2))
            await asyncio.sleep(PRICE_STEP_S)

    # ------------------------------------------------------------------ faults
    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def done(self, fault: Fault, **extra: Any) -> None:
        self.faults_done.append({**fault.to_dict(), "wall": time.time(), **extra})
        log.info("fault %s %s at block %d %s", fault.kind, fault.arg, fault.at_block, extra or "")

    async def inject(self, fault: Fault, ctx: dict[str, Any]) -> None:
        mempool: MempoolDemoServer = ctx["mempool"]
        exchange: ExchangeServer = ctx["exchange"]
        kind, arg = fault.kind, fault.arg
        if kind == "ws_cut":
            if arg == "mempool":
                await mempool.drop_connections()
            else:
                exchange.drop(arg)
            self.done(fault)
        elif kind == "bad_frames":
            if arg == "mempool":
                good = json.dumps({"block": mempool.chain.tip.to_json()})  # type: ignore[union-attr]
                for frame in (
                    "\x00\xffnot json{",
                    good[: len(good) // 2],
                    '{"block": 7}',
                    json.dumps({"pad": "x" * 300_000}),
                ):
                    await mempool.send_raw(frame)
                await mempool.send_raw(b"\xff\xfe\x00binary garbage")
            else:
                for frame in bad_frames(arg).values():
                    exchange.send_raw(arg, frame)
            self.done(fault)
        elif kind == "reorg":
            await self.reorg(mempool, int(arg), ctx["by_height"])
            self.done(fault, orphans=len(self.orphans))
        elif kind in ("rest_429", "rest_500", "rest_timeout"):
            if kind == "rest_429":
                mempool.fail_rest("/", times=2, status=429, retry_after="2")
            elif kind == "rest_500":
                mempool.fail_rest("/", times=3, status=500)
            else:
                mempool.fail_rest("/", times=1, status=200, delay_s=12.0)  # client gives up at 10 s
            # A reconnect makes the collector check the tip (and fill gaps) over REST at once.
            await mempool.drop_connections()
            self.done(fault)
        elif kind == "notify_down":
            self.spawn(self.notify_down(fault, ctx["receivers"][arg]))
        elif kind == "db_lock":
            self.spawn(self.db_lock(fault))
        elif kind == "sigkill":
            down = time.time()
            self.kill_collector()
            await asyncio.sleep(float(arg))
            self.start_collector()
            # Excuse only what a restart can cost: process start, bootstrap, reconnects.
            self.outages.append([down, time.time() + 15.0])
            self.done(fault, down_s=round(time.time() - down, 2))

    async def notify_down(self, fault: Fault, rx: JsonReceiver | SmtpReceiver) -> None:
        if isinstance(rx, SmtpReceiver):
            await asyncio.to_thread(rx.stop)
        else:
            await rx.stop()
        self.done(fault, phase="down")
        await asyncio.sleep(self.plan.notify_down_s)
        if isinstance(rx, SmtpReceiver):
            await asyncio.to_thread(rx.start)
        else:
            await rx.start()
        log.info("receiver %s back up on port %d", fault.arg, rx.port)

    async def db_lock(self, fault: Fault) -> None:
        waited = await asyncio.to_thread(hold_write_lock, self.db, 5.0)
        self.done(fault, waited_s=round(waited, 2), held_s=5.0)

    async def reorg(
        self, mempool: MempoolDemoServer, depth: int, by_height: dict[int, CsvBlock]
    ) -> None:
        """Replace the top ``depth`` blocks by a competing branch at the same heights (real
        times and bits, new hashes), then send the ``blocks`` list as mempool does."""
        dropped = mempool.chain.rewind(depth)
        self.orphans.extend(b.hash for b in dropped)
        for b in sorted(dropped, key=lambda b: b.height):
            src = by_height[b.height]
            mempool.chain.next_block(timestamp=src.time, bits=src.bits, difficulty=src.difficulty)
        await mempool.broadcast({"blocks": [b.to_json() for b in mempool.chain.newest(8)]})

    # ------------------------------------------------------------------ run
    async def wait_tip(self, height: int, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            tip = ro_query(self.db, "SELECT MAX(height) FROM blocks WHERE orphaned = 0")
            if tip is not None and tip >= height:
                return True
            await asyncio.sleep(0.5)
        return False

    async def settle(self, mempool: MempoolDemoServer, receivers: dict[str, Any]) -> None:
        """End of the replay: faults stop, receivers up, prices steady; wait until the tip is
        stored and the outbox is empty (or the time is up)."""
        for rx in receivers.values():
            if not rx.running:
                await (asyncio.to_thread(rx.start) if isinstance(rx, SmtpReceiver) else rx.start())
        self.price_frozen = True
        tip = mempool.chain.tip
        assert tip is not None
        deadline = time.monotonic() + self.plan.settle_s
        await self.wait_tip(tip.height, self.plan.settle_s)
        quiet_since = None
        while time.monotonic() < deadline:
            pending = ro_query(self.db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            if pending == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 5.0:
                    break
            else:
                quiet_since = None
            await asyncio.sleep(0.5)

    async def run(self) -> int:
        plan = self.plan
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        history = self.blocks[: plan.history_blocks]
        t_start = self.blocks[plan.history_blocks].time
        replay = [
            b for b in self.blocks[plan.history_blocks :] if b.time < t_start + plan.days * 86400
        ]
        by_height = {b.height: b for b in self.blocks}
        first = history[0]
        prefix = plan.synthetic_prefix
        chain = Chain(start_height=first.height - prefix, start_time=first.time - 600 * prefix)
        for i in range(prefix):
            chain.next_block(
                timestamp=first.time - 600 * (prefix - i),
                bits=first.bits,
                difficulty=first.difficulty,
            )
        for b in history:
            chain.next_block(timestamp=b.time, bits=b.bits, difficulty=b.difficulty)
        schedule = build_schedule(
            len(replay),
            seed=plan.seed,
            per_kind=plan.per_kind,
            warmup_blocks=plan.warmup_blocks,
            windows=plan.windows,
        )
        faults_at: dict[int, list[Fault]] = {}
        for f in schedule:
            faults_at.setdefault(f.at_block, []).append(f)

        json_rx = JsonReceiver(self.run_dir / "receivers" / "json.jsonl")
        smtp_rx = SmtpReceiver(self.run_dir / "receivers" / "smtp.jsonl")
        await json_rx.start()
        smtp_rx.start()
        receivers: dict[str, Any] = {"json": json_rx, "smtp": smtp_rx}
        async with (
            MempoolDemoServer(chain, stats_interval_s=10.0) as mempool,
            ExchangeServer(initial_price=PRICE_MID, seed=plan.seed) as exchange,
        ):
            write_config(
                self.run_dir / "config.toml",
                plan,
                mempool=mempool,
                exchange=exchange,
                json_rx=json_rx,
                smtp_rx=smtp_rx,
                backfill=prefix + len(history) + len(replay) + 50,
                first_difficulty=replay[0].difficulty,
            )
            ctx = {
                "mempool": mempool,
                "exchange": exchange,
                "receivers": receivers,
                "by_height": by_height,
            }
            prices = asyncio.create_task(self.publish_prices(exchange))
            self.start_collector()
            if not await self.wait_tip(history[-1].height, 180.0):
                log.error("collector did not backfill the history within 180 s")
            # Prices are judged from when the first collector is up and backfilled.
            price_t0 = time.time() + 2.0
            await self.sample(0)
            speed = 86400.0 / plan.sec_per_day
            mono0 = time.monotonic()
            latest = replay[0].time
            day = 0
            try:
                for i, b in enumerate(replay):
                    latest = max(latest, b.time)  # header times are not monotonic
                    due = mono0 + (latest - t_start) / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    while latest >= t_start + (day + 1) * 86400:
                        day += 1
                        await self.sample(day)
                    await mempool.add_block(timestamp=b.time, bits=b.bits, difficulty=b.difficulty)
                    for fault in faults_at.get(i, []):
                        await self.inject(fault, ctx)
                while day < plan.days:
                    day += 1
                    await self.sample(day)
                if self.tasks:
                    await asyncio.gather(*self.tasks, return_exceptions=True)
                await self.settle(mempool, receivers)
                price_t1 = time.time() - 5.0
            finally:
                self.publishing = False
                await prices
                for task in list(self.tasks):
                    task.cancel()
                if self.proc is not None and self.proc.poll() is None:
                    self.kill_collector(signal.SIGTERM)
                await json_rx.stop()
                smtp_rx.stop()
            consumed = sum(1 for f in mempool.rest_faults if f.times == 0)
            expected = {
                "active": [[h, b.hash] for h, b in sorted(mempool.chain.blocks.items())],
                "orphans": self.orphans,
                "targets": list(receivers),
                "price_window": [price_t0, price_t1],
                "outages": self.outages,
                "samples": self.samples,
                # after a clean stop the WAL is checkpointed: the database's real size
                "db_final_bytes": db_bytes(self.db),
                "faults_done": [f for f in self.faults_done if f.get("phase") != "up"],
                "fault_kinds": list(FAULT_KINDS),
                "rest_faults_consumed": consumed,
                "rest_faults_set": len(mempool.rest_faults),
                "collector_starts": self.starts,
                "replay": {
                    "blocks": len(replay),
                    "first_height": replay[0].height,
                    "last_height": replay[-1].height,
                    "days": plan.days,
                },
            }
        (self.run_dir / "expected.json").write_text(json.dumps(expected, indent=1))
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="CI version: 3 days, < 3 minutes")
    ap.add_argument("--seed", type=int, default=20260301)
    ap.add_argument("--sec-per-day", type=float, default=45.0, help="full month: wall s per day")
    ap.add_argument("--out", type=Path, default=None, help="run directory (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    ap.add_argument("--results", type=Path, default=None, help="results JSON path")
    ap.add_argument(
        "--check-only",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="only check a kept run directory again (prints the table, writes --results)",
    )
    ap.add_argument("--days", type=int, default=None, help="simulated days (debugging)")
    ap.add_argument(
        "--faults", default=None, help="only these fault kinds, comma-separated (debugging)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s soak %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    plan = Plan.short(args.seed) if args.short else Plan.full(args.seed, args.sec_per_day)
    if args.days:
        plan.days = args.days
    if args.faults:
        keep = set(args.faults.split(","))
        plan.per_kind = {k: n for k, n in plan.per_kind.items() if k in keep}
    if args.check_only:
        meta = soak_report.load_expected(args.check_only).get("meta", {})
        return report(args.check_only, meta, args.results)
    run_dir = args.out or Path(tempfile.mkdtemp(prefix=f"hashwatch-soak-{plan.mode}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    soak = Soak(plan, run_dir, load_blocks())
    try:
        asyncio.run(soak.run())
    finally:
        # Interrupted (Ctrl-C) or failed: never leave a collector running behind us.
        if soak.proc is not None and soak.proc.poll() is None:
            soak.proc.kill()
            soak.proc.wait(timeout=30)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode,
        "seed": plan.seed,
        "simulated_days": plan.days,
        "sec_per_simulated_day": plan.sec_per_day,
        "wall_s": round(time.monotonic() - started, 1),
        "collector_starts": soak.starts,
        "command": "python -m bench.soak" + (" --short" if args.short else ""),
    }
    # Kept with the artefacts so that --check-only reproduces the same results file.
    expected = soak_report.load_expected(run_dir)
    expected["meta"] = meta
    (run_dir / "expected.json").write_text(json.dumps(expected, indent=1))
    code = report(run_dir, meta, args.results)
    if not (args.out or args.keep):
        shutil.rmtree(run_dir, ignore_errors=True)
    return code


def report(run_dir: Path, meta: dict[str, Any], results: Path | None) -> int:
    """Check a finished run, print the table, write the results JSON; 0 when it passed."""
    checks, res = soak_report.run_checks(run_dir, judge_mem=meta.get("mode") == "full")
    print()
    print(
        f"hashwatch soak ({meta.get('mode')}, seed {meta.get('seed')}, "
        f"{meta.get('simulated_days')} simulated days, {meta.get('wall_s')} s wall, "
        f"{meta.get('collector_starts')} collector starts)"
    )
    print(soak_report.render_table(checks))
    out = results or RESULTS / f"soak_{meta.get('mode', 'run')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = soak_report.results_json(
        checks, res, {**meta, "markdown": soak_report.render_markdown(checks)}
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {out}; run directory: {run_dir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
