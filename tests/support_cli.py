"""Helpers for the CLI, headless-collector and secrets tests: run the real ``hashwatch``
console script of this venv as a subprocess, in an isolated environment (HOME and the XDG
dirs point into tmp_path, so no operator config or database is ever read or written).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
