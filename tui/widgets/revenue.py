"""Revenue panel: hashprice ($/PH/day), hashvalue (sats/PH/day), fee share, and the 24 h and
7 d change split into what drove it (price, difficulty, fees)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text
from textual.reactive import reactive

from tui import format as fmt
from tui.widgets.panel import Panel, data


@dataclass(frozen=True)
class Change:
    """A hashprice change in percent and its additive split (log-differences, DOMAIN.md)."""

    total_pct: float
    price_pct: float
    difficulty_pct: float
    fees_pct: float


def _reward(values: dict[str, float | None]) -> float | None:
    subsidy = values.get("subsidy_sats")
    if subsidy is None:
        return None
    return subsidy + (values.get("fees_avg_144") or 0.0)


def attribute(now: dict[str, float | None], then: dict[str, float | None]) -> Change | None:
    """Split hashprice(now)/hashprice(then) into price, difficulty and fee parts.

    hashprice ∝ P * (subsidy + fees) / D, so ln ratio = ln P ratio - ln D ratio + ln reward
    ratio; each part is scaled by total% / ln(total) so the three add up to the total exactly.
    A subsidy change (halving) counts with fees: both are "what a block pays".
    """
    p1, p0 = now.get("price_usd"), then.get("price_usd")
    d1, d0 = now.get("difficulty"), then.get("difficulty")
    r1, r0 = _reward(now), _reward(then)
    if not all(x is not None and x > 0 for x in (p1, p0, d1, d0, r1, r0)):
        return None
    assert p1 and p0 and d1 and d0 and r1 and r0
    lp, ld, lf = math.log(p1 / p0), -math.log(d1 / d0), math.log(r1 / r0)
    ln_total = lp + ld + lf
    total = math.expm1(ln_total) * 100.0
    scale = total / ln_total if abs(ln_total) > 1e-12 else 100.0
    return Change(total, lp * scale, ld * scale, lf * scale)


class RevenuePanel(Panel):
    TITLE = "Revenue"
    TICKS = False

    #: metric values about 24 h and 7 d ago (from the store's per-minute samples)
    past_24h: reactive[dict[str, float | None]] = data(dict)
    past_7d: reactive[dict[str, float | None]] = data(dict)

    def fee_share_pct(self) -> float | None:
        fees, subsidy = self.metric("fees_avg_144"), self.metric("subsidy_sats")
        if fees is None or subsidy is None or fees + subsidy <= 0:
            return None
        return fees / (subsidy + fees) * 100.0

    def change(self, past: dict[str, float | None]) -> Change | None:
        if not past or self.snapshot is None:
            return None
        return attribute(dict(self.snapshot.values), past)

    def _change_line(self, label: str, past: dict[str, float | None]) -> Text:
        c = self.change(past)
        t = Text(f"{label:<4}", style="dim")
        if c is None:
            t.append("n/a", style="dim")
            return t
        t.append(fmt.pct(c.total_pct), style=fmt.signed_style(c.total_pct))
        names = ("P ", "D ", "fee ") if self.narrow else ("price ", "diff ", "fees ")
        t.append(": ", style="dim")
        for i, (name, v) in enumerate(
            zip(names, (c.price_pct, c.difficulty_pct, c.fees_pct), strict=True)
        ):
            t.append((" " if self.narrow else "  ") * bool(i) + name, style="dim")
            t.append(fmt.pct(v))
        return t

    def build(self) -> Group:
        head = Text.assemble(
            self.mtext("hashprice", fmt.hashprice, style="bold"),
            "  ",
            self.mtext("hashvalue", fmt.hashvalue),
        )
        share = self.fee_share_pct()
        fees = Text("fees ", style="dim")
        if share is None and self.metric("subsidy_sats") is not None:
            fees.append("unknown: figures excl. fees", style="italic")
        else:
            fees.append_text(fmt.value_text(fmt.pct(share, 1, sign=False)))
            fees.append(" of reward", style="dim")
            if not self.narrow:
                fees.append("  avg ", style="dim")
                fees.append_text(self.mtext("fees_avg_144", lambda v: f"{fmt.btc(v)} BTC/block"))
        return Group(
            head,
            fees,
            self._change_line("24h", self.past_24h),
            self._change_line("7d", self.past_7d),
        )
