"""feeds.derive against real blocks, DOMAIN.md's worked examples and mempool's test vectors."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
import support_metrics as sm

from feeds import derive

MEMPOOL = Path(__file__).parent / "fixtures" / "mempool"


def _vectors(name: str) -> dict:
    return json.loads((MEMPOOL / name).read_text())


# --- bits, difficulty, work ----------------------------------------------------------------


def test_difficulty_from_bits_matches_every_row_of_real_data():
    rows = sm.rows()
    assert len(rows) == 4760
    for r in rows:
        assert derive.difficulty_from_bits(r.bits) == pytest.approx(r.difficulty, rel=1e-12)


def test_bits_round_trip_and_invalid_encodings():
    for bits in {r.bits for r in sm.rows()} | {0x1D00FFFF, 0x207FFFFF}:
        assert derive.target_to_bits(derive.bits_to_target(bits)) == bits
    assert derive.difficulty_from_bits(0x1D00FFFF) == 1.0
    for bad in (0x1C000000, 0x1D800001, 0):
        with pytest.raises(ValueError):
            derive.bits_to_target(bad)


def test_block_work_is_cores_block_proof_and_about_d_times_2_32():
    for bits in {r.bits for r in sm.rows()}:
        target = derive.bits_to_target(bits)
        # Core's GetBlockProof: (~target / (target + 1)) + 1 in 256-bit arithmetic.
        core = ((2**256 - 1 - target) // (target + 1)) + 1
        w = derive.block_work(bits)
        assert w == core
        d = derive.difficulty_from_bits(bits)
        assert w == pytest.approx(d * 2**48 / 65535, rel=1e-12)
        assert w / (d * 2**32) == pytest.approx(1.0000153, rel=1e-7)


# --- retargets on the real file ------------------------------------------------------------


def _epochs():
    by_h = {r.height: r for r in sm.rows()}
    for h0 in range(937_440, 942_200, 2016):
        if h0 + 2016 in by_h:
            yield by_h[h0], by_h[h0 + 2015], by_h[h0 + 2016]


def test_consensus_retarget_reproduces_next_bits_exactly():
    epochs = list(_epochs())
    assert len(epochs) == 2
    for first, last, nxt in epochs:
        assert derive.retarget_bits(first.bits, first.time, last.time) == nxt.bits
        d_next = derive.retarget_difficulty(first.difficulty, first.time, last.time)
        assert d_next == pytest.approx(nxt.difficulty, rel=1e-5)


def test_projection_at_k_2015_equals_the_real_change():
    for first, last, nxt in _epochs():
        p = derive.project_epoch(last.height, last.time, first.time)
        assert p.intervals_used == 2015 and p.blocks_remaining == 1
        assert p.retarget_height == nxt.height
        real_pct = derive.difficulty_change_pct(first.difficulty, nxt.difficulty)
        projected_d = first.difficulty * (1 + p.change_pct / 100)
        assert abs(projected_d / nxt.difficulty - 1) < 1e-5
        assert p.change_pct == pytest.approx(real_pct, abs=2e-3)
        assert p.eta == pytest.approx(last.time + p.timespan_s / 2015)
        assert p.band_pct == pytest.approx(100 / math.sqrt(2015))
    # The two epochs: +0.45% then -7.76% (bits 1701f303 -> 1701f0cc -> 17021a91).
    pcts = [derive.project_epoch(la.height, la.time, fi.time).change_pct for fi, la, _ in _epochs()]
    assert pcts[0] == pytest.approx(0.445, abs=1e-3)
    assert pcts[1] == pytest.approx(-7.756, abs=1e-3)


def test_projection_mid_epoch_and_clamp():
    first = sm.rows()[0]
    p = derive.project_epoch(first.height + 1000, first.time + 1000 * 600, first.time)
    assert p.timespan_s == pytest.approx(600 * 2015)
    assert p.change_pct == pytest.approx((2016 / 2015 - 1) * 100)
    assert p.blocks_remaining == 1016
    fast = derive.project_epoch(first.height + 1000, first.time + 1000, first.time)
    assert fast.timespan_s == derive.MIN_TIMESPAN_S and fast.change_pct == pytest.approx(300)
    slow = derive.project_epoch(first.height + 10, first.time + 10**8, first.time)
    assert slow.change_pct == pytest.approx(-75)
    with pytest.raises(ValueError):
        derive.project_epoch(first.height, first.time, first.time)


def test_early_projection_scales_previous_epoch_intervals():
    by_h = {r.height: r for r in sm.rows()}
    h0 = 941_472
    d_cur, d_prev = by_h[h0].difficulty, by_h[h0 - 1].difficulty
    for k in (0, 1, 50, 143):
        t = h0 + k
        p = derive.project_epoch_early(
            t, by_h[t].time, by_h[h0 - 1].time, by_h[t - 144].time, d_cur / d_prev
        )
        # Straightforward: sum the 144 intervals one by one, scaling those of old blocks.
        span = 0.0
        for h in range(t - 143, t + 1):
            dt = by_h[h].time - by_h[h - 1].time
            span += dt if h >= h0 else dt * d_cur / d_prev
        assert p.timespan_s == pytest.approx(span * 2015 / 144, rel=1e-12)
        assert p.band_pct == pytest.approx(100 / 12)
        assert p.early and p.intervals_used == 144
        assert p.retarget_height == h0 + 2016 and p.blocks_remaining == 2016 - k
    with pytest.raises(ValueError):
        derive.project_epoch_early(h0 + 144, 0, 0, 0, 1.0)


# --- hashrate -----------------------------------------------------------------------------


def test_window_hashrate_core_definition():
    rows = sm.rows()[:145]
    works = [derive.block_work(r.bits) for r in rows]
    times = [r.time for r in rows]
    hr = derive.window_hashrate(works, times)
    assert hr == pytest.approx(sum(works[1:]) / (max(times) - min(times)), rel=1e-15)
    assert derive.network_hashps(10, 5, 5) is None
    assert derive.window_hashrate([1], [1]) is None
    assert derive.hashrate_relative_uncertainty(144) == pytest.approx(0.0833, abs=1e-4)
    assert derive.hashrate_relative_uncertainty(1008) == pytest.approx(0.0315, abs=1e-4)


def test_implied_hashrate_and_daily_hashrate():
    d = sm.rows()[0].difficulty
    assert derive.implied_hashrate(d) == d * 2**32 / 600
    day = 1_771_545_600  # 2026-02-20 00:00 UTC
    pairs = [(day - 1, 5), (day, 7), (day + 86_399, 11), (day + 86_400, 13)]
    assert derive.daily_hashrates(pairs) == {
        day - 86_400: 5 / 86_400,
        day: 18 / 86_400,
        day + 86_400: 13 / 86_400,
    }


# --- subsidy, revenue, costs: DOMAIN.md worked examples -------------------------------------


def test_subsidy_and_halvings():
    assert derive.subsidy_sats(0) == 5_000_000_000
    assert derive.subsidy_sats(209_999) == 5_000_000_000
    assert derive.subsidy_sats(210_000) == 2_500_000_000
    for h in (840_000, 942_199, 1_049_999):
        assert derive.subsidy_sats(h) == 312_500_000  # 3.125 BTC
    assert derive.subsidy_sats(1_050_000) == 156_250_000
    assert derive.subsidy_sats(64 * 210_000) == 0
    assert derive.next_halving_height(840_000) == 1_050_000
    assert derive.next_halving_height(839_999) == 840_000


def test_hashcost_energy_worked_example():
    assert derive.hashcost_energy(20, 0.06, 1.0) == pytest.approx(28.80)
    fleet = derive.fleet_economics(derive.SimpleCostModel(20, 0.06), None, None)
    assert fleet.hashcost_energy == pytest.approx(28.80) and fleet.hashcost == fleet.hashcost_energy
    assert fleet.hashprice_net is None and fleet.margin is None
    assert fleet.production_cost_usd is None


def test_fleet_breakeven_and_production_cost_are_consistent():
    cost = derive.SimpleCostModel(
        18.5, 0.07, pool_fee_pct=2.5, uptime_pct=95, other_opex_usd_per_ph_day=6
    )
    d = sm.rows()[-1].difficulty
    hv = derive.hashvalue_sats(d, 312_500_000, 1.5e6)
    hp = derive.hashprice_usd(hv, 70_000)
    e = derive.fleet_economics(cost, hv, hp)
    assert e.hashprice_net == pytest.approx(hp * 0.975 * 0.95)
    assert e.margin == pytest.approx(e.hashprice_net - e.hashcost)
    # At the breakeven power price the margin is zero ...
    at_be = derive.SimpleCostModel(18.5, e.breakeven_power_usd_per_kwh, 2.5, 95, 6)
    assert derive.fleet_economics(at_be, hv, hp).margin == pytest.approx(0, abs=1e-9)
    # ... and at a BTC price equal to the production cost too.
    hp_be = derive.hashprice_usd(hv, e.production_cost_usd)
    assert derive.fleet_economics(cost, hv, hp_be).margin == pytest.approx(0, abs=1e-9)


def test_price_to_cost_worked_example():
    pct = derive.price_to_cost_pct(71_000, 87_000)
    assert pct == pytest.approx(-18.39, abs=0.01)


def test_hashvalue_and_hashprice_units():
    d = 1e14
    b = derive.blocks_per_day_per_ph(d)
    assert b == pytest.approx(1e15 * 86400 / (d * 2**32))
    assert derive.hashvalue_sats(d, 312_500_000, None) == pytest.approx(b * 312_500_000)
    assert derive.hashvalue_sats(d, 312_500_000, 2e6) == pytest.approx(b * 314_500_000)
    assert derive.hashprice_usd(50_000.0, 80_000.0) == pytest.approx(40.0)


def test_hashprice_attribution_parts_add_up():
    a = derive.HashpriceInputs(87_000, 1.4e14, 312_500_000, 2.0e6)
    b = derive.HashpriceInputs(71_000, 1.34e14, 312_500_000, 1.2e6)
    x = derive.hashprice_attribution(a, b)
    assert x.log_price + x.log_difficulty + x.log_fees == x.log_total
    hp_a, hp_b = derive.hashprice_from_inputs(a), derive.hashprice_from_inputs(b)
    assert x.log_total == pytest.approx(math.log(hp_b / hp_a), rel=1e-12)
    assert x.usd_price + x.usd_difficulty + x.usd_fees == pytest.approx(x.usd_total, rel=1e-12)
    assert x.usd_total == pytest.approx(hp_b - hp_a)
    assert x.log_price < 0 < x.log_difficulty and x.log_fees < 0
    only_price = derive.hashprice_attribution(
        a, derive.HashpriceInputs(90_000, 1.4e14, 312_500_000, 2.0e6)
    )
    assert only_price.log_difficulty == 0 and only_price.log_fees == 0
    assert only_price.usd_price == pytest.approx(only_price.usd_total)


# --- cycle signals -------------------------------------------------------------------------


def test_block_gap_worked_example():
    p = derive.block_gap_probability(7200, 600)
    assert 150_000 < 1 / p < 170_000  # "about 1 in 160,000"
    assert derive.block_gap_probability(-5, 600) == 1.0
    assert derive.expected_block_interval_s(1e14, 1e14 * 2**32 / 600) == pytest.approx(600)


def test_hash_ribbons_and_events():
    day = 86_400
    values = [100.0] * 80 + [70.0] * 30 + [130.0] * 60
    series = [(i * day, v) for i, v in enumerate(values)]
    assert derive.hash_ribbon(values[:59]) is None
    assert derive.hash_ribbon(values[:80]) == pytest.approx(1.0)
    assert derive.hash_ribbon(values[:95]) < 1
    ev = derive.ribbon_events(series)
    assert [e.kind for e in ev] == ["capitulation", "recovery"]
    assert ev[0].day == 80 * day  # the first day of the drop pulls SMA30 below SMA60
    assert ev[0].ratio < 1 < ev[1].ratio
    assert ev[1].day > ev[0].day


def test_puell_multiple():
    assert derive.puell_multiple([1.0] * 364) is None
    assert derive.puell_multiple([1.0] * 365) == pytest.approx(1.0)
    assert derive.puell_multiple([1.0] * 364 + [366.0]) == pytest.approx(366 / 2)


# --- mempool.space compatibility ------------------------------------------------------------


def _secs(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def test_mempool_difficulty_adjustment_vectors_bit_for_bit():
    vectors = _vectors("difficulty_adjustment.test_vectors.json")["vectors"]
    assert len(vectors) == 4
    for v in vectors:
        i = v["inputs"]
        latest = i["latestBlockTimestamp"]
        got = derive.mempool_difficulty_adjustment(
            _secs(i["lastDifficultyAdjustmentTime"]),
            _secs(i["blockTime503BlocksAgo"]),
            _secs(i["now"]),
            i["blockHeight"],
            i["previousRetargetPercent"],
            i["network"],
            _secs(latest) if isinstance(latest, str) else latest,
        ).to_mempool_dict()
        assert got == v["expected"], v["name"]
        # bit for bit: no float tolerance anywhere
        for key, exp in v["expected"].items():
            assert repr(float(got[key])) == repr(float(exp)), (v["name"], key)


def test_mempool_calc_bits_difference_vectors():
    data = _vectors("difficulty_bits_change.test_vectors.json")
    for v in data["vectors"]:
        got = derive.calc_bits_difference(int(v["oldBits"], 16), int(v["newBits"], 16))
        assert got == v["expectedPercent"], v
    for v in data["errors"]:
        with pytest.raises(ValueError, match=v["error"]):
            derive.calc_bits_difference(int(v["oldBits"], 16), int(v["newBits"], 16))
    with pytest.raises(ValueError, match="Invalid bits"):
        derive.calc_bits_difference(0x1D000001 + 0.5, 0x1D000001)
    # On real adjacent epochs it agrees with the exact difficulty ratio.
    first, _, nxt = next(iter(_epochs()))
    exact = derive.difficulty_change_pct(first.difficulty, nxt.difficulty)
    assert derive.calc_bits_difference(first.bits, nxt.bits) == pytest.approx(exact, rel=1e-9)


def test_block_gap_explanation_says_which():
    assert derive.block_gap_explanation(0.2, True) == "within ordinary luck"
    p = derive.block_gap_probability(7200, 600)
    dead = derive.block_gap_explanation(p, False)
    live = derive.block_gap_explanation(p, True)
    assert "dead feed" in dead and "1 in 162,755" in dead
    assert "hashrate loss" in live
