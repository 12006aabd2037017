"""Pure mining-economics math: every formula of ``shared/DOMAIN.md``, nothing stateful.

Units follow DOMAIN.md: difficulty is a plain float, work and targets are exact ``int``,
hashrate is H/s, sats are ``int``, USD ``float``, percentages are percent. Functions return
``None`` when an input needed for an honest answer is missing (never a made-up number).

The incremental bookkeeping (rolling windows, reorgs) lives in ``feeds.chain``; this module
only does arithmetic so it can be checked against real data and published test vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# --- consensus constants -------------------------------------------------------------------

#: Difficulty-1 target (``0x1d00ffff``); difficulty is measured against it.
MAX_TARGET = 0xFFFF * 256 ** (0x1D - 3)
EPOCH_BLOCKS = 2016
TARGET_SPACING_S = 600
TARGET_TIMESPAN_S = EPOCH_BLOCKS * TARGET_SPACING_S  # 1,209,600
MIN_TIMESPAN_S = TARGET_TIMESPAN_S // 4  # 302,400
MAX_TIMESPAN_S = TARGET_TIMESPAN_S * 4  # 4,838,400
HALVING_INTERVAL = 210_000
INITIAL_SUBSIDY_SATS = 5_000_000_000
TWO_32 = 2**32
DAY_S = 86_400
#: Miners may date a block up to 2 h into the future (consensus "future block time" rule).
MAX_FUTURE_BLOCK_TIME_S = 7_200

#: Metric name -> number of intervals of the Core-compatible hashrate windows.
HASHRATE_WINDOWS: dict[str, int] = {
    "hashrate_1d": 144,
    "hashrate_3d": 432,
    "hashrate_7d": 1008,
    "hashrate_30d": 4320,
}
#: Intervals used by the early-epoch projection (k < this uses the previous epoch too).
EARLY_EPOCH_WINDOW = 144


# --- blocks, targets, work -----------------------------------------------------------------


def bits_to_target(bits: int) -> int:
    """Decode compact ``bits`` into the full target (``mantissa * 256**(exponent-3)``).

    Raises ``ValueError`` for encodings consensus would reject (negative or zero target).
    """
    if bits < 0 or bits > 0xFFFFFFFF:
        raise ValueError(f"bits out of range: {bits:#x}")
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000:
        raise ValueError(f"negative compact target: {bits:#010x}")
    # Exponents below 3 shift right (Core's SetCompact); the formula in DOMAIN.md covers >= 3.
    target = mantissa << (8 * (exponent - 3)) if exponent >= 3 else mantissa >> (8 * (3 - exponent))
    if target == 0:
        raise ValueError(f"zero target: {bits:#010x}")
    return target


def target_to_bits(target: int) -> int:
    """Encode a target in compact form, exactly as Core's ``arith_uint256::GetCompact``."""
    if target <= 0:
        raise ValueError("target must be positive")
    size = (target.bit_length() + 7) // 8
    compact = target << (8 * (3 - size)) if size <= 3 else target >> (8 * (size - 3))
    # The mantissa's top bit is a sign bit: shift one byte out so the value stays positive.
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


def difficulty_from_target(target: int) -> float:
    # int / int is correctly rounded in Python, so no precision is lost to a float target.
    return MAX_TARGET / target


def difficulty_from_bits(bits: int) -> float:
    """``D = MAX_TARGET / target``."""
    return difficulty_from_target(bits_to_target(bits))


def block_work(bits: int) -> int:
    """Expected hashes for one block: ``floor(2**256 / (target + 1))`` (Core's GetBlockProof)."""
    return 2**256 // (bits_to_target(bits) + 1)


def subsidy_sats(height: int) -> int:
    """``floor(50e8 / 2**(h // 210000))`` sats (0 after 64 halvings, as consensus says)."""
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else INITIAL_SUBSIDY_SATS >> halvings


def next_halving_height(height: int) -> int:
    return HALVING_INTERVAL * (height // HALVING_INTERVAL + 1)


# --- hashrate ------------------------------------------------------------------------------


def network_hashps(work_delta: int, min_time: int, max_time: int) -> float | None:
    """Core's ``getnetworkhashps``: chainwork delta over the time spread of the n+1 blocks.

    ``None`` when the timestamps do not spread (Core returns 0 there; 0 H/s would be a lie).
    """
    span = max_time - min_time
    if span <= 0:
        return None
    return work_delta / span


def window_hashrate(works: Sequence[int], times: Sequence[int]) -> float | None:
    """Straightforward form for n+1 blocks (oldest first): work of the last n over time spread.

    ``works[0]`` (the block at b-n) is excluded, exactly as ``chainwork(b) - chainwork(b-n)``.
    """
    if len(works) != len(times) or len(times) < 2:
        return None
    return network_hashps(sum(works[1:]), min(times), max(times))


def hashrate_relative_uncertainty(n: int) -> float:
    """Relative standard error of an n-block estimate, ``1/sqrt(n)`` (0.083 at 144)."""
    return 1.0 / math.sqrt(n)


def implied_hashrate(difficulty: float) -> float:
    """What the current difficulty prices in: ``D * 2**32 / 600``."""
    return difficulty * TWO_32 / TARGET_SPACING_S


def utc_day(ts: float) -> int:
    """00:00 UTC (epoch seconds) of the day holding ``ts``."""
    return int(ts // DAY_S) * DAY_S


def daily_hashrates(blocks: Iterable[tuple[int, int]]) -> dict[int, float]:
    """``{day: work of blocks timestamped that UTC day / 86400}`` from ``(time, work)`` pairs.

    Completeness of the first and last day is the caller's business (see ``feeds.chain``).
    """
    work: dict[int, int] = {}
    for t, w in blocks:
        d = utc_day(t)
        work[d] = work.get(d, 0) + w
    return {d: w / DAY_S for d, w in sorted(work.items())}


# --- retarget ------------------------------------------------------------------------------


def clamp_timespan(timespan: float) -> float:
    return min(max(timespan, MIN_TIMESPAN_S), MAX_TIMESPAN_S)


def retarget_difficulty(difficulty: float, first_time: int, last_time: int) -> float:
    """``D_next = D * 1209600 / clamp(time(h0+2015) - time(h0))`` (before compact rounding)."""
    return difficulty * TARGET_TIMESPAN_S / clamp_timespan(last_time - first_time)


def retarget_bits(bits: int, first_time: int, last_time: int) -> int:
    """Next epoch's compact bits exactly as consensus computes them (integer target math)."""
    timespan = int(clamp_timespan(last_time - first_time))
    target = bits_to_target(bits) * timespan // TARGET_TIMESPAN_S
    return target_to_bits(min(target, MAX_TARGET))


def difficulty_change_pct(difficulty_before: float, difficulty_after: float) -> float:
    return (difficulty_after / difficulty_before - 1.0) * 100.0


@dataclass(frozen=True, slots=True)
class EpochProjection:
    """The coming retarget as projected from the current epoch (DOMAIN.md)."""

    tip_height: int
    retarget_height: int
    blocks_remaining: int
    #: clamped projected timespan T (seconds for 2015 intervals)
    timespan_s: float
    change_pct: float
    #: about ``100/sqrt(k')`` percentage points for the k' intervals used
    band_pct: float
    #: ``time(t) + remaining * T / 2015`` (epoch seconds)
    eta: float
    intervals_used: int
    #: True when the early-epoch variant (reaching into the previous epoch) was used
    early: bool


def _projection(
    tip_height: int, tip_time: int, raw_timespan: float, k_used: int, early: bool
) -> EpochProjection:
    h0 = tip_height - tip_height % EPOCH_BLOCKS
    retarget_height = h0 + EPOCH_BLOCKS
    remaining = retarget_height - tip_height
    t = clamp_timespan(raw_timespan)
    return EpochProjection(
        tip_height=tip_height,
        retarget_height=retarget_height,
        blocks_remaining=remaining,
        timespan_s=t,
        change_pct=(TARGET_TIMESPAN_S / t - 1.0) * 100.0,
        band_pct=100.0 / math.sqrt(k_used),
        eta=tip_time + remaining * (t / (EPOCH_BLOCKS - 1)),
        intervals_used=k_used,
        early=early,
    )


def project_epoch(tip_height: int, tip_time: int, epoch_start_time: int) -> EpochProjection:
    """Consensus rule on what is known: ``T = (time(t) - time(h0)) * 2015 / k``, k >= 1.

    At k = 2015 this is exactly the coming retarget's timespan.
    """
    k = tip_height % EPOCH_BLOCKS
    if k == 0:
        raise ValueError("k = 0: use project_epoch_early (no interval of this epoch yet)")
    raw = (tip_time - epoch_start_time) * (EPOCH_BLOCKS - 1) / k
    return _projection(tip_height, tip_time, raw, k, early=False)


def project_epoch_early(
    tip_height: int,
    tip_time: int,
    boundary_time: int,
    window_start_time: int,
    difficulty_ratio: float,
    window: int = EARLY_EPOCH_WINDOW,
) -> EpochProjection:
    """Early-epoch variant (k < ``window``): the ``window`` most recent intervals.

    ``boundary_time`` is ``time(h0 - 1)`` and ``window_start_time`` is ``time(t - window)``.
    An interval belongs to the epoch of the block that *ends* it (that block was mined at
    that epoch's difficulty), so the k + 1 intervals ending at blocks h0..t count as they
    are and the older ones are scaled by ``difficulty_ratio = D_current / D_previous``: the
    time they would have taken at today's difficulty (mempool.space scales the same way).
    """
    k = tip_height % EPOCH_BLOCKS
    if k >= window:
        raise ValueError("k >= window: use project_epoch")
    current = tip_time - boundary_time
    previous = (boundary_time - window_start_time) * difficulty_ratio
    raw = (current + previous) * (EPOCH_BLOCKS - 1) / window
    return _projection(tip_height, tip_time, raw, window, early=True)


# --- mempool.space compatibility -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MempoolDifficultyAdjustment:
    """mempool.space's ``calcDifficultyAdjustment`` result, field for field (ms as it uses)."""

    progress_percent: float
    difficulty_change: float
    estimated_retarget_date: int
    remaining_blocks: int
    remaining_time: int
    previous_retarget: float
    previous_time: int
    next_retarget_height: int
    time_avg: int
    adjusted_time_avg: int
    time_offset: int
    expected_blocks: float

    def to_mempool_dict(self) -> dict[str, float | int]:
        """The camelCase object mempool returns (``/api/v1/difficulty-adjustment``)."""
        return {
            "progressPercent": self.progress_percent,
            "difficultyChange": self.difficulty_change,
            "estimatedRetargetDate": self.estimated_retarget_date,
            "remainingBlocks": self.remaining_blocks,
            "remainingTime": self.remaining_time,
            "previousRetarget": self.previous_retarget,
            "previousTime": self.previous_time,
            "nextRetargetHeight": self.next_retarget_height,
            "timeAvg": self.time_avg,
            "adjustedTimeAvg": self.adjusted_time_avg,
            "timeOffset": self.time_offset,
            "expectedBlocks": self.expected_blocks,
        }


def mempool_difficulty_adjustment(
    last_adjustment_time: int,
    quarter_epoch_time: int | None,
    now_s: int,
    block_height: int,
    previous_retarget_pct: float,
    network: str = "mainnet",
    latest_block_time: int = 0,
) -> MempoolDifficultyAdjustment:
    """mempool.space's estimator (wall-clock ``now`` and a 504-block window early on).

    Reproduces its published test vectors bit for bit: every float operation below is done
    in the same order as theirs (IEEE doubles behave identically in Python and JS).
    ``quarter_epoch_time`` is the timestamp of the block 503 below the tip.
    """
    testnet_max_block_s = 1200
    diff_s = max(0, now_s - last_adjustment_time)
    blocks_in_epoch = block_height % EPOCH_BLOCKS if block_height >= 0 else 0
    progress = blocks_in_epoch / EPOCH_BLOCKS * 100 if block_height >= 0 else 100
    remaining = EPOCH_BLOCKS - blocks_in_epoch
    next_height = block_height + remaining if block_height >= 0 else 0
    expected_blocks = diff_s / TARGET_SPACING_S
    actual_timespan = (
        latest_block_time if blocks_in_epoch == EPOCH_BLOCKS - 1 else now_s
    ) - last_adjustment_time

    time_avg_s: float = diff_s / blocks_in_epoch if blocks_in_epoch else TARGET_SPACING_S
    adjusted_time_avg_s = time_avg_s
    if quarter_epoch_time and blocks_in_epoch < 503:
        # Early in the epoch: last 504 blocks, the previous epoch's part rescaled.
        time_last_epoch = last_adjustment_time - quarter_epoch_time
        adjusted_last = time_last_epoch * (1 + (previous_retarget_pct / 100))
        adjusted_span = diff_s + adjusted_last
        adjusted_time_avg_s = adjusted_span / 503
        change = (TARGET_SPACING_S / (adjusted_span / 504) - 1) * 100
    else:
        change = (TARGET_SPACING_S / (actual_timespan / (blocks_in_epoch + 1)) - 1) * 100
    change = min(max(change, -75), 300)

    time_offset = 0
    if network == "testnet":
        # Testnet resets difficulty after 20 min without a block, so intervals are capped.
        time_avg_s = min(time_avg_s, testnet_max_block_s)
        since_last = now_s - latest_block_time
        if since_last + time_avg_s > testnet_max_block_s:
            time_offset = -min(since_last, testnet_max_block_s) * 1000

    time_avg = math.floor(time_avg_s * 1000)
    adjusted_time_avg = math.floor(adjusted_time_avg_s * 1000)
    remaining_time = remaining * adjusted_time_avg
    return MempoolDifficultyAdjustment(
        progress_percent=progress,
        difficulty_change=change,
        estimated_retarget_date=remaining_time + now_s * 1000,
        remaining_blocks=remaining,
        remaining_time=remaining_time,
        previous_retarget=previous_retarget_pct,
        previous_time=last_adjustment_time,
        next_retarget_height=next_height,
        time_avg=time_avg,
        adjusted_time_avg=adjusted_time_avg,
        time_offset=time_offset,
        expected_blocks=expected_blocks,
    )


def calc_bits_difference(old_bits: float, new_bits: float) -> float:
    """mempool.space's ``calcBitsDifference``: difficulty change % between adjacent epochs.

    Clamped to [-75, 300]. Raises ``ValueError('Invalid bits')`` or
    ``ValueError('Impossible exponent difference')`` exactly where mempool throws.
    """

    def checked(bits: float) -> int:
        if (
            math.floor(bits) != bits
            or bits > 0x207FFFFF
            or bits < 1
            or int(bits) & 0x00800000
            or int(bits) & 0x007FFFFF == 0
        ):
            raise ValueError("Invalid bits")
        return int(bits)

    old, new = checked(old_bits), checked(new_bits)
    old_exp, new_exp = old >> 24, new >> 24
    old_num, new_num = old & 0x007FFFFF, new & 0x007FFFFF
    gap = new_exp - old_exp
    if gap == -1:
        result = ((old_num << 8) * 100) / new_num - 100
    elif gap == 0:
        result = (old_num * 100) / new_num - 100
    elif gap == 1:
        result = (old_num * 100) / (new_num << 8) - 100
    else:
        raise ValueError("Impossible exponent difference")
    return 300 if result > 300 else -75 if result < -75 else result


# --- revenue -------------------------------------------------------------------------------


def blocks_per_day_per_ph(difficulty: float) -> float:
    """Expected blocks per day for 1 PH/s: ``1e15 * 86400 / (D * 2**32)``."""
    return 1e15 * DAY_S / (difficulty * TWO_32)


def hashvalue_sats(difficulty: float, subsidy: int, fees_avg_144: float | None) -> float:
    """sats per PH/s per day; with unknown fees the subsidy alone ("excl. fees")."""
    return blocks_per_day_per_ph(difficulty) * (subsidy + (fees_avg_144 or 0.0))


def hashprice_usd(hashvalue: float, price_usd: float) -> float:
    """USD per PH/s per day (1 $/PH/day = 0.001 $/TH/day)."""
    return hashvalue / 1e8 * price_usd


@dataclass(frozen=True, slots=True)
class HashpriceInputs:
    price_usd: float
    difficulty: float
    subsidy_sats: int
    fees_avg_sats: float | None


@dataclass(frozen=True, slots=True)
class HashpriceAttribution:
    """A hashprice change split into price, difficulty and fee (per-block revenue) parts.

    ``log_*`` are natural-log differences and add up to ``log_total``; the ``usd_*`` parts
    share the USD change in the same proportions and add up to ``usd_total``.
    """

    log_price: float
    log_difficulty: float
    log_fees: float
    log_total: float
    usd_price: float
    usd_difficulty: float
    usd_fees: float
    usd_total: float


def hashprice_from_inputs(x: HashpriceInputs) -> float:
    return hashprice_usd(hashvalue_sats(x.difficulty, x.subsidy_sats, x.fees_avg_sats), x.price_usd)


def hashprice_attribution(before: HashpriceInputs, after: HashpriceInputs) -> HashpriceAttribution:
    """``ln(hp2/hp1) = ln(P2/P1) - ln(D2/D1) + ln(R2/R1)`` with R = subsidy + fees per block.

    A halving shows up in the fees (revenue-per-block) part. ``log_total`` is defined as
    the sum of the parts, so the identity holds exactly, not just up to rounding.
    """
    lp = math.log(after.price_usd / before.price_usd)
    ld = -math.log(after.difficulty / before.difficulty)
    r1 = before.subsidy_sats + (before.fees_avg_sats or 0.0)
    r2 = after.subsidy_sats + (after.fees_avg_sats or 0.0)
    lf = math.log(r2 / r1)
    total = lp + ld + lf
    usd_total = hashprice_from_inputs(after) - hashprice_from_inputs(before)
    if total == 0.0:
        parts = (0.0, 0.0, 0.0)
    else:
        parts = (usd_total * lp / total, usd_total * ld / total, usd_total * lf / total)
    return HashpriceAttribution(lp, ld, lf, total, *parts, usd_total=usd_total)


# --- costs ---------------------------------------------------------------------------------


class CostModel(Protocol):
    """What the economics formulas need from a fleet (config keys are in percent 0-100)."""

    @property
    def efficiency_j_per_th(self) -> float: ...
    @property
    def power_usd_per_kwh(self) -> float: ...
    @property
    def pool_fee_pct(self) -> float: ...
    @property
    def uptime_pct(self) -> float: ...
    @property
    def other_opex_usd_per_ph_day(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SimpleCostModel:
    """A plain ``CostModel`` for tests, demos and callers without a config object."""

    efficiency_j_per_th: float
    power_usd_per_kwh: float
    pool_fee_pct: float = 0.0
    uptime_pct: float = 100.0
    other_opex_usd_per_ph_day: float = 0.0


def hashcost_energy(efficiency_j_per_th: float, power_usd_per_kwh: float, uptime: float) -> float:
    """``24 * e * c * u`` $/PH/day: 1 PH/s at e J/TH draws e kW (``uptime`` is a fraction)."""
    return 24.0 * efficiency_j_per_th * power_usd_per_kwh * uptime


@dataclass(frozen=True, slots=True)
class FleetEconomics:
    """The fleet formulas of DOMAIN.md; price-dependent fields are None without a price."""

    hashcost_energy: float
    hashcost: float
    hashprice_net: float | None
    margin: float | None
    breakeven_power_usd_per_kwh: float | None
    production_cost_usd: float | None


def fleet_economics(
    cost: CostModel, hashvalue: float | None, hashprice: float | None
) -> FleetEconomics:
    f = cost.pool_fee_pct / 100.0
    u = cost.uptime_pct / 100.0
    e = cost.efficiency_j_per_th
    o = cost.other_opex_usd_per_ph_day
    energy = hashcost_energy(e, cost.power_usd_per_kwh, u)
    total = energy + o
    net = hashprice * (1.0 - f) * u if hashprice is not None else None
    margin = net - total if net is not None else None
    breakeven = (net - o) / (24.0 * e * u) if net is not None and e > 0 and u > 0 else None
    production = None
    if hashvalue is not None:
        net_btc = hashvalue / 1e8 * (1.0 - f) * u
        production = total / net_btc if net_btc > 0 else None
    return FleetEconomics(energy, total, net, margin, breakeven, production)


def price_to_cost_pct(price_usd: float, production_cost: float) -> float:
    """``(P / production_cost - 1) * 100``: below zero, the network model mines at a loss."""
    return (price_usd / production_cost - 1.0) * 100.0


# --- cycle signals -------------------------------------------------------------------------


def sma(values: Sequence[float], n: int) -> float | None:
    """Mean of the last n values, None with fewer than n."""
    if n <= 0 or len(values) < n:
        return None
    return math.fsum(values[-n:]) / n


def hash_ribbon(daily: Sequence[float]) -> float | None:
    """SMA30 / SMA60 of daily hashrate (oldest first, consecutive closed days)."""
    s30, s60 = sma(daily, 30), sma(daily, 60)
    if s30 is None or s60 is None or s60 == 0:
        return None
    return s30 / s60


@dataclass(frozen=True, slots=True)
class RibbonEvent:
    day: int
    #: "capitulation" (SMA30 crossed below SMA60) or "recovery" (crossed back above)
    kind: str
    ratio: float


def ribbon_events(daily: Sequence[tuple[int, float]]) -> list[RibbonEvent]:
    """Crossing events over consecutive closed days ``(day, hashrate)`` oldest first.

    The first day with both averages sets the initial side without an event: an edge needs
    a previous day to cross from.
    """
    values = [v for _, v in daily]
    events: list[RibbonEvent] = []
    below: bool | None = None
    for i in range(59, len(values)):
        s30 = math.fsum(values[i - 29 : i + 1]) / 30
        s60 = math.fsum(values[i - 59 : i + 1]) / 60
        if s60 == 0:
            continue
        if s30 == s60 and below is not None:
            continue  # touching is not crossing: keep the side we were on
        now_below = s30 < s60
        if below is not None and now_below != below:
            kind = "capitulation" if now_below else "recovery"
            events.append(RibbonEvent(daily[i][0], kind, s30 / s60))
        below = now_below
    return events


def puell_multiple(daily_issuance_usd: Sequence[float]) -> float | None:
    """Latest daily subsidy value (USD) over its 365-day mean; needs a year of history."""
    m = sma(daily_issuance_usd, 365)
    if m is None or m == 0:
        return None
    return daily_issuance_usd[-1] / m


def expected_block_interval_s(difficulty: float, hashrate_hs: float) -> float:
    """``tau = D * 2**32 / hashrate``."""
    return difficulty * TWO_32 / hashrate_hs


def block_gap_probability(gap_s: float, tau_s: float) -> float:
    """Chance of no block for ``gap_s`` seconds: ``exp(-s / tau)`` (2 h at 600 s ~ 1/163k)."""
    return math.exp(-max(gap_s, 0.0) / tau_s)


def block_gap_explanation(probability: float, block_feed_live: bool) -> str:
    """DOMAIN.md "say which": is a long gap luck, a dead feed or a real hashrate loss?

    Below 1% luck is an unlikely story, so the feed's own health decides between the other
    two (a live feed whose tip a REST check agrees with is reporting a real gap).
    """
    if probability >= 0.01:
        return "within ordinary luck"
    odds = f"1 in {1 / probability:,.0f}" if probability > 0 else "essentially impossible"
    if not block_feed_live:
        return f"block feed is not live: likely a dead feed, not the network ({odds} by luck)"
    return f"feed is live: a real hashrate loss is more likely than luck ({odds})"
