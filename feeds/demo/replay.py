"""``hashwatch demo``: replay real block headers through local stand-ins of the upstreams.

The collector runs unchanged, with the real adapters, against local servers on 127.0.0.1
(:class:`~feeds.demo.mempool_server.MempoolDemoServer` for blocks/history, one
:class:`~feeds.demo.exchange_server.ExchangeServer` per exchange for prices). Everything it
sees happens on the *replay clock* (:attr:`DemoReplay.clock`): data time mapped linearly onto
the wall clock, ``data0 + (monotonic() - mono0) * speed``, and the collector is given that
clock, so ages, freshness and block gaps behave as they would live, in replay time.

Plan (see ``feeds/data/SOURCES.md`` for what is real, derived and synthetic):

* Real headers of heights 937,440..942,199 (Feb..Mar 2026): times (CC0) and bits (Electrum,
  MIT). By default the first :data:`PREMINED_BLOCKS` are already "mined" when the servers
  start, so the collector's REST backfill finds about 3,500 blocks: the 1d/3d/7d windows
  have values and the 30d window is honestly null until the replay has added enough. The
  replay then crosses the real retarget at 941,472.
* Each later block is pushed (websocket ``block`` + REST chain) when the replay clock passes
  its header time. When the real data runs out, synthetic blocks continue forever.
* Prices tick at a realistic *wall* rate (about 3 per second per exchange), stamped with the
  replay clock; mempool ``conversions`` about once per replay hour.
* Daily history for ``/v1/mining/hashrate/1y``: implied hashrate ``D * 2**32 / 600`` from
  the retarget history (derived); ``/v1/historical-price``: the synthetic walk (synthetic).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import itertools
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feeds.demo import synth
from feeds.demo.exchange_server import ExchangeServer
from feeds.demo.mempool_server import Chain, MempoolDemoServer
from feeds.demo.synth import HeaderSpec
from feeds.derive import TARGET_SPACING_S, TARGET_TIMESPAN_S, bits_to_target, implied_hashrate

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BLOCKS_CSV = DATA_DIR / "blocks_937440_942199.csv"
RETARGETS_CSV = DATA_DIR / "retargets.csv"

#: Blocks already mined when the servers start (backfill finds them): > 1,008 + 1 for the
#: 7d window, < 4,320 + 1 so the 30d window is null until the replay adds the rest.
PREMINED_BLOCKS = 3_500
#: Days of daily history served (mempool's ``1y``).
HISTORY_DAYS = 365
#: Mean wall seconds between two price ticks of one exchange: about 3 per second, faster at
#: high speed so that one exchange's ticks are at most ~20 *replay* seconds apart (a feed's
#: age is judged on the replay clock, where 1/3 s of wall time at 600x is 200 s of silence),
#: but never more than 40 per wall second.
TICK_INTERVAL_S = 1 / 3
TICK_REPLAY_SPACING_S = 20.0
TICK_MIN_INTERVAL_S = 1 / 40
#: mempool pushes ``conversions`` about hourly (replay time), bounded in wall seconds.
CONVERSIONS_EVERY_S = 3_600.0
CONVERSIONS_WALL_BOUNDS_S = (2.0, 600.0)
#: mempool ``stats`` (``da``) pushes, wall seconds: what keeps the mempool feed fresh.
STATS_INTERVAL_S = 5.0
#: Freshness windows judged on the replay clock are widened to this many *wall* seconds:
#: ticks arrive ~3/s in wall time, which at 600x is one every ~200 replay seconds.
PRICE_FRESH_WALL_S = 10.0
#: A few ms of loopback latency is seconds of replay time; do not call that clock skew.
CLOCK_OFFSET_WALL_S = 0.5
#: Seconds after the premined tip's header time at which the replay clock starts.
START_AFTER_TIP_S = 30
PRICE_SOURCES = ("coinbase", "kraken", "bitstamp")
DAY_S = 86_400


# --- the data files -----------------------------------------------------------------------


def load_headers(path: Path = BLOCKS_CSV) -> list[HeaderSpec]:
    """The real headers, with deterministic synthetic hashes (the two real hashes the file
    has are kept) and prev links."""
    out: list[HeaderSpec] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            height, t, bits = int(row["height"]), int(row["time"]), int(row["bits"], 16)
            prev = out[-1].hash if out else synth.fake_hash(height - 1, 0, 0)
            real_hash = (row.get("block_hash") or "").strip().lower()
            out.append(
                HeaderSpec(height, t, bits, real_hash or synth.fake_hash(height, t, bits), prev)
            )
    for a, b in itertools.pairwise(out):
        if b.height != a.height + 1:
            raise ValueError(f"{path.name}: heights not contiguous at {a.height}")
    return out


@dataclass(frozen=True, slots=True)
class Period:
    """One retarget period of ``retargets.csv`` (``first_time`` None when unknown)."""

    period: int
    first_height: int
    bits: int
    difficulty: float
    first_time: int | None


def load_retargets(path: Path = RETARGETS_CSV) -> list[Period]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            Period(
                int(row["period"]),
                int(row["first_height"]),
                int(row["bits"], 16),
                float(row["difficulty"]),
                int(row["first_block_time"]) if row["first_block_time"] else None,
            )
            for row in csv.DictReader(fh)
        ]


def period_start_times(periods: Sequence[Period]) -> dict[int, float]:
    """First-block time of every period up to the last one whose time is known (derived).

    ``retargets.csv`` has no first-block time for periods 437..464. Each period's timespan
    follows from the next difficulty (consensus: ``T_next = T * span / 1209600``, unclamped
    here), and the next period starts about one block interval after the last block; the
    small residual against the next known time is spread linearly over the gap.
    """
    by_p = {p.period: p for p in periods}
    known = sorted(p.period for p in periods if p.first_time is not None)
    out: dict[int, float] = {p: float(by_p[p].first_time or 0) for p in known}
    for a, b in itertools.pairwise(known):
        if b - a < 2:
            continue
        est = [float(out[a])]
        for i in range(a, b):
            ratio = bits_to_target(by_p[i + 1].bits) / bits_to_target(by_p[i].bits)
            est.append(est[-1] + TARGET_TIMESPAN_S * ratio + TARGET_SPACING_S)
        residual = out[b] - est[-1]
        for k in range(1, b - a):
            out[a + k] = est[k] + residual * k / (b - a)
    return dict(sorted(out.items()))


def hashrate_history(periods: Sequence[Period], first_day: int, last_day: int) -> dict[str, Any]:
    """mempool's ``/v1/mining/hashrate/1y`` document for the days ``first_day..last_day``
    (00:00 UTC epochs, inclusive): each day's implied hashrate ``D * 2**32 / 600``,
    time-weighted over the difficulties in effect that day (derived, not measured)."""
    starts = period_start_times(periods)
    by_p = {p.period: p for p in periods}
    day_end = last_day + DAY_S
    steps = [(t, by_p[p].difficulty, p) for p, t in starts.items() if t < day_end]
    hashrates = []
    for day in range(first_day, last_day + 1, DAY_S):
        total = 0.0
        for i, (t, d, _) in enumerate(steps):
            lo = max(t, day)
            hi = min(steps[i + 1][0] if i + 1 < len(steps) else day + DAY_S, day + DAY_S)
            if hi > lo:
                total += d * (hi - lo)
        if total:
            # mempool stamps a day with the midnight that ends it
            hashrates.append(
                {"timestamp": day + DAY_S, "avgHashrate": implied_hashrate(total / DAY_S)}
            )
    difficulty = []
    for i, (t, d, p) in enumerate(steps):
        if i + 1 < len(steps) and steps[i + 1][0] <= first_day:
            continue  # entirely before the window (keep the one in effect at its start)
        prev = by_p.get(p - 1)
        difficulty.append(
            {
                "time": int(t),
                "height": by_p[p].first_height,
                "difficulty": d,
                "adjustment": round(d / prev.difficulty, 6) if prev else 1.0,
            }
        )
    current = steps[-1][1] if steps else 0.0
    return {
        "hashrates": hashrates,
        "difficulty": difficulty,
        "currentHashrate": hashrates[-1]["avgHashrate"] if hashrates else 0,
        "currentDifficulty": current,
    }


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


# --- the replay ---------------------------------------------------------------------------


class DemoReplay:
    """Local servers plus the driver that replays history into them (see module doc).

    Call order: ``configure(config)`` (sync) -> ``await start(config)`` -> ``await run()``
    (until cancelled) -> ``await stop()`` -> ``cleanup()``.
    """

    def __init__(
        self,
        speed: float = 600.0,
        db_path: Path | None = None,
        *,
        seed: int = 7,
        start_height: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"demo speed must be positive, not {speed!r}")
        self.speed = float(speed)
        self.seed = seed
        self._db_path = Path(db_path) if db_path is not None else None
        self._monotonic = monotonic
        self.headers = load_headers()
        first, last = self.headers[0].height, self.headers[-1].height
        if start_height is None:
            start_height = first + PREMINED_BLOCKS
        if not first < start_height <= last + 1:
            raise ValueError(f"demo start height must be in {first + 1}..{last + 1}")
        self.start_height = start_height
        self.premined = start_height - first
        recent = self.headers[max(0, self.premined - 11) : self.premined]
        #: replay time at which the replay clock starts (just after the premined tip)
        self.data0 = float(max(h.time for h in recent) + START_AFTER_TIP_S)
        self._mono0: float | None = None
        self.label = (
            f"REPLAY of {_day(self.headers[0].time)}..{_day(self.headers[-1].time)} "
            f"at {self.speed:g}x (prices, fees, pools synthetic)"
        )
        self._tmpdir: Path | None = None
        self.mempool: MempoolDemoServer | None = None
        self.exchanges: dict[str, ExchangeServer] = {}
        self.walk = synth.PriceWalk(seed, self.data0)
        #: counters for logs and tests
        self.blocks_pushed = 0
        self.ticks_pushed = 0
        self.last_pushed: HeaderSpec | None = None

    # ----------------------------------------------------------------- clock
    def clock(self) -> float:
        """Replay time: ``data0`` until :meth:`start`, then ``data0 + elapsed * speed``."""
        if self._mono0 is None:
            return self.data0
        return self.data0 + (self._monotonic() - self._mono0) * self.speed

    @property
    def tick_interval_s(self) -> float:
        """Mean wall seconds between two ticks of one exchange (see TICK_REPLAY_SPACING_S)."""
        return max(TICK_MIN_INTERVAL_S, min(TICK_INTERVAL_S, TICK_REPLAY_SPACING_S / self.speed))

    def _wall_delay(self, replay_time: float) -> float:
        return max(0.0, (replay_time - self.clock()) / self.speed)

    # ----------------------------------------------------------------- config
    def configure(self, config: Any) -> Any:
        """A copy of ``config`` whose database is a fresh temp file (or ``db_path``): never
        the operator's database. Freshness windows judged on the replay clock are widened
        to a few wall seconds (see :data:`PRICE_FRESH_WALL_S`), and the block backfill asks
        for no more than the server holds."""
        if self._db_path is not None:
            path = self._db_path
        else:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="hashwatch-demo-"))
            path = self._tmpdir / "demo.db"
        feeds = config.feeds
        feeds = dataclasses.replace(
            feeds,
            price_fresh_after=max(feeds.price_fresh_after, self.speed * PRICE_FRESH_WALL_S),
            clock_offset_warn=max(feeds.clock_offset_warn, self.speed * CLOCK_OFFSET_WALL_S),
            backfill_blocks=min(feeds.backfill_blocks, self.premined),
        )
        return dataclasses.replace(
            config,
            database=dataclasses.replace(config.database, path=str(path)),
            feeds=feeds,
        )

    # ----------------------------------------------------------------- servers
    def _block_fields(self, h: HeaderSpec) -> dict[str, Any]:
        extras = synth.block_extras(self.seed, h.height)
        return {
            "height": h.height,
            "hash": h.hash,
            "prev_hash": h.prev_hash,
            "timestamp": h.time,
            "bits": h.bits,
            "difficulty": h.difficulty,
            "tx_count": extras.tx_count,
            "fees_sats": extras.fees_sats,
            "pool": extras.pool,
        }

    def _history(self) -> tuple[dict[str, Any], list[tuple[int, float]]]:
        today = int(self.data0) // DAY_S * DAY_S
        first_day = today - HISTORY_DAYS * DAY_S
        # complete days only: today's hashrate is not known yet
        rates = hashrate_history(load_retargets(), first_day, today - DAY_S)
        prices = synth.daily_price_history(self.seed, today, HISTORY_DAYS + 1)
        return rates, prices

    async def start(self, config: Any) -> Any:
        """Start the local servers (127.0.0.1, ephemeral ports) and the replay clock; return
        a copy of ``config`` with every feed enabled and pointed at them."""
        if self.mempool is not None:
            raise RuntimeError("demo already started")
        chain = Chain(start_height=self.headers[0].height, start_time=self.headers[0].time)
        for h in self.headers[: self.premined]:
            chain.next_block(**self._block_fields(h))
        self.mempool = MempoolDemoServer(chain, clock=self.clock, stats_interval_s=STATS_INTERVAL_S)
        rates, prices = self._history()
        self.mempool.hashrate_payload = rates
        self.mempool.set_daily_prices(prices)
        try:
            await self.mempool.start()
            for i, name in enumerate(PRICE_SOURCES):
                srv = ExchangeServer(
                    clock=self.clock, initial_price=self.walk.quote(name), seed=self.seed + i
                )
                self.exchanges[name] = srv
                await srv.start()
        except BaseException:
            await self.stop()
            raise
        self._mono0 = self._monotonic()
        await self.mempool.set_price(round(self.walk.mid), at=self.clock())
        tip = self.headers[self.premined - 1]
        log.warning("demo: %s", self.label)
        log.warning(
            "demo: REAL: header times (CC0) and bits/difficulty (Electrum, MIT) of heights "
            "%d..%d; DERIVED: daily hashrate history (D*2^32/600 from retargets.csv); "
            "SYNTHETIC: block hashes, fees, tx counts, pools, BTC/USD (seeded walk from "
            "$%.0f, %.1f%%/day), blocks after %d (see feeds/data/SOURCES.md)",
            self.headers[0].height,
            self.headers[-1].height,
            synth.ANCHOR_PRICE_USD,
            synth.DAILY_VOL * 100,
            self.headers[-1].height,
        )
        if self.speed * TICK_MIN_INTERVAL_S > 30:
            log.warning(
                "demo: at %gx one wall millisecond is %.0f replay seconds: feed ages on the "
                "replay clock include wall-clock jitter, so feed-stale alerts may flap",
                self.speed,
                self.speed / 1000,
            )
        log.info(
            "demo: %d blocks premined (tip %d at %s), replay starts at %d",
            self.premined,
            tip.height,
            _day(tip.time),
            self.start_height,
        )
        return self._point_config(config)

    def _point_config(self, config: Any) -> Any:
        assert self.mempool is not None
        feeds = config.feeds
        changes: dict[str, Any] = {
            "mempool": dataclasses.replace(
                feeds.mempool,
                enabled=True,
                ws_url=self.mempool.ws_url,
                rest_url=self.mempool.rest_url,
            )
        }
        for name, srv in self.exchanges.items():
            # (nothing polls Bitstamp's REST; its base is set for consistency only)
            changes[name] = dataclasses.replace(
                getattr(feeds, name),
                enabled=True,
                ws_url=srv.ws_url(name),
                rest_url=srv.rest_url(name),
            )
        return dataclasses.replace(config, feeds=dataclasses.replace(feeds, **changes))

    async def stop(self) -> None:
        servers: list[Any] = [*self.exchanges.values()]
        if self.mempool is not None:
            servers.append(self.mempool)
        for srv in servers:
            with contextlib.suppress(Exception):
                await srv.close()
        self.exchanges = {}
        self.mempool = None

    def cleanup(self) -> None:
        """Remove the temp database directory (never a ``db_path`` the caller gave)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ----------------------------------------------------------------- the replay
    def upcoming(self) -> Iterator[HeaderSpec]:
        """Every block after the premined ones: the rest of the real data, then synthetic
        blocks at the hashrate the last 1,008 real blocks imply, forever."""
        yield from self.headers[self.premined :]
        hashrate = synth.window_hashrate(self.headers[-1009:])
        yield from synth.synthetic_headers(self.seed, self.headers, hashrate)

    async def run(self) -> None:
        """Drive the replay until cancelled."""
        if self.mempool is None:
            raise RuntimeError("call start() before run()")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._blocks(), name="demo-blocks")
            for name, srv in self.exchanges.items():
                tg.create_task(self._prices(name, srv), name=f"demo-prices-{name}")
            tg.create_task(self._conversions(), name="demo-conversions")

    async def _blocks(self) -> None:
        mempool = self.mempool
        assert mempool is not None
        prev = self.headers[self.premined - 1]
        for h in self.upcoming():
            delay = self._wall_delay(h.time)
            if delay > 0:
                await asyncio.sleep(delay)
            if h.synthetic and not prev.synthetic:
                log.warning(
                    "demo: real header data ends at %d; continuing with SYNTHETIC blocks "
                    "(exponential intervals at the last week's hashrate, %.1f EH/s)",
                    prev.height,
                    synth.window_hashrate(self.headers[-1009:]) / 1e18,
                )
            if h.bits != prev.bits:
                log.info(
                    "demo: retarget at %d: difficulty %.4g -> %.4g (%+.2f%%)%s",
                    h.height,
                    prev.difficulty,
                    h.difficulty,
                    (h.difficulty / prev.difficulty - 1) * 100,
                    " (synthetic)" if h.synthetic else "",
                )
            await mempool.add_block(**self._block_fields(h))
            self.blocks_pushed += 1
            self.last_pushed = h
            log.debug("demo: block %d pushed%s", h.height, " (synthetic)" if h.synthetic else "")
            prev = h

    async def _prices(self, name: str, srv: ExchangeServer) -> None:
        jitter = random.Random(f"{self.seed}:ticks:{name}")
        interval = self.tick_interval_s
        while True:
            await asyncio.sleep(interval * jitter.uniform(0.5, 1.5))
            now = self.clock()
            self.walk.advance(now)
            srv.publish_price(self.walk.quote(name), now)
            self.ticks_pushed += 1

    async def _conversions(self) -> None:
        mempool = self.mempool
        assert mempool is not None
        lo, hi = CONVERSIONS_WALL_BOUNDS_S
        while True:
            await asyncio.sleep(min(max(CONVERSIONS_EVERY_S / self.speed, lo), hi))
            now = self.clock()
            await mempool.set_price(round(self.walk.advance(now)), at=now)


__all__ = [
    "PREMINED_BLOCKS",
    "DemoReplay",
    "hashrate_history",
    "load_headers",
    "load_retargets",
    "period_start_times",
]
