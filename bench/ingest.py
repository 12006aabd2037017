"""Ingest throughput: Coinbase ticker frames through the real adapter, bus and writer.

A loopback :class:`~feeds.demo.exchange_server.ExchangeServer` in a **separate process**
(so its own CPU does not share the GIL with what is measured) pushes N Coinbase-format
ticker frames as fast as it can, each with a distinct upstream time so that every frame is
a distinct ``price_ticks`` row. In the same run, alternately:

* **raw**: websockets receive + ``json.loads`` only (no adapter, no bus, no storage): the
  limit of this machine and this server;
* **full**: ``run_ws(CoinbaseExchange)`` -> ``Bus`` -> ``Writer`` -> SQLite, exactly as
  ``Runtime`` wires them; the clock stops when every frame is committed, and the rows are
  counted afterwards (every frame must be stored).

The figure is stored rows/s over raw msg/s (target >= 0.7): when the writer falls more than
the bus bound behind, price ticks are coalesced by design and lost rows do not count
(``--pace`` finds the rate at which every frame is stored). Client CPU use (CPU seconds /
wall seconds of this process) is reported beside each rate: a raw run well below 100% means
the server, not the client, was the limit, and the ratio flatters the pipeline.

    python -m bench.ingest [--frames 200000] [--repeats 2] [--pace N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO, command_line, python, table, write_result

NAME = "ingest"
TARGET_RATIO = 0.7
#: Upstream time step between two frames: distinct microseconds keep (source, time) unique.
TIME_STEP_S = 1e-6
#: The blob server keeps at most this much queued in its transport (plus the socket's own).
WRITE_BUFFER_BYTES = 1 << 20
#: Frames per write of the blob server (~256 KiB).
CHUNK = 512


# ----------------------------------------------------------------------------- server side


async def _until(predicate: Callable[[], bool], step_s: float) -> None:
    """Poll ``predicate`` (state owned by code we must not instrument) every ``step_s``."""
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(step_s)


def _burst(frames: int) -> list[str]:
    """``frames`` Coinbase tickers, each with its own upstream time (distinct rows)."""
    import random

    from feeds.demo.exchange_server import coinbase_ticker

    rng = random.Random(1)
    t0 = float(int(time.time()) - 1)
    return [
        coinbase_ticker(
            65_000.0 + (i % 1000) * 0.01, t0 + i * TIME_STEP_S, 86_000_000_000 + i, 600_000 + i, rng
        )
        for i in range(frames)
    ]


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked (server-to-client) final text frame, RFC 6455 5.2."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


async def _serve_exchange(frames: int) -> None:
    """Child process: the demo ExchangeServer pushes the burst to each new subscriber."""
    from feeds.demo.exchange_server import ExchangeServer

    burst = _burst(frames)  # pre-built, so building frames never slows the push
    async with ExchangeServer(heartbeat_interval_s=1.0) as srv:
        sys.stdout.write(f"PORT {srv.port}\n")
        sys.stdout.flush()
        while True:
            await _until(lambda: srv.clients("coinbase") > 0, 0.002)
            for frame in burst:
                srv.send_raw("coinbase", frame)
            await srv.drain("coinbase")
            await _until(lambda: srv.clients("coinbase") == 0, 0.002)  # a burst per connection


async def _serve_blob(frames: int, pace: float | None = None) -> None:
    """Child process: a websockets server that answers the subscribe and then writes the
    whole burst, pre-encoded as websocket frames, straight into the socket. The server then
    costs next to nothing, so the raw run measures the client, not the server."""
    from websockets.asyncio.server import ServerConnection, serve

    ack = json.dumps({"type": "subscriptions", "channels": [{"name": "ticker"}]})
    encoded = [ws_text_frame(f.encode()) for f in [ack, *_burst(frames)]]
    # ~256 KiB chunks: one huge write would make asyncio memmove its buffer on every send.
    chunks = [b"".join(encoded[i : i + CHUNK]) for i in range(0, len(encoded), CHUNK)]
    del encoded

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the subscribe
        transport = ws.transport
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, chunk in enumerate(chunks):
            transport.write(chunk)
            await _until(lambda: transport.get_write_buffer_size() < WRITE_BUFFER_BYTES, 1e-4)
            if pace:  # --pace: frames per second instead of as fast as possible
                await asyncio.sleep(max(0.0, started + (i + 1) * CHUNK / pace - loop.time()))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=1 << 20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        await server.serve_forever()


@contextlib.contextmanager
def server_process(frames: int, kind: str = "blob", pace: float | None = None) -> Any:
    """Start the pushing server in a child process; yield its coinbase websocket URL."""
    proc = subprocess.Popen(
        [python(), "-m", "bench.ingest", "--serve", str(frames), "--server", kind]
        + (["--pace", str(pace)] if pace else []),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bench server did not start: {line!r}")
        # (the blob server answers on any path)
        yield f"ws://127.0.0.1:{int(line.split()[1])}/ws/coinbase"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- client side


@dataclass
class RunResult:
    mode: str
    frames: int
    wall_s: float
    cpu_s: float
    rows: int | None = None
    coalesced: int = 0

    @property
    def rate(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def stored_rate(self) -> float:
        """Rows stored per second (raw runs store nothing: their message rate)."""
        if self.rows is None:
            return self.rate
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_use(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


async def run_raw(url: str, frames: int) -> RunResult:
    """websockets receive + json.loads, nothing else; timed from the first ticker."""
    from websockets.asyncio.client import connect

    subscribe = json.dumps(
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}
    )
    # The same transport settings and the same JSON entry point as the real adapter
    # (feeds.transport: no permessage-deflate, json's C scanner called directly), so the
    # ratio measures what the adapter, bus and writer add, not a cheaper parse path.
    from feeds.transport import load_object

    n = 0
    t0 = c0 = 0.0
    async with connect(url, max_size=1 << 20, compression=None) as ws:
        await ws.send(subscribe)
        async for frame in ws:
            msg = load_object(frame)
            if msg.get("type") != "ticker":
                continue
            n += 1
            if n == 1:
                t0, c0 = time.perf_counter(), time.process_time()
            elif n == frames:
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # n - 1 frames were received between the two clock readings
    return RunResult("raw", frames, wall * frames / max(frames - 1, 1), cpu)


async def run_full(url: str, frames: int, db_path: Path) -> RunResult:
    """The real adapter, bus and writer; timed from the first ticker's receipt to the
    commit of the last one. Every frame must end up as a row."""
    from feeds.bus import Bus
    from feeds.sources.coinbase import CoinbaseExchange
    from feeds.transport import run_ws
    from feeds.writer import Writer

    bus = Bus()
    writer = Writer(db_path)
    sub = bus.subscribe(maxsize=100_000, name="writer")  # as feeds.runtime.Runtime
    adapter = CoinbaseExchange(url)
    stats = adapter.stats
    await writer.open()
    writer_task = asyncio.create_task(writer.run(sub), name="writer")
    # The frames' upstream times are fixed when the server starts; a later run must not
    # spend time warning about that "clock offset".
    feed_task = asyncio.create_task(
        run_ws(adapter, bus, clock_offset_warn_s=86_400.0), name="coinbase"
    )
    try:
        # Poll lightly (the hot path stays untouched); 1 ms granularity on a multi-second run.
        await _until(lambda: stats.events > 0, 0.001)
        t0, c0 = time.perf_counter(), time.process_time()
        await _until(lambda: stats.events >= frames, 0.001)
        await writer.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        feed_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed_task
        sub.close()
        await writer.close()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT count(*) FROM price_ticks WHERE source = 'coinbase'")
        count = rows.fetchone()[0]
    return RunResult("full", frames, wall, cpu, rows=count, coalesced=sub.coalesced)


def profile_full(url: str, frames: int, db_path: Path, top: int = 25) -> str:
    """One full run under cProfile (event-loop thread only; the writer thread is not seen)."""
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(run_full(url, frames, db_path))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def run(
    frames: int = 200_000,
    repeats: int = 2,
    *,
    server: str = "blob",
    pace: float | None = None,
    out_dir: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Run the benchmark, print the table, write the result file; return the figures."""
    raws: list[RunResult] = []
    fulls: list[RunResult] = []
    prof_text = None
    with (
        tempfile.TemporaryDirectory(prefix="hashwatch-bench-") as tmp,
        server_process(frames, server, pace) as url,
    ):
        for i in range(repeats):
            raws.append(asyncio.run(run_raw(url, frames)))
            fulls.append(asyncio.run(run_full(url, frames, Path(tmp) / f"full{i}.db")))
        if profile:
            prof_text = profile_full(url, frames, Path(tmp) / "profile.db")
    raw = max(raws, key=lambda r: r.rate)
    full = max(fulls, key=lambda r: r.stored_rate)
    # The figure: rows actually stored per second against the raw limit. When the writer
    # falls behind by more than the bus bound, price ticks are coalesced by design (the
    # newest per source wins) and the lost rows do not count.
    ratio = full.stored_rate / raw.rate if raw.rate else 0.0
    all_stored = all(r.rows == frames for r in fulls)
    rows = [
        ("raw: receive + json.loads", raw.rate, "-", raw.wall_s, f"{raw.cpu_use:.0%}"),
        (
            "full: adapter+bus+writer",
            full.rate,
            full.stored_rate,
            full.wall_s,
            f"{full.cpu_use:.0%}",
        ),
    ]
    how = f"paced at {pace:,.0f}/s" if pace else "as fast as possible"
    print(
        f"ingest: {frames:,} Coinbase ticker frames over loopback ({server} server, {how}), "
        f"best of {repeats}"
    )
    print(table(rows, ["run", "msg/s in", "rows/s stored", "seconds", "client CPU"]))
    print(f"rows stored: {[r.rows for r in fulls]} of {frames:,} per run")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(
        f"ratio stored rows/s : raw msg/s = {ratio:.2f} ({verdict} target >= {TARGET_RATIO}); "
        f"ingest only (adapter+bus) {full.rate / raw.rate:.2f}"
    )
    if not all_stored:
        print(
            "NOTE: not every frame was stored: the writer fell more than the bus bound "
            "(100,000 events) behind and price ticks were coalesced"
        )
    if prof_text:
        print(prof_text)
    figures = {
        "frames": frames,
        "repeats": repeats,
        "server": server,
        "pace_msgs_per_s": pace,
        "raw_msgs_per_s": round(raw.rate),
        "full_msgs_per_s": round(full.rate),
        "stored_rows_per_s": round(full.stored_rate),
        "ratio": round(ratio, 3),
        "ingest_ratio": round(full.rate / raw.rate, 3) if raw.rate else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "every_frame_stored": all_stored,
        "runs": [asdict(r) | {"rate": round(r.rate)} for r in raws + fulls],
    }
    argv = ["--frames", str(frames), "--repeats", str(repeats), "--server", server]
    if pace:
        argv += ["--pace", f"{pace:g}"]
    name = f"{NAME}_paced" if pace else NAME  # a paced run does not replace the main result
    path = write_result(name, figures, command=command_line("bench.ingest", argv), out_dir=out_dir)
    print(f"written {path}")
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=2, help="alternating raw/full runs; best kept")
    p.add_argument("--profile", action="store_true", help="one more full run under cProfile")
    p.add_argument("--out-dir", type=Path, default=None, help="default: bench/results")
    p.add_argument(
        "--server",
        choices=["blob", "exchange"],
        default="blob",
        help="blob: pre-encoded frames written straight to the socket (default: the client "
        "is the limit); exchange: the demo ExchangeServer (slower than the client)",
    )
    p.add_argument(
        "--pace",
        type=float,
        default=None,
        metavar="MSGS_PER_S",
        help="blob server: push at this rate instead of as fast as possible (find the "
        "highest rate at which every frame is stored)",
    )
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.serve is not None:
        with contextlib.suppress(KeyboardInterrupt):
            if args.server == "blob":
                asyncio.run(_serve_blob(args.serve, args.pace))
            else:
                asyncio.run(_serve_exchange(args.serve))
        return 0
    run(
        args.frames,
        args.repeats,
        server=args.server,
        pace=args.pace,
        out_dir=args.out_dir,
        profile=args.profile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
