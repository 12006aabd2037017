"""The synthetic parts of the offline demo, each one documented and seeded.

Nothing here is measured data. The real parts of the demo (header times and difficulty of
heights 937,440..942,199, the retarget history) live in ``feeds/data/`` and are read by
:mod:`feeds.demo.replay`; ``feeds/data/SOURCES.md`` says which is which. What this module
makes up, and the assumptions behind it:

* **Block hashes and prev links**: ``sha256`` of the block's (height, time, bits), shown as a
  64-hex string with 19 leading zeros. Deterministic, so a replay into the same database
  twice stores the same blocks (no fake reorgs). Not real hashes (two real ones are used
  where the data file has them).
* **Fees per block**: lognormal, median 0.03 BTC, sigma 0.35 (about 0.02..0.05 BTC for the
  middle two thirds), seeded per (seed, height): early-2026-like, not measured.
* **Transactions per block**: uniform 2,500..4,500, seeded per (seed, height).
* **Pools**: drawn from :data:`POOL_SHARES`, a rounded share table in the spirit of public
  pool dashboards of early 2026, not measured.
* **BTC/USD**: a geometric random walk, 2.5% daily volatility, no drift, anchored at
  :data:`ANCHOR_PRICE_USD` (68,000 USD) at the replay start; the year of daily history is the
  same kind of walk run backwards from the anchor. (The motivating analysis had spot around
  71,000 USD; the anchor is set a little below it on purpose: a demo, not a claim.) Each
  exchange adds a small persistent offset (+-0.05%) and tick noise (0.01%).
* **Blocks after the real data** (height 942,200 onwards): exponential intervals at the
  hashrate the last 1,008 real blocks imply (Core-style: work / time span), difficulty from
  the consensus retarget rule applied to those synthetic times.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from feeds.derive import (
    EPOCH_BLOCKS,
    block_work,
    difficulty_from_bits,
    retarget_bits,
)

DAY_S = 86_400

#: Replay-start BTC/USD price of the synthetic walk (USD).
ANCHOR_PRICE_USD = 68_000.0
#: Daily volatility of the synthetic walk (log-returns, 1 sigma).
DAILY_VOL = 0.025
#: Median and log-sigma of synthetic per-block fees.
FEE_MEDIAN_SATS = 3_000_000
FEE_SIGMA = 0.35

#: Synthetic pool share table (percent; sums to 100). Rounded, illustrative, not measured.
POOL_SHARES: tuple[tuple[str, float], ...] = (
    ("Foundry USA", 29.0),
    ("AntPool", 17.0),
    ("ViaBTC", 12.0),
    ("F2Pool", 10.0),
    ("SpiderPool", 8.0),
    ("MARA Pool", 5.0),
    ("Luxor", 4.0),
    ("SECPOOL", 3.0),
    ("Binance Pool", 3.0),
    ("Braiins Pool", 2.0),
    ("OCEAN", 1.0),
    ("Unknown", 6.0),
)

#: Synthetic, persistent per-exchange price offsets (fraction of the mid price).
EXCHANGE_BIAS = {"coinbase": 0.0004, "kraken": -0.0003, "bitstamp": 0.0001}
TICK_NOISE = 0.0001


def fake_hash(height: int, time: int, bits: int) -> str:
    """A deterministic, obviously synthetic 64-hex block hash."""
    digest = hashlib.sha256(f"hashwatch-demo:{height}:{time}:{bits}".encode()).hexdigest()
    return "0" * 19 + digest[19:]


def _rng(seed: int, *parts: object) -> random.Random:
    # One stream per (seed, purpose, key): values do not depend on the order of the calls.
    return random.Random(":".join(map(str, (seed, *parts))))


@dataclass(frozen=True, slots=True)
class BlockExtras:
    """The synthetic per-block fields the data file does not have."""

    fees_sats: int
    tx_count: int
    pool: str


def block_extras(seed: int, height: int) -> BlockExtras:
    r = _rng(seed, "block", height)
    fees = int(FEE_MEDIAN_SATS * math.exp(r.gauss(0.0, FEE_SIGMA)))
    tx_count = r.randint(2_500, 4_500)
    names = [n for n, _ in POOL_SHARES]
    weights = [w for _, w in POOL_SHARES]
    pool = r.choices(names, weights)[0]
    return BlockExtras(fees_sats=fees, tx_count=tx_count, pool=pool)


# --- prices -------------------------------------------------------------------------------


def daily_price_history(
    seed: int, last_day: int, days: int, anchor: float = ANCHOR_PRICE_USD
) -> list[tuple[int, float]]:
    """``days`` daily closes ending at ``last_day`` (00:00 UTC epoch), walking backwards from
    ``anchor`` so that the newest close is near the live walk's start. Ascending by day."""
    r = _rng(seed, "daily-prices")
    price = anchor
    out: list[tuple[int, float]] = []
    for i in range(days):
        out.append((last_day - i * DAY_S, round(price, 2)))
        price *= math.exp(r.gauss(0.0, DAILY_VOL))
    out.reverse()
    return out


class PriceWalk:
    """The live mid price: a geometric random walk in *replay* time.

    ``advance(t)`` moves the mid to replay time ``t`` (the variance grows with the elapsed
    replay seconds, so the walk looks the same at any speed); ``quote(exchange)`` is the mid
    plus that exchange's offset and a little tick noise.
    """

    def __init__(self, seed: int, start_time: float, anchor: float = ANCHOR_PRICE_USD) -> None:
        self._r = _rng(seed, "live-prices")
        self.mid = anchor
        self.time = start_time

    def advance(self, t: float) -> float:
        dt = t - self.time
        if dt > 0:
            self.mid *= math.exp(self._r.gauss(0.0, DAILY_VOL * math.sqrt(dt / DAY_S)))
            self.time = t
        return self.mid

    def quote(self, exchange: str) -> float:
        bias = EXCHANGE_BIAS.get(exchange, 0.0)
        return round(self.mid * (1.0 + bias + self._r.gauss(0.0, TICK_NOISE)), 2)


# --- blocks after the real data ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """What the replay needs to mine one block (``synthetic``: made up, not replayed)."""

    height: int
    time: int
    bits: int
    hash: str
    prev_hash: str
    synthetic: bool = False

    @property
    def difficulty(self) -> float:
        return difficulty_from_bits(self.bits)


def window_hashrate(headers: Sequence[HeaderSpec]) -> float:
    """Core-style estimate over ``headers`` (consecutive): work after the first / time span."""
    times = [h.time for h in headers]
    span = max(times) - min(times)
    work = sum(block_work(h.bits) for h in headers[1:])
    if span <= 0:
        raise ValueError("headers span no time")
    return work / span


def synthetic_headers(
    seed: int, history: Sequence[HeaderSpec], hashrate_hs: float
) -> Iterator[HeaderSpec]:
    """Blocks after ``history`` forever: exponential intervals with mean ``work / hashrate``,
    bits retargeted by the consensus rule at every epoch boundary.

    ``history`` must reach back to the start of the current epoch (its first block is needed
    for the retarget); synthetic times only grow, so the epoch's first/last are well defined.
    """
    r = _rng(seed, "synthetic-blocks")
    by_height = {h.height: h for h in history}
    tip = history[-1]
    first = by_height.get(tip.height - tip.height % EPOCH_BLOCKS)
    if first is None:
        raise ValueError("history must include the first block of the current epoch")
    epoch_first_time = first.time
    last_time = max(h.time for h in history[-11:])  # stay above the median time past
    while True:
        height = tip.height + 1
        bits = tip.bits
        if height % EPOCH_BLOCKS == 0:
            bits = retarget_bits(tip.bits, epoch_first_time, tip.time)
        mean = block_work(bits) / hashrate_hs
        last_time = last_time + max(1, round(r.expovariate(1.0 / mean)))
        block = HeaderSpec(
            height=height,
            time=last_time,
            bits=bits,
            hash=fake_hash(height, last_time, bits),
            prev_hash=tip.hash,
            synthetic=True,
        )
        if height % EPOCH_BLOCKS == 0:
            epoch_first_time = block.time
        tip = block
        yield block


__all__ = [
    "ANCHOR_PRICE_USD",
    "DAILY_VOL",
    "POOL_SHARES",
    "BlockExtras",
    "HeaderSpec",
    "PriceWalk",
    "block_extras",
    "daily_price_history",
    "fake_hash",
    "synthetic_headers",
    "window_hashrate",
]
