"""A real terminal for end-to-end tests: one tmux server per test on its own socket.

The pane runs a plain ``bash`` (no rc files) with ``HOME`` and the XDG directories inside the
test's ``tmp_path``, so neither the user's shell, tmux nor hashwatch config leaks in. The
screen is read with ``capture-pane -p`` (plain text, no escape sequences) and panels are cut
out of it by their border titles, so each check looks at one panel only.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Box-drawing characters Textual uses for panel borders (normal and focused).
BORDER = "─━"
PROMPT = "PROMPT$ "


def tmux_path() -> str | None:
    return shutil.which("tmux")


@dataclass(frozen=True)
class Screen:
    """One capture of the pane: its lines, padded to the pane width."""

    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def find_title(self, title: str) -> tuple[int, int] | None:
        """(row, column of the border char just before ``title``) of a panel's top border."""
        for row, line in enumerate(self.lines):
            for m in re.finditer(re.escape(title), line):
                if m.start() > 0 and line[m.start() - 1] in BORDER:
                    return row, m.start() - 1
        return None

    def panel(self, title: str) -> str | None:
        """The text inside the panel whose top border carries ``title``, or None.

        The panel spans from its border column to where its top border ends (a border
        char followed by blank: panels sit a blank column apart, and a panel may have text
        of a taller neighbour to its right), and down to the next row that starts a border
        at that column (the panel below) or the screen's footer lines.
        """
        found = self.find_title(title)
        if found is None:
            return None
        row, left = found
        top = self.lines[row]
        title_end = left + 1 + len(title)
        m = re.search(rf"[{BORDER}](?= |$)", top[title_end:])
        right = title_end + m.end() if m is not None else len(top)
        out = []
        for line in self.lines[row + 1 :]:
            cell = line[left:right]
            if cell[:1] and cell[:1] in BORDER and cell[1:2].strip():
                break  # the next panel's top border (its title follows the first char)
            if line.startswith(" feeds ") or line.startswith(" q "):
                break
            out.append(cell)
        return "\n".join(out)

    def footer(self) -> str | None:
        for line in self.lines:
            if line.startswith(" feeds "):
                return line
        return None


class Tmux:
    """A detached tmux session of a given size running a clean bash in ``home``."""

    def __init__(self, home: Path, width: int, height: int) -> None:
        exe = tmux_path()
        if exe is None:
            raise RuntimeError("tmux is not installed")
        self.exe = exe
        self.socket = f"hashwatch-test-{uuid.uuid4().hex[:12]}"
        self.home = home
        self.width, self.height = width, height
        self.started = False

    def _tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [self.exe, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> None:
        for sub in ("config", "state", "data", "cache"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        env = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PS1": PROMPT,
            "HISTFILE": "/dev/null",
        }
        # env -i: nothing of the test runner's environment (HASHWATCH_CONFIG, NO_COLOR, ...)
        # reaches the pane; tmux itself sets TERM.
        shell = "env -i " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell += " bash --norc --noprofile"
        self._tmux(
            "new-session",
            "-d",
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "-s",
            "t",
            shell,
        )
        self.started = True
        # Keep the pane after its shell exits: a crash stays readable in the failure message.
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on")
        self.wait_for(lambda s: PROMPT.strip() in s.text, 10, "the shell prompt")

    def kill(self) -> None:
        if self.started:
            self._tmux("kill-server", check=False)
            self.started = False

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def type_line(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)
        self._tmux("send-keys", "-t", "t", "Enter")

    def capture(self) -> Screen:
        out = self._tmux("capture-pane", "-p", "-t", "t")
        lines = out.split("\n")[: self.height]
        return Screen([line.ljust(self.width) for line in lines])

    def flags(self) -> dict[str, str]:
        """Terminal modes tmux tracks for the pane (alternate screen, mouse, cursor...)."""
        names = (
            "alternate_on",
            "cursor_flag",
            "keypad_flag",
            "mouse_any_flag",
            "mouse_button_flag",
            "mouse_standard_flag",
            "mouse_sgr_flag",
            "pane_current_command",
            "pane_dead",
        )
        out = self._tmux("display-message", "-p", "-t", "t", "|".join(f"#{{{n}}}" for n in names))
        return dict(zip(names, out.rstrip("\n").split("|"), strict=True))

    def wait_for(
        self, ok: Callable[[Screen], bool], timeout_s: float, what: str, poll_s: float = 0.1
    ) -> Screen:
        """Poll the screen until ``ok(screen)``; on timeout fail showing the last screen."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.capture()
            if ok(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g} s waiting for {what}; screen:\n{screen.text}"
                )
            time.sleep(poll_s)
