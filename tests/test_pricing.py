"""feeds.pricing.ReferencePrice: median of fresh sources, divergence flags, stale handling."""

from __future__ import annotations

import pytest

from feeds.events import PriceTick
from feeds.pricing import ReferencePrice

T0 = 1_774_000_000.0


def tick(source: str, price: float, at: float) -> PriceTick:
    return PriceTick(source=source, price_usd=price, time=at - 0.2, received_at=at)


def test_median_of_fresh_sources():
    rp = ReferencePrice()
    rp.on_tick(tick("coinbase", 70_000, T0))
    rp.on_tick(tick("kraken", 70_100, T0 + 1))
    rp.on_tick(tick("bitstamp", 69_950, T0 + 2))
    assert rp.price_usd(T0 + 3) == 70_000
    assert rp.price_age_s(T0 + 3) == pytest.approx(1.0)
    assert not rp.is_stale(T0 + 3)
    # Even count: mean of the two middle prices.
    rp.on_tick(tick("binance", 70_200, T0 + 2))
    assert rp.price_usd(T0 + 3) == pytest.approx(70_050)


def test_old_sources_drop_out_of_the_median():
    rp = ReferencePrice(fresh_after_s=60)
    rp.on_tick(tick("coinbase", 60_000, T0))
    rp.on_tick(tick("kraken", 70_000, T0 + 50))
    assert rp.price_usd(T0 + 55) == pytest.approx(65_000)
    assert set(rp.fresh_sources(T0 + 61)) == {"kraken"}
    assert rp.price_usd(T0 + 61) == 70_000


def test_no_fresh_source_keeps_last_value_and_age_grows():
    rp = ReferencePrice(fresh_after_s=60)
    assert rp.price_usd(T0) is None and rp.price_age_s(T0) is None and rp.is_stale(T0)
    rp.on_tick(tick("coinbase", 70_000, T0))
    rp.on_tick(tick("kraken", 71_000, T0 + 10))
    assert rp.price_usd(T0 + 20) == pytest.approx(70_500)
    assert rp.is_stale(T0 + 71)
    assert rp.price_usd(T0 + 71) == pytest.approx(70_500)  # the last reference, not a new mix
    assert rp.price_age_s(T0 + 71) == pytest.approx(61)
    assert rp.price_age_s(T0 + 600) == pytest.approx(590)
    rp.on_tick(tick("kraken", 72_000, T0 + 700))
    assert not rp.is_stale(T0 + 701) and rp.price_usd(T0 + 701) == 72_000


def test_only_old_ticks_still_give_a_stale_value():
    rp = ReferencePrice(fresh_after_s=60)
    rp.on_tick(tick("coinbase", 70_000, T0))
    assert rp.is_stale(T0 + 3600)
    assert rp.price_usd(T0 + 3600) == 70_000
    assert rp.price_age_s(T0 + 3600) == pytest.approx(3600)


def test_divergent_source_is_flagged():
    rp = ReferencePrice(divergence_pct=2.0)
    rp.on_tick(tick("coinbase", 70_000, T0))
    rp.on_tick(tick("kraken", 70_300, T0))
    rp.on_tick(tick("bitstamp", 72_500, T0))  # +3.3% vs the others' median 70,150
    flagged = rp.flagged(T0 + 1)
    assert set(flagged) == {"bitstamp"}
    assert flagged["bitstamp"] == pytest.approx((72_500 / 70_150 - 1) * 100)
    assert rp.price_usd(T0 + 1) == 70_300  # the median shrugs the outlier off
    rp.on_tick(tick("bitstamp", 71_000, T0 + 2))  # +1.2%: fine
    assert rp.flagged(T0 + 3) == {}


def test_two_sources_disagreeing_flag_each_other_and_one_cannot_disagree():
    rp = ReferencePrice()
    rp.on_tick(tick("a", 70_000, T0))
    assert rp.flagged(T0) == {}
    rp.on_tick(tick("b", 75_000, T0))
    assert set(rp.flagged(T0)) == {"a", "b"}


def test_late_or_bad_ticks_do_not_replace_newer_ones():
    rp = ReferencePrice()
    rp.on_tick(tick("a", 70_000, T0 + 10))
    rp.on_tick(tick("a", 10_000, T0))  # replayed older tick
    rp.on_tick(tick("a", -1.0, T0 + 11))
    rp.on_tick(tick("a", 0.0, T0 + 11))
    assert rp.price_usd(T0 + 12) == 70_000
