"""Helpers for the CLI, headless-collector and secrets tests: run the real ``hashwatch``
console script of this venv as a subprocess, in an isolated environment (HOME and the XDG
dirs point into tmp_path, so no operator config or database is ever read or written).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feeds.demo.exchange_server import ExchangeServer
from feeds.demo.mempool_server import Chain, MempoolDemoServer

REPO = Path(__file__).resolve().parent.parent
HASHWATCH = Path(sys.executable).parent / "hashwatch"
BLOCKS_CSV = REPO / "tests" / "data" / "blocks_937440_942199.csv"


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HASHWATCH", "XDG_")) and k not in ("NO_COLOR",)
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONUNBUFFERED="1",
        # Belt and braces: nothing in these tests may reach a real upstream.
        no_proxy="*",
        NO_PROXY="*",
    )
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    env.pop("HTTP_PROXY", None)
    env.pop("HTTPS_PROXY", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def run(
    args: Sequence[str | os.PathLike[str]],
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Result:
    """Run ``hashwatch ARGS`` to completion (synchronously)."""
    proc = subprocess.run(
        [str(HASHWATCH), *map(str, args)],
        cwd=home,
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


async def arun(
    args: Sequence[str | os.PathLike[str]],
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    limit_s: float = 60.0,
) -> Result:
    """Like :func:`run` but lets this event loop keep serving local test servers."""
    proc = await asyncio.create_subprocess_exec(
        str(HASHWATCH),
        *map(str, args),
        cwd=home,
        env=cli_env(home, env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err, result.err
    assert "Traceback" not in result.out, result.out


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def local_feeds_toml(
    *,
    mempool_ws: str,
    mempool_rest: str,
    exchange_ws: Mapping[str, str],
    exchange_rest: Mapping[str, str],
    backfill_blocks: int = 20,
) -> str:
    """``[feeds]`` tables pointing every upstream at local servers."""
    lines = [
        "[feeds]",
        f"backfill_blocks = {backfill_blocks}",
        "",
        "[feeds.mempool]",
        f"ws_url = {toml_str(mempool_ws)}",
        f"rest_url = {toml_str(mempool_rest)}",
    ]
    for name in ("coinbase", "kraken", "bitstamp"):
        lines += ["", f"[feeds.{name}]", f"ws_url = {toml_str(exchange_ws[name])}"]
        if name in exchange_rest:
            lines.append(f"rest_url = {toml_str(exchange_rest[name])}")
    return "\n".join(lines) + "\n"


def db_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read with a short-lived read-only connection (the collector may be writing)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def db_count(path: Path, table: str, where: str = "1", params: Sequence[Any] = ()) -> int:
    if not path.exists():
        return 0
    rows = db_rows(path, f"SELECT count(*) FROM {table} WHERE {where}", params)
    return int(rows[0][0]) if rows else 0


def all_text_cells(path: Path) -> list[str]:
    """Every text (and blob, decoded) value of every table: for secret scans."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        ]
        out: list[str] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, str):
                        out.append(cell)
                    elif isinstance(cell, bytes):
                        out.append(cell.decode("utf-8", "replace"))
        return out
    finally:
        conn.close()


async def wait_for(pred: Any, limit_s: float, what: str, step: float = 0.05) -> None:
    """Poll ``pred()`` (sync) until true; fail with ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


# ------------------------------------------------------------ a running collector
#: One log event per line: time, level, logger, message.
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.\-]+: \S"
)
CHAIN_BLOCKS = 30
BACKFILL = 20


@dataclass
class Upstreams:
    mempool: MempoolDemoServer
    exchange: ExchangeServer

    def feeds_toml(self) -> str:
        ex = self.exchange
        return local_feeds_toml(
            mempool_ws=self.mempool.ws_url,
            mempool_rest=self.mempool.rest_url,
            exchange_ws={p: ex.ws_url(p) for p in ("coinbase", "kraken", "bitstamp")},
            exchange_rest={
                "coinbase": ex.rest_url("coinbase"),
                "kraken": ex.rest_url("kraken"),
                # bitstamp has no REST poller, but no default may point outside either
                "bitstamp": ex.rest_url("bitstamp"),
            },
            backfill_blocks=BACKFILL,
        )


@contextlib.asynccontextmanager
async def local_upstreams() -> AsyncIterator[Upstreams]:
    """A mempool demo server with a recent 30-block chain and an exchange server."""
    now = int(time.time())
    chain = Chain(start_height=940_000, start_time=now - CHAIN_BLOCKS * 600)
    for _ in range(CHAIN_BLOCKS - 1):
        chain.next_block()
    mempool = await MempoolDemoServer(chain).start()
    await mempool.set_price(65_000)
    exchange = await ExchangeServer(heartbeat_interval_s=0.5, initial_price=65_000.0).start()
    try:
        yield Upstreams(mempool, exchange)
    finally:
        await exchange.close()
        await mempool.close()


@dataclass
class Collector:
    proc: asyncio.subprocess.Process
    db: Path
    config: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def wait_exit(self, limit_s: float) -> tuple[int, float]:
        started = time.monotonic()
        code = await asyncio.wait_for(self.proc.wait(), limit_s)
        return code, time.monotonic() - started

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_collector(
    tmp_path: Path,
    config_text: str,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    mode: int = 0o600,
) -> Collector:
    """``hashwatch run --headless`` with this config (file mode ``mode``) and a fresh
    database; stderr goes to a file (a pipe nobody reads could block the collector)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text)
    cfg.chmod(mode)
    db = tmp_path / "collector.db"
    err = tmp_path / "stderr.log"
    with err.open("wb") as err_file:
        proc = await asyncio.create_subprocess_exec(
            str(HASHWATCH),
            *extra_args,
            "run",
            "--headless",
            "--config",
            str(cfg),
            "--db",
            str(db),
            cwd=tmp_path,
            env=cli_env(tmp_path, env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err_file,
        )
    return Collector(proc, db, cfg, err)


async def wait_running(up: Upstreams, c: Collector) -> None:
    """Until the backfill and live prices are stored (prices are published meanwhile)."""

    def ready() -> bool:
        assert c.proc.returncode is None, f"collector exited early:\n{c.stderr}"
        up.exchange.publish_price(65_000 + (time.time() % 10))
        return (
            db_count(c.db, "blocks") >= BACKFILL
            and db_count(c.db, "price_ticks", "source = 'coinbase'") > 0
            and db_count(c.db, "price_ticks", "source = 'kraken'") > 0
        )

    await wait_for(ready, 20.0, "backfilled blocks and live prices in the database", step=0.1)


def assert_clean_logs(text: str) -> None:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the collector logs something"
    bad = [line for line in lines if not LOG_LINE.match(line)]
    assert not bad, "every stderr line is one log event with a level:\n" + "\n".join(bad)


# ------------------------------------------------------------------ listening sockets
def _hex_addr(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = ".".join(str(b) for b in raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        host = ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))
    return host, int(port_hex, 16)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds
    (Linux /proc; addresses as dotted IPv4 or full hex IPv6)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
            if m:
                inodes.add(m.group(1))
    out = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A = LISTEN
                out.append(_hex_addr(parts[1]))
    return out


LOOPBACK = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}


async def stop(proc: asyncio.subprocess.Process, limit_s: float = 5.0) -> int:
    """SIGTERM and wait; a process that does not stop in time is killed (no stray
    collectors after a failed test) and the test fails."""
    if proc.returncode is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"process did not stop within {limit_s} s of SIGTERM") from None
