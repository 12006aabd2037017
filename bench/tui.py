"""The dashboard in a real pseudo-terminal against a minimal Textual app, in one run.

Baseline: a minimal Textual app (7 bordered widgets, each updated once per second). Both run
in their own pty (``--cols`` x ``--rows``, TERM=xterm-256color) while the output is drained.

1. **First full frame with a year of history**: time from spawn until every panel title is
   on the screen: ``hashwatch run`` on a database holding a year of history (built as in
   ``bench.backtest``; feeds disabled so nothing but start-up is timed) against the minimal
   app's 7 titles. Median of ``--launches``. Target: at most 1.5x the minimal app. The
   project's bytecode is compiled first, as an installed copy's is (Textual's always is).
2. **CPU and peak memory at realistic rates**: ``hashwatch run`` against the local
   upstreams of ``bench.cpu_headless`` (about 20 price messages/s, a block mid-interval),
   after warm-up, over ``--seconds``, beside the minimal app over the same interval. CPU from
   ``/proc/<pid>/stat``, peak RSS from ``VmHWM``. Targets: CPU at most 2x the minimal app,
   peak RSS at most 120 MiB.

    python -m bench.tui [--seconds 60] [--launches 3] [--cols 160 --rows 48]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, command_line, proc_cpu_seconds, python, table, write_result

NAME = "tui"
TARGET_CPU_X = 2.0
TARGET_RSS_MIB = 120.0
TARGET_FIRST_FRAME_X = 1.5
HASHWATCH_TITLES = (
    "Price BTC/USD",
    "Hashrate",
    "Difficulty",
    "Revenue",
    "Economics",
    "Blocks",
    "Alerts",
)
MINIMAL_TITLES = tuple(f"Widget {i}" for i in range(1, 8))
MINIMAL_APP = """
import time
from textual.app import App, ComposeResult
from textual.containers import Grid
from textual.widgets import Static

class Minimal(App):
    CSS = "Grid { grid-size: 4 2; } Static { border: round $accent; height: 1fr; }"

    def compose(self) -> ComposeResult:
        with Grid():
            for i in range(1, 8):
                w = Static(id=f"w{i}")
                w.border_title = f"Widget {i}"
                yield w

    def on_mount(self) -> None:
        self.n = 0
        self.tick()
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        self.n += 1
        now = time.strftime("%H:%M:%S")
        for i in range(1, 8):
            self.query_one(f"#w{i}", Static).update(f"{now}  update {self.n}  value {i * self.n}")

Minimal().run()
"""
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class PtyProcess:
    """A child on its own pseudo-terminal, output drained (and searched) by a thread."""

    def __init__(
        self, argv: list[str], *, cols: int, rows: int, env: dict[str, str], markers: tuple
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.markers = {m.encode() for m in markers}
        self.first_frame_s: float | None = None
        self.bytes_out = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        tail = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            self.bytes_out += len(chunk)
            if self.first_frame_s is None:
                text = tail + _ANSI.sub(b"", chunk)
                self.markers = {m for m in self.markers if m not in text}
                if not self.markers:
                    self.first_frame_s = time.monotonic() - self.started
                tail = text[-64:]

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def stop(self, timeout: float = 3.0) -> int:
        """``q`` (the dashboard) and ctrl+q (Textual's default quit) first, as a user would;
        then SIGTERM, then SIGKILL."""
        self.send(b"q\x11")
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        self._thread.join(timeout=2.0)
        os.close(self.master)
        return code


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLORTERM="truecolor", LANG="C.UTF-8")
    return env


def _hashwatch(cfg: Path) -> list[str]:
    from bench.cpu_headless import hashwatch_command

    return [*hashwatch_command(), "--config", str(cfg), "--log-level", "warning", "run"]


def _wait_frame(p: PtyProcess, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while p.first_frame_s is None:
        if p.proc.poll() is not None or time.monotonic() > deadline:
            missing = sorted(m.decode() for m in p.markers)
            raise RuntimeError(f"no full frame (exit {p.proc.poll()}; missing {missing})")
        time.sleep(0.005)
    return p.first_frame_s


def compile_bytecode() -> None:
    """Compile hashwatch's bytecode, as installing it does (pip compiles every module).

    Textual, in site-packages, starts from compiled bytecode; this checkout may not (sources
    edited since the last compile, ``PYTHONDONTWRITEBYTECODE`` set), and then every dashboard
    launch compiled its stale modules from source again: start-up time that an installed
    hashwatch never pays, counted against the dashboard only."""
    import compileall

    for package in ("feeds", "alerts", "tui"):
        compileall.compile_dir(REPO / package, quiet=1)


def first_frames(tmp: Path, launches: int, cols: int, rows: int, days: int = 365) -> dict[str, Any]:
    """Phase 1: a year of history, no feeds; alternate the two apps."""
    from bench.backtest import build_db
    from bench.cpu_headless import write_config

    compile_bytecode()

    db = tmp / "year.db"
    t = time.perf_counter()
    counts = build_db(db, days, time.time())
    build_s = time.perf_counter() - t
    cfg = tmp / "year.toml"
    write_config(cfg, db, {}, 2200)
    cfg.write_text(
        cfg.read_text()
        + "".join(f"[feeds.{n}]\nenabled = false\n" for n in ("mempool", "coinbase", "kraken"))
        + "[feeds.bitstamp]\nenabled = false\n",
        encoding="utf-8",
    )
    mini: list[float] = []
    dash: list[float] = []
    for _ in range(launches):
        for argv, markers, out in (
            ([python(), "-c", MINIMAL_APP], MINIMAL_TITLES, mini),
            (_hashwatch(cfg), HASHWATCH_TITLES, dash),
        ):
            p = PtyProcess(argv, cols=cols, rows=rows, env=_env(), markers=markers)
            try:
                out.append(_wait_frame(p))
            finally:
                p.stop()
    m, d = statistics.median(mini), statistics.median(dash)
    return {
        "history": counts,
        "build_db_s": round(build_s, 1),
        "minimal_first_frame_s": round(m, 3),
        "dashboard_first_frame_s": round(d, 3),
        "first_frame_ratio": round(d / m, 2),
        "first_frame_runs": {"minimal": mini, "dashboard": dash},
    }


async def steady_state(
    tmp: Path, seconds: float, warmup_s: float, cols: int, rows: int, blocks: int = 2200
) -> dict[str, Any]:
    """Phase 2: the dashboard on live local feeds beside the minimal app."""
    from bench.cpu_headless import Upstreams, _warm, write_config

    ups = Upstreams(blocks, 20.0)
    urls = await ups.start()
    db, cfg = tmp / "live.db", tmp / "live.toml"
    write_config(cfg, db, urls, blocks)
    dash = PtyProcess(_hashwatch(cfg), cols=cols, rows=rows, env=_env(), markers=HASHWATCH_TITLES)
    mini = PtyProcess(
        [python(), "-c", MINIMAL_APP], cols=cols, rows=rows, env=_env(), markers=MINIMAL_TITLES
    )
    try:
        ups.start_drivers(first_block_in_s=1e9)
        deadline = time.monotonic() + 120.0
        while not _warm(db, blocks):
            if dash.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not warm up (exit {dash.proc.poll()})")
            await asyncio.sleep(0.25)
        await asyncio.sleep(warmup_s)
        ups._tasks[-1].cancel()
        ups._tasks[-1] = asyncio.create_task(ups._blocks(seconds / 2), name="blocks")
        t0 = time.monotonic()
        d0, m0 = proc_cpu_seconds(dash.pid), proc_cpu_seconds(mini.pid)
        await asyncio.sleep(seconds)
        d1, m1 = proc_cpu_seconds(dash.pid), proc_cpu_seconds(mini.pid)
        wall = time.monotonic() - t0
        d_rss, m_rss = peak_rss_mib(dash.pid), peak_rss_mib(mini.pid)
    finally:
        codes = [await asyncio.to_thread(p.stop) for p in (dash, mini)]
        await ups.close()
    d_pct, m_pct = (d1 - d0) / wall * 100, (m1 - m0) / wall * 100
    return {
        "seconds": round(wall, 1),
        "price_msgs_per_s": 20.0,
        "dashboard_cpu_pct": round(d_pct, 3),
        "minimal_cpu_pct": round(m_pct, 3),
        "cpu_ratio": round(d_pct / m_pct, 2) if m_pct > 0 else None,
        "dashboard_peak_rss_mib": round(d_rss, 1),
        "minimal_peak_rss_mib": round(m_rss, 1),
        "exit_codes": codes,
    }


def run(
    seconds: float = 60.0,
    launches: int = 3,
    cols: int = 160,
    rows: int = 48,
    warmup_s: float = 10.0,
    *,
    days: int = 365,
    blocks: int = 2200,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hashwatch-bench-"))
    try:
        first = first_frames(tmp, launches, cols, rows, days)
        steady = asyncio.run(steady_state(tmp, seconds, warmup_s, cols, rows, blocks))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures: dict[str, Any] = {"cols": cols, "rows": rows, "history_days": days, **first, **steady}
    cpu_x = figures["cpu_ratio"]
    figures["meets_cpu"] = cpu_x is not None and cpu_x <= TARGET_CPU_X
    figures["meets_rss"] = figures["dashboard_peak_rss_mib"] <= TARGET_RSS_MIB
    figures["meets_first_frame"] = figures["first_frame_ratio"] <= TARGET_FIRST_FRAME_X
    print(f"tui: {cols}x{rows} pty; CPU over {steady['seconds']:.0f} s at ~20 price msgs/s")
    rows_ = [
        (
            "first full frame (s), year of history",
            first["dashboard_first_frame_s"],
            first["minimal_first_frame_s"],
            f"{first['first_frame_ratio']}x (<= {TARGET_FIRST_FRAME_X}x)",
        ),
        (
            "CPU (% of one core)",
            steady["dashboard_cpu_pct"],
            steady["minimal_cpu_pct"],
            f"{cpu_x}x (<= {TARGET_CPU_X:g}x)",
        ),
        (
            "peak RSS (MiB)",
            steady["dashboard_peak_rss_mib"],
            steady["minimal_peak_rss_mib"],
            f"<= {TARGET_RSS_MIB:g} MiB",
        ),
    ]
    print(table(rows_, ["figure", "dashboard", "minimal app", "ratio / target"]))
    argv = ["--seconds", f"{seconds:g}", "--launches", str(launches)]
    argv += ["--cols", str(cols), "--rows", str(rows)]
    path = write_result(NAME, figures, command=command_line("bench.tui", argv), out_dir=out_dir)
    print(f"written {path}")
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tui", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--launches", type=int, default=3, help="first-frame launches per app")
    p.add_argument("--cols", type=int, default=160)
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--days", type=int, default=365, help="days of history for the first frame")
    p.add_argument("--out-dir", type=Path, default=None, help="default: bench/results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(
        args.seconds,
        args.launches,
        args.cols,
        args.rows,
        args.warmup,
        days=args.days,
        out_dir=args.out_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
