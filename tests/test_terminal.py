"""Real-terminal test of the dashboard: ``hashwatch demo`` in tmux, read with capture-pane.

The venv's console script runs in a clean bash inside a detached tmux session (own socket per
test, killed at teardown). The test waits until every panel shows data from the demo replay
(real headers through the real adapters, runtime, store and metrics), opens and closes the
help screen, quits with ``q`` and checks that the process exited 0 and left the terminal as
it found it: main screen, cursor shown, mouse reporting off, line discipline cooked.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support_terminal import Screen, Tmux, tmux_path

from feeds.events import Block
from tui.bridge import MAX_PENDING_BLOCKS, DisplayBuffer

HASHWATCH = Path(sys.executable).parent / "hashwatch"
#: 600x: a block about every wall second, ticks every ~30 ms; the backfill of ~3,500 real
#: blocks from the local mempool stand-in fills the windows within seconds.
SPEED = 600
DATA_TIMEOUT_S = 40.0
#: a block height as the blocks panel prints it
HEIGHT_ROW = re.compile(r"^\s*\d{3},\d{3}\s+\S")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[int, int], Tmux]]:
    if tmux_path() is None:
        pytest.skip("tmux is not installed (CI installs it)")
    made: list[Tmux] = []

    def make(width: int, height: int) -> Tmux:
        term = Tmux(tmp_path / "home", width, height)
        made.append(term)
        term.start()
        return term

    yield make
    for term in made:
        term.kill()


def start_demo(term: Tmux, tmp_path: Path) -> None:
    assert HASHWATCH.exists(), f"console script missing: {HASHWATCH}"
    cmd = [str(HASHWATCH), "demo", "--db", str(tmp_path / "demo.db"), "--speed", str(SPEED)]
    term.type_line(f"cd {shlex.quote(str(tmp_path))} && {shlex.join(cmd)}; echo EXIT=$?")


def _need(problems: list[str], text: str | None, what: str, *patterns: str) -> None:
    if text is None:
        problems.append(f"{what}: panel not found")
        return
    for pat in patterns:
        if not re.search(pat, text, re.M):
            problems.append(f"{what}: no match for {pat!r}")


def panel_problems(screen: Screen, *, wide: bool) -> list[str]:
    """What is still missing for "every panel shows data" (empty: all there)."""
    problems: list[str] = []
    if "REPLAY" not in screen.lines[0]:
        problems.append("header: no REPLAY label")
    _need(problems, screen.panel("Price BTC/USD"), "price", r"\$\d{1,3}(,\d{3})+\b")
    unit = r" EH/s" if wide else ""
    _need(
        problems,
        screen.panel("Hashrate (EH/s)"),
        "hashrate",
        *(rf"\b{w} +\d[\d,]*\.\d{unit} ±\d+%" for w in ("1d", "3d", "7d")),
        # implied hashrate and both peak distances on one line (real 4-digit EH/s figures
        # once wrapped it and pushed the compact chart out), then the daily chart
        rf"impl +\d[\d,]*\.\d{unit} .*30d?.* [+-]?\d+\.\d%.* 90d [+-]?\d+\.\d%",
        r"daily [▁▂▃▄▅▆▇█ ]*[▁▂▃▄▅▆▇█]",
    )
    _need(
        problems,
        screen.panel("Difficulty & epoch"),
        "difficulty",
        r"\d+\.\d+ T\b",
        r"last retarget [+-]\d+\.\d+%",
        r"next [+-]\d+\.\d+% ±\d",
        r"\d+ left",
    )
    _need(
        problems,
        screen.panel("Revenue"),
        "revenue",
        r"\$\d+\.\d+/PH/day",
        r"\d[\d,]* sats/PH/day",
        r"fees \d+(\.\d+)?% of reward",
    )
    _need(
        problems,
        screen.panel("Economics ($/PH/day)"),
        "economics",
        r"cost \$\d",
        r"margin -?\$\d+\.\d\d",
        r"-?\d+\.\d+% (above|below)",
    )
    _need(
        problems,
        screen.panel("Alerts"),
        "alerts",
        r"FIRING|PENDING|RESOLVED|nothing firing or pending",
    )
    blocks = screen.panel("Blocks")
    _need(problems, blocks, "blocks", r"height +age +interval +pool")
    if blocks is not None:
        rows = [line for line in blocks.splitlines() if HEIGHT_ROW.match(line)]
        if len(rows) < 3:
            problems.append(f"blocks: {len(rows)} rows with heights")
        # The newest row is the tip the metrics know: its place in the epoch matches the
        # difficulty panel's "N left" (the backfill arrives newest-first and must not bury it).
        left = re.search(r"(\d[\d,]*) left", screen.panel("Difficulty & epoch") or "")
        if rows and left:
            top = int(rows[0].split()[0].replace(",", ""))
            if (top + int(left.group(1).replace(",", ""))) % 2016:
                problems.append(f"blocks: newest row {top} is not the tip ({left.group(0)})")
    live = " live" if wide else ""
    _need(
        problems,
        screen.footer(),
        "feeds footer",
        *(rf"● {src}{live} \d" for src in ("bitstamp", "coinbase", "kraken", "mempool")),
    )
    return problems


def wait_for_data(term: Tmux, *, wide: bool) -> Screen:
    last: list[str] = []

    def ok(screen: Screen) -> bool:
        last[:] = panel_problems(screen, wide=wide)
        return not last

    try:
        return term.wait_for(ok, DATA_TIMEOUT_S, "every panel to show data")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstill missing: {last}") from None


def quit_and_check_clean(term: Tmux) -> None:
    term.send("q")
    screen = term.wait_for(
        lambda s: re.search(r"^EXIT=\d+", s.text, re.M) is not None, 15, "the demo to exit"
    )
    exit_line = re.search(r"^EXIT=(\d+)", screen.text, re.M)
    assert exit_line is not None and exit_line.group(1) == "0", screen.text
    flags = term.flags()
    assert flags["alternate_on"] == "0", flags  # back on the main screen
    assert flags["cursor_flag"] == "1", flags  # cursor visible again
    mouse = {k: v for k, v in flags.items() if k.startswith("mouse_")}
    assert set(mouse.values()) == {"0"}, mouse  # no mouse reporting left on
    assert flags["pane_current_command"] == "bash" and flags["pane_dead"] == "0", flags
    # No escape sequences leaked as text, and the line discipline is cooked again: the
    # shell echoes what is typed and reads whole lines.
    assert "\x1b" not in screen.text and "[?" not in screen.text, screen.text
    term.type_line(
        "echo MODES=$(stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ,)"
    )
    after = term.wait_for(
        lambda s: re.search(r"^MODES=\S+", s.text, re.M) is not None, 10, "stty output"
    )
    modes = re.search(r"^MODES=(\S+)", after.text, re.M)
    assert modes is not None and modes.group(1) == "icanon,echo,", after.text


@pytest.mark.slow
def test_demo_in_a_real_terminal_160x48(terminal, tmp_path: Path) -> None:
    term = terminal(160, 48)
    start_demo(term, tmp_path)
    screen = wait_for_data(term, wide=True)
    # The wide layout shows units and dates the compact one leaves out.
    difficulty = screen.panel("Difficulty & epoch")
    assert difficulty is not None and re.search(r"\(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)", difficulty)

    term.send("?")
    help_screen = term.wait_for(lambda s: "hashwatch: keys" in s.text, 10, "the help screen")
    for words in ("Quit", "Pause", "Reload", "Test alert", "Help", "command palette", "$/PH/day"):
        assert words in help_screen.text, words
    term.send("Escape")
    term.wait_for(lambda s: "hashwatch: keys" not in s.text, 10, "the help screen to close")
    # Still the dashboard, still live after the help screen.
    wait_for_data(term, wide=True)

    quit_and_check_clean(term)


@pytest.mark.slow
def test_demo_in_a_real_terminal_80x24_compact(terminal, tmp_path: Path) -> None:
    term = terminal(80, 24)
    start_demo(term, tmp_path)
    screen = wait_for_data(term, wide=False)
    # Compact: one line per panel row fits 80 columns; nothing is cut mid-figure.
    assert all(len(line.rstrip()) <= 80 for line in screen.lines)
    quit_and_check_clean(term)


def test_backfill_flood_keeps_the_newest_heights_for_the_blocks_panel() -> None:
    """Between two repaints the buffer keeps a bounded number of blocks: the highest
    heights, even when REST backfill delivers them newest-first after the live tip."""

    def block(h: int, *, backfill: bool) -> Block:
        t = 1_700_000_000 + h
        return Block(h, f"h{h}", f"h{h - 1}", t, 0x17034219, "mempool", 1.0, backfill=backfill)

    buf = DisplayBuffer()
    for h in range(1000, 1008):  # the websocket's newest blocks
        buf.note(block(h, backfill=False))
    for h in range(999, 700, -1):  # then the backfill, page by page, newest first
        buf.note(block(h, backfill=True))
    kept = [b.height for b in buf.drain().blocks]
    assert len(kept) == MAX_PENDING_BLOCKS
    assert sorted(kept, reverse=True) == list(range(1007, 1007 - MAX_PENDING_BLOCKS, -1))
    assert kept[:8] == list(range(1000, 1008))  # arrival order kept (reorgs replace in order)
