"""Incremental chain state: rolling windows over the best chain in amortised O(1) per block.

``ChainState.apply(block)`` takes stored or live ``feeds.events.Block`` in any order and keeps:

* a bounded buffer of the best chain (enough for the 4320-block window, the previous
  epoch's last block and a reorg margin) with *relative* chainwork (summed from bits,
  counted from the oldest block applied, which is all the windows need);
* one monotonic deque pair (min/max header time) per hashrate window;
* the fee sum and known-fee count over the last 144 blocks;
* per-UTC-day work buckets that outlive the buffer (for daily hashrate and ribbons).

Order problems, and the choices made for them:

* **Duplicate** (hash already held): ignored, except that a newly known fee fills an unknown
  one and the earliest first-seen time is kept.
* **Reorg** (a block at a held height with a new hash, or a block at tip+1 whose parent is
  not the tip): the chain is rewound below that height, orphaned blocks are dropped from
  every window and daily bucket, and the new branch is followed back through
  ``prev_hash`` as its blocks arrive. Until it links up, the newcomer waits as *pending*.
  Recently orphaned blocks are kept, so a branch that links back to them is restored.
* **Gap** (a block above tip+1): the block waits as pending and the window figures are
  ``None`` until the missing heights arrive (a gap filler can read ``missing_heights``):
  the state never pretends that a broken chain is contiguous. If the gap grows past what
  the buffer could ever bridge, the state restarts from the pending blocks.
* **Older history** (a block below the oldest held one): on a fresh database the websocket's
  newest blocks arrive before the REST backfill, which then delivers the older ones
  newest-first, pages possibly out of order. While the buffer has room, such a block is
  prepended when it is the parent of the oldest held block (``prev_hash``), else it waits
  below until the blocks between arrive. Relative chainwork simply counts down (only
  differences matter), so a prepend is O(1) per window. With the buffer full, older blocks
  are ignored: the windows would evict them at once.

After a rewind the deques and fee sums are rebuilt from the buffer (O(window)); reorgs are
rare, so appends stay amortised O(1).
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from feeds import derive
from feeds.events import Block

log = logging.getLogger(__name__)

DEFAULT_WINDOWS: tuple[int, ...] = tuple(derive.HASHRATE_WINDOWS.values())
FEE_WINDOW = 144
FEE_MIN_KNOWN = 72


class ApplyResult(enum.StrEnum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    REORG = "reorg"
    #: an older block joined the held chain below its oldest block
    PREPENDED = "prepended"
    PENDING = "pending"
    IGNORED = "ignored"
    RESET = "reset"


@dataclass(slots=True)
class ChainBlock:
    """One block of the held best chain (mutable only for fee/first-seen enrichment)."""

    height: int
    hash: str
    prev_hash: str | None
    time: int
    bits: int
    work: int
    #: relative chainwork up to and including this block
    cum_work: int
    fees_sats: int | None
    #: received_at for live blocks, header time for backfilled ones (earliest wins)
    first_seen: float
    source: str


@dataclass(frozen=True, slots=True)
class SeenBlock:
    """The newest block known at all (it may sit above a gap)."""

    height: int
    hash: str
    time: int
    bits: int
    first_seen: float


@dataclass(frozen=True, slots=True)
class EpochInfo:
    start_height: int
    #: observed intervals in this epoch, ``t - h0``
    k: int
    start_time: int | None
    difficulty: float
    previous_difficulty: float | None
    #: change at the most recent retarget (D(h0) vs D(h0-1)); None if h0-1 is not held
    last_change_pct: float | None


def first_seen_of(block: Block) -> float:
    """DOMAIN.md: live blocks count from receipt, backfilled/imported ones from header time."""
    return float(block.time) if block.backfill else block.received_at


class ChainState:
    def __init__(
        self,
        windows: Iterable[int] = DEFAULT_WINDOWS,
        *,
        reorg_margin: int = 144,
        max_pending: int = 4320,
        keep_days: int = 400,
        max_orphans: int = 2016,
    ) -> None:
        self.windows: tuple[int, ...] = tuple(sorted(set(windows)))
        # +1: a window of n intervals needs n+1 blocks. The previous epoch's last block
        # (h0-1) is always within 2016 of the tip, so the largest window covers it.
        self.capacity = max(max(self.windows) + 1, derive.EPOCH_BLOCKS + 1) + reorg_margin
        self.max_pending = max_pending
        self.keep_days = keep_days
        self.max_orphans = max_orphans
        self.reorgs = 0
        self.resets = 0
        self._clear()
        self._orphans: OrderedDict[str, tuple[Block, float]] = OrderedDict()

    def _clear(self) -> None:
        self._blocks: list[ChainBlock] = []
        self._start = 0  # index of the oldest held block (the list is compacted lazily)
        self._by_hash: dict[str, int] = {}
        self._pending: dict[int, tuple[Block, float]] = {}
        #: older blocks waiting for the heights between them and the oldest held block
        self._below: dict[int, tuple[Block, float]] = {}
        self._min_dq: dict[int, deque[tuple[int, int]]] = {n: deque() for n in self.windows}
        self._max_dq: dict[int, deque[tuple[int, int]]] = {n: deque() for n in self.windows}
        self._fee_sum = 0
        self._fee_known = 0
        self._day_work: dict[int, int] = {}
        self._day_count: dict[int, int] = {}
        self._origin_time: int | None = None

    # --- read side -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._blocks) - self._start

    @property
    def tip(self) -> ChainBlock | None:
        return self._blocks[-1] if len(self) else None

    @property
    def base_height(self) -> int | None:
        return self._blocks[self._start].height if len(self) else None

    def block_at(self, height: int) -> ChainBlock | None:
        if not len(self):
            return None
        i = self._start + height - self._blocks[self._start].height
        if self._start <= i < len(self._blocks):
            return self._blocks[i]
        return None

    def blocks(self) -> list[ChainBlock]:
        """The held chain, oldest first (a copy)."""
        return self._blocks[self._start :]

    def contains(self, block_hash: str) -> bool:
        return block_hash in self._by_hash

    @property
    def has_gap(self) -> bool:
        return bool(self._pending)

    def missing_heights(self) -> range | None:
        """Heights a gap filler should fetch so the pending blocks can link up."""
        if not self._pending:
            return None
        tip = self.tip
        lo = tip.height + 1 if tip else min(self._pending)
        return range(lo, max(self._pending))

    def latest_seen(self) -> SeenBlock | None:
        """Newest block known, pending ones included (the tip the network has reached)."""
        best: SeenBlock | None = None
        tip = self.tip
        if tip is not None:
            best = SeenBlock(tip.height, tip.hash, tip.time, tip.bits, tip.first_seen)
        if self._pending:
            h = max(self._pending)
            if best is None or h > best.height:
                b, seen = self._pending[h]
                best = SeenBlock(b.height, b.hash, b.time, b.bits, seen)
        return best

    def hashrate(self, n: int) -> float | None:
        """Core-compatible hashrate over the tip and its n ancestors; None if not all held."""
        tip = self.tip
        if tip is None or self._pending:
            return None
        base = self.block_at(tip.height - n)
        if base is None:
            return None
        if n in self._min_dq:
            lo, hi = self._min_dq[n][0][1], self._max_dq[n][0][1]
        else:  # a window nobody registered: fine, just not O(1)
            times = [b.time for b in self._blocks[-(n + 1) :]]
            lo, hi = min(times), max(times)
        return derive.network_hashps(tip.cum_work - base.cum_work, lo, hi)

    def window_times(self, n: int) -> tuple[int, int] | None:
        """(min, max) header time over the tip and its n ancestors, for registered windows."""
        tip = self.tip
        if tip is None or n not in self._min_dq or self.block_at(tip.height - n) is None:
            return None
        return self._min_dq[n][0][1], self._max_dq[n][0][1]

    def fees_known_144(self) -> tuple[int, int]:
        """(sum of known fees, number of blocks with known fees) over the last 144 blocks."""
        return self._fee_sum, self._fee_known

    def fees_avg_144(self, min_known: int = FEE_MIN_KNOWN) -> float | None:
        # Fees are a mean over the known ones, so a gap does not bias them (unlike hashrate).
        if self.tip is None or self._fee_known < min_known:
            return None
        return self._fee_sum / self._fee_known

    def epoch(self) -> EpochInfo | None:
        tip = self.tip
        if tip is None:
            return None
        h0 = tip.height - tip.height % derive.EPOCH_BLOCKS
        first, before = self.block_at(h0), self.block_at(h0 - 1)
        d = derive.difficulty_from_bits(tip.bits)
        d_prev = derive.difficulty_from_bits(before.bits) if before else None
        d_h0 = derive.difficulty_from_bits(first.bits) if first else None
        change = (
            derive.difficulty_change_pct(d_prev, d_h0)
            if d_prev is not None and d_h0 is not None
            else None
        )
        return EpochInfo(h0, tip.height - h0, first.time if first else None, d, d_prev, change)

    def projection(self) -> derive.EpochProjection | None:
        """DOMAIN.md's projection; early-epoch variant for k < 144 when history allows."""
        tip, ep = self.tip, self.epoch()
        if tip is None or ep is None or self._pending:
            return None
        w = derive.EARLY_EPOCH_WINDOW
        if ep.k < w:
            boundary, start = self.block_at(ep.start_height - 1), self.block_at(tip.height - w)
            if boundary is not None and start is not None and ep.previous_difficulty:
                ratio = ep.difficulty / ep.previous_difficulty
                return derive.project_epoch_early(
                    tip.height, tip.time, boundary.time, start.time, ratio, w
                )
        if ep.k >= 1 and ep.start_time is not None:
            # Also the fallback early in an epoch without enough history: honest, wider band.
            return derive.project_epoch(tip.height, tip.time, ep.start_time)
        return None

    def median_time_past(self) -> int | None:
        if not len(self):
            return None
        times = sorted(b.time for b in self._blocks[max(self._start, len(self._blocks) - 11) :])
        return times[len(times) // 2]

    def daily_hashrates(self, *, closed_only: bool = True) -> list[tuple[int, float]]:
        """``[(day, H/s)]`` oldest first: work of blocks timestamped that UTC day / 86400.

        A day is *closed* when no block can still land in it (median-time-past of the tip
        has passed its end: consensus forbids later blocks from dating before it) and it
        starts at least 2 h after the first block applied (older blocks we never saw may
        carry timestamps up to about 2 h after it: a heuristic, not a consensus bound).
        """
        if not self._day_work:
            return []
        mtp = self.median_time_past()
        out: list[tuple[int, float]] = []
        for day in sorted(self._day_work):
            if closed_only:
                if self._origin_time is None or mtp is None:
                    continue
                if day < self._origin_time + derive.MAX_FUTURE_BLOCK_TIME_S:
                    continue
                if mtp < day + derive.DAY_S - 1:
                    continue
            out.append((day, self._day_work[day] / derive.DAY_S))
        return out

    def day_block_count(self, day: int) -> int:
        return self._day_count.get(day, 0)

    # --- write side ------------------------------------------------------------------------

    def apply_many(self, blocks: Iterable[Block]) -> None:
        for b in blocks:
            self.apply(b)

    def apply(self, block: Block) -> ApplyResult:
        seen = first_seen_of(block)
        held = self._by_hash.get(block.hash)
        if held is not None:
            self._enrich(held, block, seen)
            return ApplyResult.DUPLICATE
        pend = self._pending.get(block.height)
        if pend is not None and pend[0].hash == block.hash:
            return ApplyResult.DUPLICATE
        tip = self.tip
        if tip is None:
            self._append(block, seen)
            self._drain()
            self._drain_below()
            return ApplyResult.APPENDED
        base = self._blocks[self._start].height
        if block.height < base:
            return self._apply_below(block, seen)
        result = ApplyResult.APPENDED
        if block.height <= tip.height:
            # Same height, new hash: everything from that height up is orphaned.
            log.info("chain: reorg at height %s (new hash %s)", block.height, block.hash)
            self._rewind_to(block.height - 1)
            self.reorgs += 1
            result = ApplyResult.REORG
            if self.tip is None:
                self._append(block, seen)
                self._drain()
                self._drain_below()
                return result
        tip = self.tip
        assert tip is not None  # rewinds above leave at least one block
        if block.height > tip.height + 1:
            return self._add_pending(block, seen)
        if self._extends(tip, block):
            self._append(block, seen)
            self._drain()
            return result
        # Height tip+1 but another parent: a branch we have not seen yet replaces our tip.
        if self._resurrect(block.prev_hash):
            return self.apply(block)
        log.info("chain: block %s does not build on tip %s, rewinding", block.height, tip.hash)
        self._rewind_to(tip.height - 1)
        self.reorgs += 1
        self._pending[block.height] = (block, seen)
        return ApplyResult.REORG

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _extends(tip: ChainBlock, block: Block) -> bool:
        # Some sources do not send the parent hash: trust height continuity then.
        return block.prev_hash is None or block.prev_hash == tip.hash

    def _enrich(self, height: int, block: Block, seen: float) -> None:
        held = self.block_at(height)
        if held is None:
            return
        held.first_seen = min(held.first_seen, seen)
        if held.fees_sats is None and block.fees_sats is not None:
            held.fees_sats = block.fees_sats
            tip = self.tip
            if tip is not None and height > tip.height - FEE_WINDOW:
                self._fee_sum += block.fees_sats
                self._fee_known += 1

    def _apply_below(self, block: Block, seen: float) -> ApplyResult:
        """A block older than the oldest held one (backfill after live blocks): prepend it,
        or keep it until the heights between arrive, while the buffer has room for it."""
        base = self._blocks[self._start].height
        if base - block.height > self.capacity - len(self):
            log.debug("chain: block %s below held history (%s), ignored", block.height, base)
            return ApplyResult.IGNORED
        held = self._below.get(block.height)
        if held is not None and held[0].hash == block.hash:
            return ApplyResult.DUPLICATE
        self._below[block.height] = (block, seen)
        if self._drain_below():
            return ApplyResult.PREPENDED
        return ApplyResult.PENDING

    def _drain_below(self) -> bool:
        """Prepend waiting older blocks that are the parent of the oldest held block; drop
        ones that cannot be (a stale branch's block, or no room left). True if any joined."""
        joined = False
        while self._below and len(self):
            oldest = self._blocks[self._start]
            for h in [h for h in self._below if h >= oldest.height]:
                del self._below[h]
            nxt = self._below.pop(oldest.height - 1, None)
            if nxt is None:
                break
            block, seen = nxt
            if len(self) >= self.capacity:
                self._below.clear()
                break
            if oldest.prev_hash is not None and oldest.prev_hash != block.hash:
                log.debug("chain: %s is not the parent of %s, dropped", block.hash, oldest.hash)
                continue
            self._prepend(block, seen)
            joined = True
        return joined

    def _prepend(self, block: Block, seen: float) -> None:
        oldest = self._blocks[self._start]
        tip = self._blocks[-1]
        work = derive.block_work(block.bits)
        cb = ChainBlock(
            height=block.height,
            hash=block.hash,
            prev_hash=block.prev_hash,
            time=block.time,
            bits=block.bits,
            work=work,
            # relative chainwork counts down from the old base: differences stay exact
            cum_work=oldest.cum_work - oldest.work,
            fees_sats=block.fees_sats,
            first_seen=seen,
            source=block.source,
        )
        if self._start == 0:
            # Room to grow downwards without shifting the list per block (amortised O(1)).
            pad = max(16, len(self._blocks))
            self._blocks[:0] = [cb] * pad
            self._start = pad
        self._start -= 1
        self._blocks[self._start] = cb
        self._by_hash[cb.hash] = cb.height
        # The oldest block is where counting starts (closed-day heuristic).
        self._origin_time = cb.time
        h, t = cb.height, cb.time
        for n in self.windows:
            if h < tip.height - n:
                continue
            # The new block is the earliest of the window: it stays in a monotonic deque only
            # if no later block ties or beats it, i.e. it beats the current extreme.
            mn, mx = self._min_dq[n], self._max_dq[n]
            if not mn or t < mn[0][1]:
                mn.appendleft((h, t))
            if not mx or t > mx[0][1]:
                mx.appendleft((h, t))
        if cb.fees_sats is not None and h > tip.height - FEE_WINDOW:
            self._fee_sum += cb.fees_sats
            self._fee_known += 1
        self._add_day(cb, +1)

    def _add_pending(self, block: Block, seen: float) -> ApplyResult:
        self._pending[block.height] = (block, seen)
        tip = self.tip
        too_far = tip is not None and block.height - tip.height > self.capacity
        if len(self._pending) > self.max_pending or too_far:
            self._reset_from_pending()
            return ApplyResult.RESET
        return ApplyResult.PENDING

    def _reset_from_pending(self) -> None:
        pending = sorted(self._pending.values(), key=lambda p: p[0].height)
        log.warning("chain: gap too large to bridge, restarting at height %s", pending[0][0].height)
        self.resets += 1
        self._clear()
        b, seen = pending[0]
        self._append(b, seen)
        self._pending = {p[0].height: p for p in pending[1:]}
        self._drain()

    def _drain(self) -> None:
        """Apply pending blocks that now follow the tip; drop ones the tip has passed."""
        while self._pending:
            tip = self.tip
            assert tip is not None
            for h in [h for h in self._pending if h <= tip.height]:
                del self._pending[h]
            nxt = self._pending.get(tip.height + 1)
            if nxt is None:
                return
            block, seen = nxt
            if self._extends(tip, block):
                del self._pending[block.height]
                self._append(block, seen)
            elif self._resurrect(block.prev_hash):
                continue
            else:
                return  # waiting for the branch's missing ancestors

    def _resurrect(self, block_hash: str | None) -> bool:
        """Restore recently orphaned blocks if ``block_hash`` leads back to the held chain.

        Walks the orphans down from ``block_hash`` to a block whose parent is held (the fork
        point), rewinds to it and re-applies the orphaned branch.
        """
        if block_hash is None or not len(self):
            return False
        branch: list[tuple[Block, float]] = []
        h: str | None = block_hash
        while h is not None and h in self._orphans and len(branch) <= self.max_orphans:
            b, seen = self._orphans[h]
            branch.append((b, seen))
            parent = b.prev_hash
            if parent is not None and self._by_hash.get(parent) == b.height - 1:
                self._rewind_to(b.height - 1)
                self.reorgs += 1
                for ob, oseen in reversed(branch):
                    self._orphans.pop(ob.hash, None)
                    self._append(ob, oseen)
                return True
            h = parent
        return False

    def _append(self, block: Block, seen: float) -> None:
        tip = self.tip
        work = derive.block_work(block.bits)
        cum = (tip.cum_work if tip else 0) + work
        cb = ChainBlock(
            height=block.height,
            hash=block.hash,
            prev_hash=block.prev_hash,
            time=block.time,
            bits=block.bits,
            work=work,
            cum_work=cum,
            fees_sats=block.fees_sats,
            first_seen=seen,
            source=block.source,
        )
        self._blocks.append(cb)
        self._by_hash[cb.hash] = cb.height
        if self._origin_time is None:
            self._origin_time = cb.time
        h, t = cb.height, cb.time
        for n in self.windows:
            mn, mx = self._min_dq[n], self._max_dq[n]
            while mn and mn[-1][1] >= t:
                mn.pop()
            mn.append((h, t))
            while mn[0][0] < h - n:
                mn.popleft()
            while mx and mx[-1][1] <= t:
                mx.pop()
            mx.append((h, t))
            while mx[0][0] < h - n:
                mx.popleft()
        if cb.fees_sats is not None:
            self._fee_sum += cb.fees_sats
            self._fee_known += 1
        leaving = self.block_at(h - FEE_WINDOW)
        if leaving is not None and leaving.fees_sats is not None:
            self._fee_sum -= leaving.fees_sats
            self._fee_known -= 1
        self._add_day(cb, +1)
        self._evict()

    def _add_day(self, cb: ChainBlock, sign: int) -> None:
        day = derive.utc_day(cb.time)
        if sign > 0 and day not in self._day_work:
            self._day_work[day] = 0
            self._day_count[day] = 0
            cutoff = day - self.keep_days * derive.DAY_S
            if len(self._day_work) > self.keep_days:
                for d in [d for d in self._day_work if d < cutoff]:
                    del self._day_work[d], self._day_count[d]
        if day not in self._day_work:
            return
        self._day_work[day] += sign * cb.work
        self._day_count[day] += sign
        if self._day_count[day] == 0:
            del self._day_work[day], self._day_count[day]

    def _evict(self) -> None:
        if len(self) <= self.capacity:
            return
        old = self._blocks[self._start]
        self._by_hash.pop(old.hash, None)
        self._start += 1
        if self._start >= self.capacity:  # compact: amortised O(1) per block
            del self._blocks[: self._start]
            self._start = 0

    def _rewind_to(self, height: int) -> None:
        """Drop every held block above ``height`` (orphaned), then rebuild the windows."""
        while len(self) and self._blocks[-1].height > height:
            cb = self._blocks.pop()
            self._by_hash.pop(cb.hash, None)
            self._add_day(cb, -1)
            blk = Block(
                height=cb.height,
                hash=cb.hash,
                prev_hash=cb.prev_hash,
                time=cb.time,
                bits=cb.bits,
                source=cb.source,
                received_at=cb.first_seen,
                fees_sats=cb.fees_sats,
            )
            self._orphans[cb.hash] = (blk, cb.first_seen)
            while len(self._orphans) > self.max_orphans:
                self._orphans.popitem(last=False)
        if len(self._blocks) == self._start:
            self._blocks, self._start = [], 0
        self._rebuild_windows()

    def _rebuild_windows(self) -> None:
        held = self._blocks[self._start :]
        for n in self.windows:
            mn, mx = deque[tuple[int, int]](), deque[tuple[int, int]]()
            for b in held[-(n + 1) :]:
                while mn and mn[-1][1] >= b.time:
                    mn.pop()
                mn.append((b.height, b.time))
                while mx and mx[-1][1] <= b.time:
                    mx.pop()
                mx.append((b.height, b.time))
            self._min_dq[n], self._max_dq[n] = mn, mx
        fees = [b.fees_sats for b in held[-FEE_WINDOW:] if b.fees_sats is not None]
        self._fee_sum, self._fee_known = sum(fees), len(fees)
