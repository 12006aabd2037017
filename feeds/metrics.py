"""``MetricsEngine``: chain state + reference price + cost models -> ``MetricsSnapshot``.

Every name of DOMAIN.md's metric table is a key of every snapshot (``METRIC_NAMES``, in the
table's order); a figure that cannot be computed honestly is ``None``. Extra keys:

* ``price_feeds_live``: number of price sources fresh right now;
* ``feed_age_s.<source>``: seconds since that source's last message (any kind);
* ``hashrate_peak_30d`` / ``hashrate_peak_90d``: highest daily hashrate (H/s) among the
  closed days of the last 30/90 days;
* ``fees_included``: 1 when hashvalue/hashprice include fees, 0 for "excl. fees".

``stale`` names the price-derived metrics while no price source is fresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from feeds import derive
from feeds.chain import ChainState
from feeds.events import (
    Block,
    DailyPoint,
    DifficultyAdjustment,
    Event,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)
from feeds.pricing import ReferencePrice

log = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "price_usd",
    "price_age_s",
    "tip_height",
    "tip_time",
    "tip_age_s",
    "difficulty",
    "difficulty_change_pct",
    "difficulty_projected_change_pct",
    "difficulty_projected_band_pct",
    "retarget_height",
    "retarget_blocks_remaining",
    "retarget_eta",
    "hashrate_1d",
    "hashrate_3d",
    "hashrate_7d",
    "hashrate_30d",
    "hashrate_implied",
    "subsidy_sats",
    "fees_avg_144",
    "hashvalue",
    "hashprice",
    "hashcost_energy",
    "hashcost",
    "hashprice_net",
    "margin",
    "breakeven_power_usd_per_kwh",
    "production_cost_usd",
    "network_production_cost_usd",
    "price_to_cost_pct",
    "hash_ribbon_30_60",
    "block_gap_probability",
)

#: Metrics that move with the reference price: marked stale when no price source is fresh.
PRICE_DERIVED: frozenset[str] = frozenset(
    {
        "price_usd",
        "hashprice",
        "hashprice_net",
        "margin",
        "breakeven_power_usd_per_kwh",
        "price_to_cost_pct",
    }
)

FEED_AGE_PREFIX = "feed_age_s."
_DAILY_KEEP = 400


class MetricsEngine:
    def __init__(
        self,
        fleet: derive.CostModel,
        network: derive.CostModel,
        *,
        price_fresh_after_s: float = 60.0,
        price_divergence_pct: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.network = network
        self.clock = clock
        self.chain = ChainState()
        self.prices = ReferencePrice(price_fresh_after_s, price_divergence_pct)
        #: day -> hashrate (H/s) from REST history, used where the chain has no closed day
        self._daily: dict[int, float] = {}
        self._last_message: dict[str, float] = {}
        #: mempool's own estimate: fallback for the last retarget when h0-1 is not held
        self._da: DifficultyAdjustment | None = None

    # --- inputs ----------------------------------------------------------------------------

    def on_block(self, block: Block) -> None:
        self.chain.apply(block)
        self._touch(block.source, block.received_at)

    def on_blocks(self, blocks: Iterable[Block]) -> None:
        """Bulk load (store replay, backfill): same rules, no per-block extras."""
        last: dict[str, float] = {}
        apply = self.chain.apply
        for b in blocks:
            apply(b)
            last[b.source] = max(last.get(b.source, 0.0), b.received_at)
        for src, at in last.items():
            self._touch(src, at)

    def on_price(self, tick: PriceTick) -> None:
        self.prices.on_tick(tick)
        self._touch(tick.source, tick.received_at)

    def on_daily(self, point: DailyPoint) -> None:
        if point.hashrate_hs is not None and point.hashrate_hs > 0:
            self._daily[point.day] = point.hashrate_hs
            if len(self._daily) > _DAILY_KEEP:
                for d in sorted(self._daily)[: len(self._daily) - _DAILY_KEEP]:
                    del self._daily[d]
        self._touch(point.source, point.received_at)

    def on_difficulty_adjustment(self, da: DifficultyAdjustment) -> None:
        self._da = da
        self._touch(da.source, da.received_at)

    def on_event(self, event: Event) -> None:
        """Dispatch any bus event to its handler (others are ignored)."""
        if isinstance(event, Block):
            self.on_block(event)
        elif isinstance(event, PriceTick):
            self.on_price(event)
        elif isinstance(event, DailyPoint):
            self.on_daily(event)
        elif isinstance(event, FeedStatus):
            self.on_feed_status(event)
        elif isinstance(event, DifficultyAdjustment):
            self.on_difficulty_adjustment(event)

    def on_feed_status(self, status: FeedStatus) -> None:
        if status.last_message_at is not None:
            self._touch(status.source, status.last_message_at)

    def _touch(self, source: str, at: float) -> None:
        if at > self._last_message.get(source, float("-inf")):
            self._last_message[source] = at

    # --- daily history ---------------------------------------------------------------------

    def daily_hashrate_series(self, now: float | None = None) -> list[tuple[int, float]]:
        """Consecutive closed UTC days ``(day, H/s)`` ending at the newest closed one.

        The chain's own figure (DOMAIN.md's definition) wins; REST history fills older days.
        """
        now = self.clock() if now is None else now
        merged = {d: v for d, v in self._daily.items() if d + derive.DAY_S <= now}
        merged.update(self.chain.daily_hashrates(closed_only=True))
        if not merged:
            return []
        days = sorted(merged)
        run = [days[-1]]
        for d in reversed(days[:-1]):
            if d != run[-1] - derive.DAY_S:
                break
            run.append(d)
        return [(d, merged[d]) for d in reversed(run)]

    def ribbon_events(self, now: float | None = None) -> list[derive.RibbonEvent]:
        return derive.ribbon_events(self.daily_hashrate_series(now))

    def _peaks(self, series: list[tuple[int, float]]) -> tuple[float | None, float | None]:
        if not series:
            return None, None
        last = series[-1][0]
        out: list[float | None] = []
        for n in (30, 90):
            vals = [v for d, v in series if d > last - n * derive.DAY_S]
            out.append(max(vals) if vals else None)
        return out[0], out[1]

    # --- output ----------------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> MetricsSnapshot:
        now = self.clock() if now is None else now
        v: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
        chain = self.chain

        ref = self.prices.reference(now)
        price = ref.price_usd if ref else None
        price_stale = self.prices.is_stale(now)
        v["price_usd"] = price
        v["price_age_s"] = max(0.0, now - ref.as_of) if ref else None

        seen = chain.latest_seen()
        d: float | None = None
        subsidy: int | None = None
        tip_age: float | None = None
        if seen is not None:
            d = derive.difficulty_from_bits(seen.bits)
            subsidy = derive.subsidy_sats(seen.height)
            tip_age = max(0.0, now - seen.first_seen)
            h0 = seen.height - seen.height % derive.EPOCH_BLOCKS
            v.update(
                tip_height=seen.height,
                tip_time=seen.time,
                tip_age_s=tip_age,
                difficulty=d,
                hashrate_implied=derive.implied_hashrate(d),
                subsidy_sats=subsidy,
                retarget_height=h0 + derive.EPOCH_BLOCKS,
                retarget_blocks_remaining=h0 + derive.EPOCH_BLOCKS - seen.height,
            )
        if not chain.has_gap:
            ep = chain.epoch()
            if ep is not None:
                v["difficulty_change_pct"] = ep.last_change_pct
            proj = chain.projection()
            if proj is not None:
                v.update(
                    difficulty_projected_change_pct=proj.change_pct,
                    difficulty_projected_band_pct=proj.band_pct,
                    retarget_eta=proj.eta,
                )
        da = self._da
        if (
            v["difficulty_change_pct"] is None
            and da is not None
            and da.next_retarget_height == v["retarget_height"]
        ):
            # Too little history held to see the last retarget: mempool's figure for the
            # same epoch is the same consensus fact.
            v["difficulty_change_pct"] = da.previous_retarget_pct
        for name, n in derive.HASHRATE_WINDOWS.items():
            v[name] = chain.hashrate(n)

        fees = chain.fees_avg_144()
        v["fees_avg_144"] = fees
        hashvalue = hashprice = None
        if d is not None and subsidy is not None:
            hashvalue = derive.hashvalue_sats(d, subsidy, fees)
            if price is not None:
                hashprice = derive.hashprice_usd(hashvalue, price)
        v["hashvalue"], v["hashprice"] = hashvalue, hashprice

        fleet = derive.fleet_economics(self.fleet, hashvalue, hashprice)
        v.update(
            hashcost_energy=fleet.hashcost_energy,
            hashcost=fleet.hashcost,
            hashprice_net=fleet.hashprice_net,
            margin=fleet.margin,
            breakeven_power_usd_per_kwh=fleet.breakeven_power_usd_per_kwh,
            production_cost_usd=fleet.production_cost_usd,
        )
        net = derive.fleet_economics(self.network, hashvalue, hashprice)
        v["network_production_cost_usd"] = net.production_cost_usd
        if price is not None and net.production_cost_usd:
            v["price_to_cost_pct"] = derive.price_to_cost_pct(price, net.production_cost_usd)

        series = self.daily_hashrate_series(now)
        v["hash_ribbon_30_60"] = derive.hash_ribbon([x for _, x in series])

        hr7 = v["hashrate_7d"]
        if hr7 and d is not None and tip_age is not None:
            tau = derive.expected_block_interval_s(d, hr7)
            v["block_gap_probability"] = derive.block_gap_probability(tip_age, tau)

        # extras
        v["price_feeds_live"] = float(len(self.prices.fresh_sources(now)))
        for src, at in sorted(self._last_message.items()):
            v[FEED_AGE_PREFIX + src] = max(0.0, now - at)
        v["hashrate_peak_30d"], v["hashrate_peak_90d"] = self._peaks(series)
        v["fees_included"] = None if hashvalue is None else (1.0 if fees is not None else 0.0)

        stale: frozenset[str] = frozenset()
        if price_stale and price is not None:
            stale = frozenset(n for n in PRICE_DERIVED if v.get(n) is not None)
        return MetricsSnapshot(at=now, values=v, stale=stale)
