"""Fault machinery of the soak: restartable receivers, the write lock, the seeded schedule.

Everything binds 127.0.0.1 only. The receivers log every message they accept as one JSON line
(``received_at``, ``title``, ``body``) so that the delivery check reads the same artefacts a
person would, after the run.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import random
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

log = logging.getLogger(__name__)

#: Every fault class of issue 6; the short soak injects each at least once.
FAULT_KINDS: tuple[str, ...] = (
    "ws_cut",  # abort websocket connections (mempool and an exchange)
    "bad_frames",  # garbage, truncated, wrong-typed and oversized frames
    "reorg",  # replace the top blocks with a competing branch
    "rest_429",  # mempool REST: 429 with Retry-After
    "rest_500",  # mempool REST: 500s
    "rest_timeout",  # mempool REST: an answer slower than the client's timeout
    "notify_down",  # a receiver stopped for a stretch, then restarted on the same port
    "db_lock",  # another process holds the write lock for 5 s
    "sigkill",  # SIGKILL the collector, restart it
)


class JsonLog:
    """Append-only JSONL file shared by a receiver's threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class JsonReceiver:
    """The ``json://`` target: apprise posts ``{"title", "message", ...}``. Stoppable and
    restartable on the same port (a target that refuses connections for a while)."""

    def __init__(self, log_path: Path, port: int = 0) -> None:
        self.log = JsonLog(log_path)
        self.port = port
        self.running = False
        self._runner: web.AppRunner | None = None

    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = {"message": raw.decode("utf-8", "replace")}
        self.log.append(
            {
                "received_at": time.time(),
                "title": body.get("title", "") if isinstance(body, dict) else "",
                "body": body.get("message", "") if isinstance(body, dict) else str(body),
            }
        )
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.running = True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.running = False


class _SmtpHandler:
    def __init__(self, log: JsonLog) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain", "html"))
        text = part.get_content() if part is not None else ""
        self.log.append({"received_at": time.time(), "title": str(msg["Subject"]), "body": text})
        return "250 OK"


class _FixedPortController(Controller):
    """aiosmtpd probes the configured port after binding; with port 0 that probe fails."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpReceiver:
    """The ``mailto://`` target (aiosmtpd in its own thread), restartable on its port."""

    def __init__(self, log_path: Path) -> None:
        self.log = JsonLog(log_path)
        self.port = 0
        self.running = False
        self._controller: Controller | None = None

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=soak@example.com&to=ops@example.com"

    def start(self) -> None:
        self._controller = _FixedPortController(
            _SmtpHandler(self.log), hostname="127.0.0.1", port=self.port, ready_timeout=10
        )
        self._controller.start()
        self.port = self._controller.port
        self.running = True

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self.running = False


def hold_write_lock(db_path: Path, seconds: float) -> float:
    """Take the database's write lock (``BEGIN IMMEDIATE``) and keep it ``seconds``.

    Runs in the harness, a process other than the collector. Returns how long it waited to
    get the lock (the collector's writer may hold it briefly)."""
    started = time.monotonic()
    conn = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        waited = time.monotonic() - started
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        return waited
    finally:
        conn.close()


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``at_block`` is the index into the replayed blocks after which
    it fires (so the schedule is tied to simulated time, not to the machine's speed)."""

    at_block: int
    kind: str
    arg: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_schedule(
    n_blocks: int,
    *,
    seed: int,
    per_kind: dict[str, int],
    warmup_blocks: int = 10,
    windows: dict[str, tuple[float, float]] | None = None,
) -> list[Fault]:
    """A seeded schedule with ``per_kind[k]`` faults of each kind spread over the replay.

    Each kind's faults fall in distinct slices of the replay (so they spread over the month)
    at a random point within the slice. The last 5% of the replay is kept fault-free, so the
    end state is judged after the system had a chance to settle. ``windows`` narrows a kind
    to a fraction of the replay (the full month kills only in its first half, so that the
    last collector runs two weeks and its memory shows any leak).
    """
    rng = random.Random(seed)
    usable = max(1, int(n_blocks * 0.95) - warmup_blocks)
    out: list[Fault] = []
    for kind in FAULT_KINDS:
        count = per_kind.get(kind, 0)
        a, b = (windows or {}).get(kind, (0.0, 1.0))
        start, span = warmup_blocks + int(usable * a), max(1, int(usable * (b - a)))
        for i in range(count):
            lo = start + span * i // count
            hi = start + span * (i + 1) // count
            at = rng.randrange(lo, max(lo + 1, hi))
            out.append(Fault(at, kind, _arg_for(kind, i, rng)))
    out.sort(key=lambda f: (f.at_block, f.kind))
    return out


def _arg_for(kind: str, i: int, rng: random.Random) -> str:
    if kind == "ws_cut":
        return ("mempool", "coinbase", "kraken", "bitstamp")[i % 4]
    if kind == "bad_frames":
        return ("mempool", "coinbase", "kraken", "bitstamp")[i % 4]
    if kind == "notify_down":
        return ("json", "smtp")[i % 2]
    if kind == "reorg":
        return str(1 + i % 2)  # depth
    if kind == "sigkill":
        return f"{rng.uniform(0.0, 2.0):.2f}"  # seconds the machine stays down
    return ""


async def run_in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
