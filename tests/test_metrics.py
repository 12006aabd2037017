"""feeds.metrics.MetricsEngine: every DOMAIN.md metric, from real blocks and injected clocks."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import support_metrics as sm

from feeds import derive
from feeds.events import (
    Block,
    DailyPoint,
    DifficultyAdjustment,
    FeedState,
    FeedStatus,
    PriceTick,
)
from feeds.metrics import METRIC_NAMES, PRICE_DERIVED, MetricsEngine

DOMAIN_MD = next(
    (
        p
        for p in (Path(__file__).parents[1] / "docs" / "DOMAIN.md", Path("/work/shared/DOMAIN.md"))
        if p.exists()
    ),
    Path("DOMAIN.md"),
)
FLEET = derive.SimpleCostModel(20.0, 0.06)  # the worked example: $28.80/PH/day
NETWORK = derive.SimpleCostModel(25.0, 0.05, pool_fee_pct=2.0, other_opex_usd_per_ph_day=7.0)
LAST = sm.blocks()[-1]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def engine(now: float = LAST.time + 600.0) -> tuple[MetricsEngine, Clock]:
    clock = Clock(now)
    return MetricsEngine(FLEET, NETWORK, clock=clock), clock


def loaded(now: float = LAST.time + 600.0) -> tuple[MetricsEngine, Clock]:
    e, clock = engine(now)
    e.on_blocks(sm.blocks())
    return e, clock


def price(source: str, p: float, at: float) -> PriceTick:
    return PriceTick(source=source, price_usd=p, time=at, received_at=at)


def test_metric_names_follow_the_domain_table():
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES)) == 31
    assert METRIC_NAMES[0] == "price_usd" and METRIC_NAMES[-1] == "block_gap_probability"
    if not DOMAIN_MD.exists():
        pytest.skip("DOMAIN.md not available")
    table = DOMAIN_MD.read_text().split("## Metric names", 1)[1]
    names = []
    for line in table.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    assert tuple(names) == METRIC_NAMES


def test_empty_engine_has_every_key_and_no_invented_numbers():
    e, _ = engine()
    s = e.snapshot()
    assert set(METRIC_NAMES) <= set(s.values)
    # Only config-derived costs exist without any data.
    assert s.values["hashcost_energy"] == pytest.approx(28.80)
    assert s.values["hashcost"] == pytest.approx(28.80)
    for name in METRIC_NAMES:
        if name not in ("hashcost_energy", "hashcost"):
            assert s.values[name] is None, name
    assert s.values["price_feeds_live"] == 0
    assert s.stale == frozenset()


def test_snapshot_on_real_blocks_matches_the_formulas():
    e, clock = loaded()
    tick_at = clock.t - 5
    for src, p in (("coinbase", 70_950.0), ("kraken", 71_000.0), ("bitstamp", 71_020.0)):
        e.on_price(price(src, p, tick_at))
    v = e.snapshot().values
    d = sm.rows()[-1].difficulty
    assert v["tip_height"] == 942_199 and v["tip_time"] == LAST.time
    assert v["tip_age_s"] == pytest.approx(600.0)  # backfilled: counted from header time
    assert v["difficulty"] == pytest.approx(d, rel=1e-12)
    assert v["difficulty_change_pct"] == pytest.approx(-7.7557, abs=1e-3)
    assert v["retarget_height"] == 943_488 and v["retarget_blocks_remaining"] == 1289
    # Projection: the consensus rule on k = 727 intervals (independent lookups).
    by_h = {r.height: r for r in sm.rows()}
    t_raw = (by_h[942_199].time - by_h[941_472].time) * 2015 / 727
    assert v["difficulty_projected_change_pct"] == pytest.approx((1209600 / t_raw - 1) * 100)
    assert v["difficulty_projected_band_pct"] == pytest.approx(100 / math.sqrt(727))
    assert v["retarget_eta"] == pytest.approx(LAST.time + 1289 * t_raw / 2015)
    # Hashrate windows: straightforward slices over the file.
    rows = sm.rows()
    for name, n in derive.HASHRATE_WINDOWS.items():
        win = rows[-(n + 1) :]
        times = [r.time for r in win]
        work = sum(derive.block_work(r.bits) for r in win[1:])
        assert v[name] == pytest.approx(work / (max(times) - min(times)), rel=1e-12), name
    # Real-world sanity: ~1 ZH/s in March 2026, windows within their noise of the implied.
    assert 0.8e21 < v["hashrate_7d"] < 1.2e21
    assert v["hashrate_implied"] == pytest.approx(d * 2**32 / 600)
    assert abs(v["hashrate_7d"] / v["hashrate_implied"] - 1) < 5 / math.sqrt(1008)
    assert v["subsidy_sats"] == 312_500_000
    # Fees: 72+ of the last 144 blocks known in the fake series.
    fees = [sm.fake_fees(h) for h in range(942_056, 942_200)]
    known = [f for f in fees if f is not None]
    assert v["fees_avg_144"] == pytest.approx(sum(known) / len(known))
    hv = 1e15 * 86400 / (d * 2**32) * (312_500_000 + v["fees_avg_144"])
    assert v["hashvalue"] == pytest.approx(hv)
    assert v["price_usd"] == 71_000.0 and v["price_feeds_live"] == 3
    assert v["hashprice"] == pytest.approx(hv / 1e8 * 71_000)
    assert v["hashprice_net"] == pytest.approx(v["hashprice"])  # no pool fee, full uptime
    assert v["margin"] == pytest.approx(v["hashprice"] - 28.80)
    assert v["breakeven_power_usd_per_kwh"] == pytest.approx(v["hashprice"] / (24 * 20))
    assert v["production_cost_usd"] == pytest.approx(28.80 / (hv / 1e8))
    net_cost = (24 * 25 * 0.05 + 7.0) / (hv / 1e8 * 0.98)
    assert v["network_production_cost_usd"] == pytest.approx(net_cost)
    assert v["price_to_cost_pct"] == pytest.approx((71_000 / net_cost - 1) * 100)
    tau = d * 2**32 / v["hashrate_7d"]
    assert v["block_gap_probability"] == pytest.approx(math.exp(-600 / tau))
    assert v["fees_included"] == 1.0
    assert v["feed_age_s.csv"] == pytest.approx(600.0)
    assert v["feed_age_s.kraken"] == pytest.approx(5.0)


def test_hashprice_excludes_fees_when_unknown():
    e, clock = engine()
    e.on_blocks(sm.blocks(with_fees=False))
    e.on_price(price("coinbase", 70_000.0, clock.t))
    v = e.snapshot().values
    assert v["fees_avg_144"] is None and v["fees_included"] == 0.0
    assert v["hashvalue"] == pytest.approx(1e15 * 86400 / (v["difficulty"] * 2**32) * 312_500_000)


def test_stale_price_keeps_value_and_marks_derived_metrics():
    e, clock = loaded()
    e.on_price(price("coinbase", 70_000.0, clock.t))
    assert e.snapshot().stale == frozenset()
    clock.t += 300
    s = e.snapshot()
    assert s.values["price_usd"] == 70_000.0 and s.values["price_age_s"] == pytest.approx(300)
    assert s.values["price_feeds_live"] == 0
    assert s.stale == PRICE_DERIVED
    assert "production_cost_usd" not in s.stale and "hashvalue" not in s.stale
    assert s.values["hashprice"] is not None  # still shown, marked stale


def test_tip_age_counts_from_first_seen_and_is_never_negative():
    e, clock = loaded()
    live = Block(
        height=942_200,
        hash="h942200",
        prev_hash="h942199",
        time=LAST.time + 7000,  # miner clock 2 h ahead
        bits=LAST.bits,
        source="mempool",
        received_at=clock.t + 10,
    )
    e.on_block(live)
    clock.t += 40
    v = e.snapshot().values
    assert v["tip_height"] == 942_200
    assert v["tip_age_s"] == pytest.approx(30.0)  # from receipt, not the header time
    clock.t = live.received_at - 5  # clocks may disagree: still never negative
    assert e.snapshot().values["tip_age_s"] == 0.0


def test_gap_nulls_the_windows_but_tip_moves_on():
    e, clock = engine()
    blocks = list(sm.blocks())
    e.on_blocks(blocks[:-3])
    e.on_block(replace(blocks[-1], backfill=False, received_at=clock.t - 1))
    v = e.snapshot().values
    assert v["tip_height"] == 942_199 and v["tip_age_s"] == pytest.approx(1.0)
    assert v["hashrate_7d"] is None and v["difficulty_projected_change_pct"] is None
    assert v["block_gap_probability"] is None
    e.on_blocks(blocks[-3:-1])
    assert e.snapshot().values["hashrate_7d"] is not None


def test_on_blocks_equals_on_block():
    a, _ = engine()
    b, _ = engine()
    a.on_blocks(sm.blocks())
    for blk in sm.blocks():
        b.on_block(blk)
    assert a.snapshot().values == b.snapshot().values


def test_feed_age_from_feed_status():
    e, _ = engine(1_000.0)
    e.on_feed_status(
        FeedStatus(
            source="kraken",
            state=FeedState.LIVE,
            since=0.0,
            received_at=900.0,
            last_message_at=950.0,
        )
    )
    e.on_feed_status(FeedStatus(source="coinbase", state=FeedState.DOWN, since=0, received_at=9))
    v = e.snapshot().values
    assert v["feed_age_s.kraken"] == pytest.approx(50.0)
    assert "feed_age_s.coinbase" not in v  # never heard from: no age to report


def test_hash_ribbon_and_peaks_from_daily_history():
    day = 86_400
    start = 1_760_000_000 // day * day
    now = start + 70 * day + 3600
    e, _ = engine(now)
    for i in range(70):
        hs = 9e20 if i < 62 else 6e20  # an 8-day slump
        e.on_daily(
            DailyPoint(source="mempool", day=start + i * day, received_at=now, hashrate_hs=hs)
        )
    v = e.snapshot().values
    series = [9e20] * 62 + [6e20] * 8
    assert v["hash_ribbon_30_60"] == pytest.approx(derive.hash_ribbon(series))
    assert v["hash_ribbon_30_60"] < 1
    assert v["hashrate_peak_30d"] == 9e20 and v["hashrate_peak_90d"] == 9e20
    assert [ev.kind for ev in e.ribbon_events()] == ["capitulation"]
    # A hole in the history: fewer than 60 consecutive days, so no ribbon.
    e2, _ = engine(now)
    for i in (*range(0, 30), *range(31, 70)):
        e2.on_daily(DailyPoint(source="m", day=start + i * day, received_at=now, hashrate_hs=9e20))
    assert e2.snapshot().values["hash_ribbon_30_60"] is None


def test_chain_days_feed_the_ribbon_series():
    e, _ = loaded()
    series = e.daily_hashrate_series()
    assert len(series) == 33  # closed days of the file, 2026-02-20 .. 2026-03-24
    assert all(b[0] - a[0] == 86_400 for a, b in itertools.pairwise(series))
    assert e.snapshot().values["hash_ribbon_30_60"] is None  # a month is not 60 days
    assert e.snapshot().values["hashrate_peak_30d"] == max(v for _, v in series[-30:])


def test_last_retarget_falls_back_to_mempools_figure_for_the_same_epoch():
    e, clock = engine()
    e.on_blocks(sm.blocks()[-300:])  # history starts after the retarget at 941,472
    assert e.snapshot().values["difficulty_change_pct"] is None
    da = DifficultyAdjustment(
        source="mempool",
        progress_pct=36.0,
        difficulty_change_pct=2.1,
        estimated_retarget_time=clock.t + 1e5,
        remaining_blocks=1289,
        next_retarget_height=943_488,
        previous_retarget_pct=-7.76,
        received_at=clock.t,
    )
    e.on_event(da)
    assert e.snapshot().values["difficulty_change_pct"] == -7.76
    e.on_event(replace(da, next_retarget_height=941_472))  # an old epoch's: not used
    assert e.snapshot().values["difficulty_change_pct"] is None
    # With the history held, the chain's own exact figure wins.
    e2, _ = loaded()
    e2.on_event(da)
    assert e2.snapshot().values["difficulty_change_pct"] == pytest.approx(-7.7557, abs=1e-3)
