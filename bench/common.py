"""Shared helpers for the benchmarks: machine info, result files, tables, process CPU time.

Every benchmark measures its figure *and* a baseline in the same run and reports the ratio,
so the numbers mean something on any machine; absolute figures are printed beside them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
#: Clock ticks per second for /proc/<pid>/stat utime/stime.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU model and count, Python, OS, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("websockets", "aiohttp", "sqlite_utils", "textual"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod.replace("_", "-"))
        except Exception:  # not installed: just not reported
            continue
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def command_line(module: str, argv: Sequence[str]) -> str:
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in argv)])


def write_result(
    name: str,
    figures: dict[str, Any],
    *,
    command: str,
    out_dir: Path | None = None,
) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``bench/results``) and return its path."""
    out_dir = RESULTS_DIR if out_dir is None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "command": command,
        "figures": figures,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain aligned text table (first column left, the rest right aligned)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` from /proc/<pid>/stat (Linux; no psutil).

    Threads are included (the store writer is a thread). Children are not.
    """
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14, 15 of stat(5)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (all its threads)."""
    user, system = proc_cpu_split(pid)
    return user + system


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread of ``pid`` (``{tid: seconds}``; the main thread's tid is pid)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:  # the thread just ended
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_rss_bytes(pid: int) -> int:
    """Current resident set size of ``pid`` (VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def python() -> str:
    """The interpreter running the bench (the project's venv when run as documented)."""
    return sys.executable
