"""feeds.chain.ChainState: incremental state equals a from-scratch recompute, on real blocks,
through duplicates, reorgs and gaps."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import support_metrics as sm

from feeds import derive
from feeds.chain import ApplyResult, ChainState
from feeds.events import Block

WINDOWS = (144, 432, 1008, 4320)


@functools.cache
def work_of(bits: int) -> int:
    return derive.block_work(bits)


_last_columns: list[tuple[list[Block], list[int], list[int]]] = []


def _columns(chain: list[Block]) -> tuple[list[int], list[int]]:
    """Times and works of ``chain``, kept for the last chain seen (it is re-sliced per step)."""
    if not _last_columns or _last_columns[0][0] is not chain:
        _last_columns[:] = [(chain, [b.time for b in chain], [work_of(b.bits) for b in chain])]
    return _last_columns[0][1], _last_columns[0][2]


def recompute(chain: list[Block], end: int | None = None) -> dict[str, object]:
    """Everything ChainState reports, computed naively from the best chain (oldest first).

    ``end`` (an index) recomputes for the prefix ``chain[: end + 1]`` without copying it.
    """
    tip = len(chain) - 1 if end is None else end
    lo_i = max(0, tip - 4320)
    window = chain[lo_i : tip + 1]
    all_times, all_works = _columns(chain)
    times, works = all_times[lo_i : tip + 1], all_works[lo_i : tip + 1]
    last = len(window) - 1
    out: dict[str, object] = {}
    for n in WINDOWS:
        if tip >= n:
            span = max(times[last - n :]) - min(times[last - n :])
            out[f"hr{n}"] = sum(works[last - n + 1 :]) / span if span > 0 else None
        else:
            out[f"hr{n}"] = None
    fees = [b.fees_sats for b in window[-144:] if b.fees_sats is not None]
    out["fees"] = sum(fees) / len(fees) if len(fees) >= 72 else None
    by_h = {b.height: b for b in window}
    t = window[-1]
    k = t.height % 2016
    h0 = t.height - k
    d = derive.difficulty_from_bits(t.bits)
    prev = by_h.get(h0 - 1)
    d_prev = derive.difficulty_from_bits(prev.bits) if prev else None
    out["last_change"] = (
        (derive.difficulty_from_bits(by_h[h0].bits) / d_prev - 1) * 100
        if prev and h0 in by_h
        else None
    )
    raw = None
    if k < 144 and prev is not None and t.height - 144 in by_h:
        span_s = 0.0
        for h in range(t.height - 143, t.height + 1):
            dt = by_h[h].time - by_h[h - 1].time
            span_s += dt if h >= h0 else dt * d / d_prev
        raw = span_s * 2015 / 144
    elif k >= 1 and h0 in by_h:
        raw = (t.time - by_h[h0].time) * 2015 / k
    out["proj"] = None if raw is None else (1209600 / min(max(raw, 302400), 4838400) - 1) * 100
    return out


def observed(cs: ChainState) -> dict[str, object]:
    out: dict[str, object] = {f"hr{n}": cs.hashrate(n) for n in WINDOWS}
    out["fees"] = cs.fees_avg_144()
    ep = cs.epoch()
    out["last_change"] = ep.last_change_pct if ep else None
    p = cs.projection()
    out["proj"] = p.change_pct if p else None
    return out


def assert_same(cs: ChainState, chain: list[Block], end: int | None = None) -> None:
    got, want = observed(cs), recompute(chain, end)
    for key in want:
        if want[key] is None or got[key] is None:
            assert got[key] is None and want[key] is None, (key, got[key], want[key])
        elif key.startswith("hr") or key == "fees":
            assert got[key] == want[key], key  # exact: same ints, one division
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    assert cs.tip is not None and cs.tip.hash == chain[-1 if end is None else end].hash


def daily_recompute(chain: list[Block]) -> dict[int, float]:
    return derive.daily_hashrates((b.time, work_of(b.bits)) for b in chain)


def test_incremental_equals_recompute_after_every_block():
    blocks = list(sm.blocks())
    cs = ChainState()
    for i, b in enumerate(blocks):
        assert cs.apply(b) is ApplyResult.APPENDED
        assert_same(cs, blocks, i)
        if i % 250 == 0:
            assert dict(cs.daily_hashrates(closed_only=False)) == daily_recompute(blocks[: i + 1])
    # The buffer stays bounded but holds the largest window and the previous epoch's end.
    assert len(cs) <= cs.capacity < len(blocks)
    assert cs.base_height is not None and cs.base_height <= blocks[-1].height - 4320
    assert dict(cs.daily_hashrates(closed_only=False)) == daily_recompute(blocks)


def test_windows_are_null_until_enough_blocks():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[:144])
    assert cs.hashrate(144) is None  # 144 blocks are only 143 intervals
    cs.apply(blocks[144])
    assert cs.hashrate(144) is not None and cs.hashrate(432) is None


def test_fees_need_72_known():
    blocks = list(sm.blocks())
    cs = ChainState()
    # Heights 940000..940099 have no fees: at 940099 only 44 of the last 144 are known.
    cs.apply_many(b for b in blocks if b.height <= 940_099)
    assert cs.fees_known_144()[1] < 72 and cs.fees_avg_144() is None
    cs.apply_many(b for b in blocks if b.height > 940_099)
    assert cs.fees_avg_144() is not None


def test_closed_days_exclude_partial_first_and_last_day():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks)
    closed = cs.daily_hashrates()
    everything = daily_recompute(blocks)
    first_day, last_day = min(everything), max(everything)
    days = [d for d, _ in closed]
    assert first_day not in days and last_day not in days
    assert days == sorted(d for d in everything if first_day < d < last_day)
    for d, v in closed:
        assert v == everything[d]
    # Real data sanity: about 144 blocks a day, daily hashrate near the 30-day figure.
    assert all(100 < cs.day_block_count(d) < 190 for d in days)
    assert cs.hashrate(4320) == pytest.approx(sum(v for _, v in closed) / len(closed), rel=0.05)


def test_duplicates_change_nothing_and_fees_fill_once():
    blocks = list(sm.blocks(with_fees=False))[:600]
    cs = ChainState()
    cs.apply_many(blocks)
    before = observed(cs)
    for b in blocks[-200:]:
        assert cs.apply(b) is ApplyResult.DUPLICATE
    assert observed(cs) == before
    # The same block again, now with fees: counted once, however often it is replayed.
    for b in blocks[-100:]:
        for _ in range(3):
            cs.apply(replace(b, fees_sats=1000))
    assert cs.fees_known_144() == (100 * 1000, 100)
    assert cs.fees_avg_144() == 1000.0


def test_first_seen_is_receipt_for_live_and_header_time_for_backfill():
    b = sm.blocks()[0]
    cs = ChainState()
    cs.apply(replace(b, backfill=False, received_at=b.time + 30.0))
    assert cs.tip.first_seen == b.time + 30.0
    cs.apply(b)  # the same block from backfill: earliest knowledge wins
    assert cs.tip.first_seen == b.time


def test_reorg_drops_orphans_and_equals_recompute():
    blocks = list(sm.blocks())
    main = blocks[:4200]
    cs = ChainState()
    cs.apply_many(main)
    fork = main[-6].height
    # Wildly shifted timestamps: any orphan left in a window would change min/max time.
    alt = sm.branch(main, fork, 8, "alt", dt=-50_000)
    assert cs.apply(alt[0]) is ApplyResult.REORG
    for b in alt[1:]:
        assert cs.apply(b) is ApplyResult.APPENDED
    new_chain = main[:-5] + alt
    assert_same(cs, new_chain)
    assert dict(cs.daily_hashrates(closed_only=False)) == daily_recompute(new_chain)
    assert not any(cs.contains(b.hash) for b in main[-5:])
    assert cs.reorgs == 1
    # Continue on top of the new branch: still identical to a from-scratch recompute.
    more = sm.branch(new_chain, new_chain[-1].height, 300, "more")
    longer = new_chain + more
    for i, b in enumerate(more):
        cs.apply(b)
        assert_same(cs, longer, len(new_chain) + i)


def test_reorg_announced_by_its_new_tip_first():
    blocks = list(sm.blocks())
    main = blocks[:3000]
    cs = ChainState()
    cs.apply_many(main)
    alt = sm.branch(main, main[-4].height, 5, "alt", dt=3_000)
    # Newest first: each arrival proves our block at that height is orphaned.
    results = [cs.apply(b) for b in reversed(alt)]
    assert results[0] is ApplyResult.PENDING  # above tip+1
    assert cs.tip.hash == alt[-1].hash
    assert not cs.has_gap
    assert_same(cs, main[:-3] + alt)
    assert cs.hashrate(1008) is not None


def test_orphaned_branch_can_come_back():
    blocks = list(sm.blocks())
    main = blocks[:2500]
    cs = ChainState()
    cs.apply_many(main)
    alt = sm.branch(main, main[-3].height, 2, "alt")
    cs.apply_many(alt)
    assert cs.tip.hash == alt[-1].hash
    # The original chain grows longer: its next block links to the orphans, which return.
    nxt = blocks[2500]
    cs.apply(nxt)
    assert cs.tip.hash == nxt.hash
    assert_same(cs, blocks[:2501])


def test_gap_keeps_windows_null_until_filled():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[:2000])
    assert cs.apply(blocks[2003]) is ApplyResult.PENDING
    assert cs.apply(blocks[2004]) is ApplyResult.PENDING
    assert cs.has_gap and cs.missing_heights() == range(blocks[2000].height, blocks[2004].height)
    assert cs.hashrate(144) is None and cs.projection() is None
    seen = cs.latest_seen()
    assert seen is not None and seen.height == blocks[2004].height
    assert cs.tip.height == blocks[1999].height
    cs.apply(blocks[2001])  # still a hole at 2000
    assert cs.has_gap
    cs.apply(blocks[2002])
    cs.apply(blocks[2000])
    assert not cs.has_gap and cs.tip.hash == blocks[2004].hash
    assert_same(cs, blocks[:2005])


def test_gap_too_wide_restarts_from_the_new_blocks():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[:100])
    assert cs.apply(blocks[4700]) is ApplyResult.RESET
    assert cs.resets == 1 and not cs.has_gap
    assert cs.tip.hash == blocks[4700].hash and len(cs) == 1
    cs.apply_many(blocks[4701:])
    assert_same(cs, blocks[4700:])


def test_old_blocks_below_a_full_buffer_are_ignored():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[:4600])
    assert len(cs) == cs.capacity
    assert cs.apply(blocks[4600 - cs.capacity - 1]) is ApplyResult.IGNORED
    assert cs.apply(blocks[5]) is ApplyResult.IGNORED
    assert_same(cs, blocks[:4600])


def test_older_blocks_wait_below_until_they_link():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[10:200])
    assert cs.apply(blocks[5]) is ApplyResult.PENDING  # 6..9 still missing
    assert_same(cs, blocks[10:200])
    assert cs.apply(blocks[8]) is ApplyResult.PENDING
    assert cs.apply(blocks[9]) is ApplyResult.PREPENDED  # joins, and 8 with it
    assert cs.base_height == blocks[8].height
    assert cs.apply(blocks[9]) is ApplyResult.DUPLICATE
    cs.apply_many([blocks[7], blocks[6]])
    assert cs.base_height == blocks[5].height
    assert_same(cs, blocks[5:200])
    # A block at the right height that is not the parent (a stale branch) is dropped.
    assert cs.apply(replace(blocks[4], hash="stale")) is ApplyResult.PENDING
    assert cs.base_height == blocks[5].height and not cs.contains("stale")


@pytest.mark.parametrize("pages_swapped", [False, True])
def test_backfill_newest_first_after_live_blocks_fills_every_window(pages_swapped):
    """Fresh database: the websocket's newest blocks come first, then REST backfill pages
    of 15, newest first (two in flight, so a page may overtake the one above it). The
    windows, fees and projection equal a recompute as soon as the blocks are there."""
    blocks = list(sm.blocks())
    tip = 4000
    live = blocks[tip - 8 : tip]
    older = blocks[: tip - 8]
    pages = [older[max(0, i - 15) : i][::-1] for i in range(len(older), 0, -15)]
    if pages_swapped:
        for i in range(0, len(pages) - 1, 2):
            pages[i], pages[i + 1] = pages[i + 1], pages[i]
    cs = ChainState()
    cs.apply_many(live)
    assert cs.hashrate(1008) is None and cs.fees_avg_144() is None
    for page in pages:
        for b in page:
            assert cs.apply(b) in (ApplyResult.PREPENDED, ApplyResult.PENDING)
    assert cs.base_height == older[0].height and not cs.has_gap
    assert_same(cs, blocks[:tip])
    for v in ("hr144", "hr432", "hr1008", "fees", "last_change", "proj"):
        assert observed(cs)[v] is not None, v
    # Live blocks keep appending on top, windows sliding as usual.
    for i in range(tip, tip + 300):
        cs.apply(blocks[i])
    assert_same(cs, blocks[: tip + 300])
    # Daily buckets cover the prepended blocks too.
    assert dict(cs.daily_hashrates(closed_only=False)) == daily_recompute(blocks[: tip + 300])


def test_projection_early_epoch_uses_previous_epoch():
    blocks = list(sm.blocks())
    cs = ChainState()
    i0 = next(i for i, b in enumerate(blocks) if b.height == 941_472)
    cs.apply_many(blocks[: i0 + 10])
    p = cs.projection()
    assert p is not None and p.early and p.band_pct == pytest.approx(100 / math.sqrt(144))
    ep = cs.epoch()
    assert ep.k == 9 and ep.last_change_pct == pytest.approx(-7.7557, abs=1e-3)
    # Without history before the epoch it falls back to the k intervals it has.
    cs2 = ChainState()
    cs2.apply_many(blocks[i0 : i0 + 10])
    p2 = cs2.projection()
    assert p2 is not None and not p2.early and p2.band_pct == pytest.approx(100 / 3)
    assert cs2.epoch().last_change_pct is None


def test_backfill_below_stops_at_capacity():
    blocks = list(sm.blocks())
    cs = ChainState()
    cs.apply_many(blocks[-8:])
    results = [cs.apply(b) for b in reversed(blocks[:-8])]
    assert len(cs) == cs.capacity and results[-1] is ApplyResult.IGNORED
    assert cs.base_height == blocks[-cs.capacity].height
    assert_same(cs, blocks)
