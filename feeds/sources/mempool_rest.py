"""mempool.space REST: block backfill, gap fill, tip checks and a year of daily history.

Endpoints (base ``https://mempool.space/api``; PROTOCOLS.md §1.2):

* ``GET /blocks/tip/height`` -> **text/plain** integer;
* ``GET /v1/blocks/:h`` -> 15 BlockExtended, newest first, ending at ``h``;
* ``GET /v1/mining/hashrate/1y`` -> ``{hashrates:[{timestamp, avgHashrate}],
  difficulty:[{time, height, difficulty, adjustment}], ...}``; a hashrate ``timestamp`` is the
  midnight that *ends* its day; difficulty items use ``time`` (the docs wrongly say
  ``timestamp``) and ``adjustment`` is a ratio;
* ``GET /v1/historical-price?currency=USD`` -> ``{prices:[{time, USD, ...}], exchangeRates}``.

Politeness: every request goes through one :class:`PoliteHttp` (at most 2 in flight, 429 and
``Retry-After`` honoured, bounded retries), and the caller never runs two operations of this
class at once (the runtime drives backfill, then tip checks, sequentially).

Which heights to fetch comes from the store (``missing_heights``), so a restart fetches only
what is missing and a height is requested once per run. Heights whose page failed are
remembered and retried by the next gap fill. Blocks are published as ``Block(backfill=True)``;
reorgs are the websocket's ``blocks`` re-send plus the store's reorg rule.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from feeds.bus import Bus
from feeds.errors import FatalFeedError, FeedError
from feeds.events import BackfillProgress, Block, DailyPoint
from feeds.http import PoliteHttp
from feeds.sources.mempool_ws import SOURCE, parse_blocks
from feeds.transport import BadFrame

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://mempool.space/api"
#: Blocks per ``/v1/blocks/:h`` page (fixed upstream).
PAGE_SIZE = 15
DEFAULT_BACKFILL_BLOCKS = 5330
DAY = 86_400
HISTORY_DAYS = 365
#: A failed history download is retried by ``check_tip`` at most this often.
HISTORY_RETRY_S = 3600.0


# --- pure parsers (raise only BadFrame) -----------------------------------------------------


def parse_tip_height(text: object) -> int:
    """``/blocks/tip/height`` is text/plain, e.g. ``"890448"``."""
    if type(text) is not str:
        raise BadFrame(f"tip height is {type(text).__name__}, not text")
    s = text.strip()
    if not s.isascii() or not s.isdigit() or len(s) > 9:
        raise BadFrame(f"tip height {s[:20]!r} is not a block height")
    return int(s)


def _finite(v: object) -> float | None:
    if (type(v) is int or type(v) is float) and math.isfinite(v):
        return float(v)
    return None


def parse_hashrate(obj: object, received_at: float) -> list[DailyPoint]:
    """``/v1/mining/hashrate/:interval`` -> one ``DailyPoint`` per UTC day.

    ``day`` is the day's own 00:00 UTC, i.e. one day before the ``timestamp`` mempool stamps
    it with. ``difficulty`` is the difficulty in effect at the end of that day (the latest
    adjustment with ``time`` before the day's end), None before the first one listed.
    Malformed items are skipped; a malformed document raises ``BadFrame``.
    """
    if type(obj) is not dict:
        raise BadFrame(f"hashrate document is {type(obj).__name__}, not an object")
    rates = obj.get("hashrates")
    diffs = obj.get("difficulty", [])
    if type(rates) is not list or type(diffs) is not list:
        raise BadFrame("hashrate document lacks the hashrates/difficulty lists")
    adjustments: list[tuple[float, float]] = []
    for item in diffs:
        if type(item) is not dict:
            continue
        # Real backend: ``time``. The docs example says ``timestamp``; accept it only as a
        # fallback, never in preference.
        t = _finite(item["time"] if "time" in item else item.get("timestamp"))
        d = _finite(item.get("difficulty"))
        if t is not None and d is not None and d > 0:
            adjustments.append((t, d))
    adjustments.sort()
    times = [t for t, _ in adjustments]
    by_day: dict[int, DailyPoint] = {}
    for item in rates:
        if type(item) is not dict:
            continue
        ts = _finite(item.get("timestamp"))
        hs = _finite(item.get("avgHashrate"))
        if ts is None or hs is None or hs < 0 or not 0 < ts < 1e11:
            continue
        day_end = int(ts) // DAY * DAY
        i = bisect.bisect_left(times, day_end)  # adjustments strictly before the day's end
        difficulty = adjustments[i - 1][1] if i > 0 else None
        by_day[day_end - DAY] = DailyPoint(
            source=SOURCE,
            day=day_end - DAY,
            received_at=received_at,
            hashrate_hs=hs,
            difficulty=difficulty,
        )
    return [by_day[d] for d in sorted(by_day)]


def parse_historical_prices(obj: object, currency: str = "USD") -> dict[int, float]:
    """``/v1/historical-price`` -> {day 00:00 UTC: price}, the latest sample of each day.

    Prices <= 0 (mempool's -1: unavailable) and malformed items are skipped.
    """
    if type(obj) is not dict:
        raise BadFrame(f"price document is {type(obj).__name__}, not an object")
    prices = obj.get("prices")
    if type(prices) is not list:
        raise BadFrame("price document lacks the prices list")
    latest: dict[int, tuple[float, float]] = {}
    for item in prices:
        if type(item) is not dict:
            continue
        t = _finite(item.get("time"))
        p = _finite(item.get(currency))
        if t is None or p is None or p <= 0 or not 0 < t < 1e11:
            continue
        day = int(t) // DAY * DAY
        if day not in latest or t >= latest[day][0]:
            latest[day] = (t, p)
    return {day: p for day, (_, p) in sorted(latest.items())}


def plan_pages(heights: list[int] | set[int]) -> list[tuple[int, set[int]]]:
    """Cover ``heights`` with ``/v1/blocks/:h`` pages, newest first, no page overlapping
    another: each returned (end height, heights wanted from that page)."""
    todo = sorted(set(heights), reverse=True)
    pages: list[tuple[int, set[int]]] = []
    i = 0
    while i < len(todo):
        top = todo[i]
        want: set[int] = set()
        while i < len(todo) and todo[i] > top - PAGE_SIZE:
            want.add(todo[i])
            i += 1
        pages.append((top, want))
    return pages


# --- the source -------------------------------------------------------------------------------


class MempoolRest:
    """Backfill, gap fill, tip check and daily history from mempool.space's REST API.

    ``store_tip()`` gives the stored (non-orphaned) tip height or None; ``missing_heights(lo,
    hi)`` the heights in [lo, hi] the store lacks. Both read the database, so the caller
    flushes the writer before calling ``backfill``/``check_tip``.
    """

    name = SOURCE

    def __init__(
        self,
        rest_url: str,
        bus: Bus,
        *,
        store_tip: Callable[[], int | None],
        missing_heights: Callable[[int, int], list[int]],
        http: PoliteHttp | None = None,
        clock: Callable[[], float] = time.time,
        window: int = DEFAULT_BACKFILL_BLOCKS,
        history_days: int = HISTORY_DAYS,
    ) -> None:
        self.bus = bus
        self.http = http or PoliteHttp("mempool-rest", rest_url or DEFAULT_REST_URL)
        self.clock = clock
        self._store_tip = store_tip
        self._missing_heights = missing_heights
        self.window = window
        self.history_days = history_days
        #: every height up to here is known to be stored or published (None: not yet known)
        self.contiguous_through: int | None = None
        #: heights whose page failed; retried by the next gap fill
        self.failed: set[int] = set()
        self.live_tip: int | None = None
        self._history_ok = False
        self._history_tried_at: float | None = None
        #: counters for status and tests
        self.blocks_published = 0
        self.pages_fetched = 0

    async def close(self) -> None:
        await self.http.close()

    # -- tip --

    async def tip_height(self) -> int:
        text = await self.http.get_text("/blocks/tip/height")
        try:
            height = parse_tip_height(text)
        except BadFrame as exc:
            raise FeedError(f"mempool: bad tip height: {exc}") from None
        self.live_tip = height
        return height

    async def check_tip(self) -> int:
        """Ask the live tip height; fill the gap if the store is behind. Returns the tip.

        This is how block-feed completeness is judged: by height, not by minutes without a
        block (blocks can legitimately be an hour apart).
        """
        tip = await self.tip_height()
        stored = self._store_tip()
        behind = (
            stored is None
            or stored < tip
            or self.contiguous_through is None
            or self.contiguous_through < tip
            or bool(self.failed)
        )
        if behind:
            await self.gap_fill(tip)
        if not self._history_ok and (
            self._history_tried_at is None
            or self.clock() - self._history_tried_at >= HISTORY_RETRY_S
        ):
            await self.backfill_history()
        return tip

    # -- blocks --

    async def backfill(self, n: int = DEFAULT_BACKFILL_BLOCKS) -> int:
        """Make sure the last ``n`` blocks are stored: fetch only the missing ones.

        Publishes ``BackfillProgress(what="blocks")`` and returns how many blocks it published.
        """
        self.window = n
        tip = await self.tip_height()
        lo = max(0, tip - n + 1)
        wanted = set(self._missing_heights(lo, tip))
        log.info("mempool: backfill of heights %d..%d: %d missing of %d", lo, tip, len(wanted), n)
        published = await self._fetch(wanted, what="blocks")
        self._advance(tip)
        return published

    async def gap_fill(self, live_tip_height: int) -> int:
        """Fetch every height missing between what we know is complete and ``live_tip_height``
        (plus heights that failed earlier). Returns how many blocks it published."""
        live = live_tip_height
        if self.contiguous_through is not None:
            lo = self.contiguous_through + 1
        else:
            stored = self._store_tip()
            lo = stored + 1 if stored is not None else live - self.window + 1
        lo = max(0, lo, live - self.window + 1)
        wanted = set(self._missing_heights(lo, live)) if lo <= live else set()
        retry = {h for h in self.failed if h > live - self.window}
        wanted |= retry
        self.failed -= retry
        if wanted:
            log.info(
                "mempool: gap fill up to %d: %d heights missing (from %d)", live, len(wanted), lo
            )
        published = await self._fetch(wanted, what="gap") if wanted else 0
        self._advance(live)
        return published

    def _advance(self, tip: int) -> None:
        if self.failed:
            self.contiguous_through = min(self.failed) - 1
        elif self.contiguous_through is None or tip > self.contiguous_through:
            self.contiguous_through = tip

    async def _fetch(self, wanted: set[int], *, what: str) -> int:
        """Fetch the pages covering ``wanted`` with at most ``http.max_in_flight`` workers."""
        total = len(wanted)
        done = 0
        published = 0
        fatal: list[FatalFeedError] = []
        pages = deque(plan_pages(wanted))
        self._progress(what, 0, total)

        async def worker() -> None:
            nonlocal done, published
            while pages and not fatal:
                top, want = pages.popleft()
                try:
                    blocks = await self._page(top)
                except FatalFeedError as exc:
                    fatal.append(exc)
                    self.failed |= want
                    return
                except FeedError as exc:
                    log.warning("mempool: page ending at %d failed: %s", top, exc)
                    self.failed |= want
                    continue
                got: set[int] = set()
                for block in blocks:
                    if block.height in want and block.height not in got:
                        got.add(block.height)
                        self.bus.publish(block)
                published += len(got)
                lost = want - got
                if lost:
                    # The upstream does not have them (yet): try again at the next gap fill.
                    log.warning("mempool: page ending at %d lacked %d heights", top, len(lost))
                    self.failed |= lost
                done += len(want)
                self._progress(what, done, total)

        workers = max(1, min(self.http.max_in_flight, len(pages)))
        async with asyncio.TaskGroup() as tg:
            for i in range(workers):
                tg.create_task(worker(), name=f"mempool-rest-{what}-{i}")
        # Pages not started because of a fatal error count as failed too.
        for _, want in pages:
            self.failed |= want
        self.blocks_published += published
        self._progress(what, done, total)
        if fatal:
            raise fatal[0]
        return published

    async def _page(self, top: int) -> list[Block]:
        data = await self.http.get_json(f"/v1/blocks/{top}")
        self.pages_fetched += 1
        try:
            return parse_blocks(data, self.clock(), backfill=True)
        except BadFrame as exc:
            raise FeedError(f"mempool: bad /v1/blocks/{top} page: {exc}") from None

    def _progress(self, what: str, done: int, total: int) -> None:
        if total:
            self.bus.publish(
                BackfillProgress(
                    source=SOURCE, what=what, done=done, total=total, received_at=self.clock()
                )
            )

    # -- daily history --

    async def backfill_history(self) -> int:
        """A year of daily hashrate, difficulty and USD price as ``DailyPoint`` events, one
        per day with every field known for it. Returns how many were published; a failed
        download is logged and retried later by ``check_tip``."""
        self._history_tried_at = self.clock()
        now = self.clock()
        first_day = (int(now) // DAY - self.history_days) * DAY
        rates: list[DailyPoint] = []
        prices: dict[int, float] = {}
        ok = True
        try:
            doc = await self.http.get_json("/v1/mining/hashrate/1y")
            rates = parse_hashrate(doc, self.clock())
        except BadFrame as exc:
            ok = False
            log.warning("mempool: bad hashrate history: %s", exc)
        except FatalFeedError:
            raise
        except FeedError as exc:
            ok = False
            log.warning("mempool: hashrate history unavailable: %s", exc)
        try:
            doc = await self.http.get_json("/v1/historical-price", params={"currency": "USD"})
            prices = parse_historical_prices(doc, "USD")
        except BadFrame as exc:
            ok = False
            log.warning("mempool: bad price history: %s", exc)
        except FatalFeedError:
            raise
        except FeedError as exc:
            ok = False
            log.warning("mempool: price history unavailable: %s", exc)

        received_at = self.clock()
        points: dict[int, DailyPoint] = {p.day: p for p in rates if p.day >= first_day}
        for day, price in prices.items():
            if day < first_day:
                continue
            p = points.get(day)
            points[day] = DailyPoint(
                source=SOURCE,
                day=day,
                received_at=p.received_at if p else received_at,
                hashrate_hs=p.hashrate_hs if p else None,
                difficulty=p.difficulty if p else None,
                price_usd=price,
            )
        for day in sorted(points):
            self.bus.publish(points[day])
        self._history_ok = ok
        log.info("mempool: %d days of history published", len(points))
        return len(points)


__all__ = [
    "DEFAULT_REST_URL",
    "MempoolRest",
    "parse_hashrate",
    "parse_historical_prices",
    "parse_tip_height",
    "plan_pages",
]
