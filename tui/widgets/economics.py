"""Economics panel: the fleet's hashcost, margin, breakeven power price and production cost;
the network cost model against price with the gap in %."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from tui import format as fmt
from tui.widgets.panel import Panel


def _per_ph(v: float | None) -> str:
    return fmt.usd(v, 2)


def _signed_usd(v: float | None) -> str:
    if v is None:
        return fmt.DASH
    return ("+" if v >= 0 else "") + fmt.usd(v, 2)


class EconomicsPanel(Panel):
    TITLE = "Economics ($/PH/day)"
    TICKS = False

    def build(self) -> Group:
        margin = self.metric("margin")
        verdict = "" if margin is None else (" profit" if margin >= 0 else " LOSS")
        cost = Text.assemble(
            ("cost ", "dim"),
            self.mtext("hashcost", _per_ph),
            (self.lbl("  net revenue ", "  net "), "dim"),
            self.mtext("hashprice_net", _per_ph),
        )
        margin_line = Text.assemble(
            ("margin ", "dim"),
            self.mtext("margin", _signed_usd, style=fmt.signed_style(margin)),
            (verdict, "bold"),
            (self.lbl("  breakeven power ", "  BE "), "dim"),
            self.mtext("breakeven_power_usd_per_kwh", lambda v: f"{fmt.usd(v, 3)}/kWh"),
        )
        prod = Text.assemble(
            (self.lbl("production cost ", "BTC cost "), "dim"),
            self.mtext("production_cost_usd", fmt.usd),
            (self.lbl("  network ", "  net "), "dim"),
            self.mtext("network_production_cost_usd", fmt.usd),
        )
        gap = self.metric("price_to_cost_pct")
        gap_word = "" if gap is None else (" above" if gap >= 0 else " below")
        network = Text.assemble(
            (self.lbl("price vs network cost ", "price vs net cost "), "dim"),
            self.mtext("price_to_cost_pct", fmt.pct, style=fmt.signed_style(gap)),
            (gap_word, "bold"),
        )
        return Group(cost, margin_line, prod, network)
