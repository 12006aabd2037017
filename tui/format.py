"""Display formatting: units are fixed in the data (DOMAIN.md), converted only here.

Every function takes ``None`` and returns the dash: a missing figure is never shown as a
number. Stale figures get text, not only a colour (``NO_COLOR`` terminals must see it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

DASH = "—"
STALE_MARK = "(stale)"
SPARK_CHARS = "▁▂▃▄▅▆▇█"
#: blocks per hashrate window (DOMAIN.md): the relative standard error is 1/sqrt(n)
WINDOW_BLOCKS = {"1d": 144, "3d": 432, "7d": 1008, "30d": 4320}


def _ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def num(v: float | None, decimals: int = 0) -> str:
    return f"{v:,.{decimals}f}" if _ok(v) else DASH


def hashrate(hs: float | None, decimals: int = 1, unit: bool = True) -> str:
    """H/s -> EH/s (the unit the industry quotes network hashrate in)."""
    if not _ok(hs):
        return DASH
    text = f"{hs / 1e18:,.{decimals}f}"
    return f"{text} EH/s" if unit else text


def difficulty(d: float | None, decimals: int = 2) -> str:
    return f"{d / 1e12:,.{decimals}f} T" if _ok(d) else DASH


def usd(v: float | None, decimals: int = 0) -> str:
    if not _ok(v):
        return DASH
    assert v is not None
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):,.{decimals}f}"


def pct(v: float | None, decimals: int = 1, sign: bool = True) -> str:
    if not _ok(v):
        return DASH
    assert v is not None
    if round(v, decimals) == 0:
        v = 0.0  # never "-0.0%"
    return f"{v:+.{decimals}f}%" if sign else f"{v:.{decimals}f}%"


def hashprice(v: float | None) -> str:
    """USD per PH/s per day, always with its unit (1 $/PH/day = 0.001 $/TH/day)."""
    return f"{usd(v, 2)}/PH/day" if _ok(v) else DASH


def hashvalue(v: float | None) -> str:
    return f"{num(v)} sats/PH/day" if _ok(v) else DASH


def btc(sats: float | None, decimals: int = 3) -> str:
    return f"{sats / 1e8:.{decimals}f}" if _ok(sats) else DASH


def duration(seconds: float | None) -> str:
    """Compact human duration: ``45s``, ``4m 12s``, ``3h 05m``, ``6d 17h``, ``2.9y``."""
    if not _ok(seconds):
        return DASH
    assert seconds is not None
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s < 365 * 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    return f"{s / (365.25 * 86400):.1f}y"


def age(seconds: float | None) -> str:
    """An age: like ``duration`` (never negative: clocks of upstreams can run ahead)."""
    return duration(seconds)


def uncertainty_pct(window: str) -> float:
    """Relative standard error of a hashrate window in percent (±8.3% for 144 blocks)."""
    return 100.0 / math.sqrt(WINDOW_BLOCKS[window])


def sparkline(values: Sequence[float | None], width: int) -> str:
    """One-row sparkline; downsamples by bucket means so every point counts once."""
    vals = [v for v in values if _ok(v)]
    if width <= 0 or not vals:
        return ""
    vals = _buckets(vals, width)  # type: ignore[arg-type]
    lo, hi = min(vals), max(vals)
    span = hi - lo
    top = len(SPARK_CHARS) - 1
    if span <= 0:
        return SPARK_CHARS[top // 2] * len(vals)
    return "".join(SPARK_CHARS[round((v - lo) / span * top)] for v in vals)


def bar(fraction: float | None, width: int) -> str:
    """Text progress bar (``█`` done, ``░`` to go): readable without colour."""
    if width <= 0:
        return ""
    f = min(1.0, max(0.0, fraction or 0.0))
    done = round(f * width)
    return "█" * done + "░" * (width - done)


def value_text(text: str, *, stale: bool = False, style: str = "") -> Text:
    """A value, dimmed and labelled when it was computed from stale inputs."""
    if text == DASH:
        return Text(DASH, style="dim")
    if stale:
        return Text.assemble((text, "dim"), " ", (STALE_MARK, "dim italic"))
    return Text(text, style=style)


def signed_style(v: float | None) -> str:
    """Colour for a signed change; the sign character carries the meaning without colour."""
    if not _ok(v) or v == 0:
        return ""
    assert v is not None
    return "green" if v > 0 else "red"


def _buckets(values: Sequence[float], width: int) -> list[float]:
    if len(values) <= width:
        return list(values)
    step = len(values) / width
    return [
        sum(chunk) / len(chunk)
        for i in range(width)
        if (chunk := values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
    ]


def chart(values: Sequence[float | None], width: int, height: int) -> list[str]:
    """Multi-row bar chart (eighth blocks), top row first; min..max spans the height."""
    vals = _buckets([v for v in values if _ok(v)], width)  # type: ignore[misc]
    if not vals or width <= 0 or height <= 0:
        return []
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    # Leave one eighth at the bottom so the minimum is still a visible bar.
    levels = [1 + round((v - lo) / span * (height * 8 - 1)) for v in vals]
    rows = []
    for r in range(height - 1, -1, -1):
        line = []
        for lv in levels:
            fill = lv - r * 8
            line.append("█" if fill >= 8 else (SPARK_CHARS[fill - 1] if fill > 0 else " "))
        rows.append("".join(line))
    return rows
