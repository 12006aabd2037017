"""Build the feed adapters from config and run them with the store writer and the metrics.

Works with or without a UI: the headless CLI runs :meth:`Runtime.run` under ``asyncio.run``;
the dashboard starts the same coroutine as a worker. Nothing here imports Textual.

Data flow: adapters publish events on the bus -> the writer (one subscriber) stores them in
batches -> the metrics loop (another subscriber) keeps a :class:`MetricsEngine` current and
publishes :class:`MetricsSnapshot` events, which the store samples per minute and the alert
service evaluates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feeds.bus import Bus
from feeds.events import (
    Block,
    DailyPoint,
    DifficultyAdjustment,
    FeedState,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)

log = logging.getLogger(__name__)

PRICE_SOURCES = ("coinbase", "kraken", "bitstamp")
#: Blocks the metrics engine needs at start: the 30-day window (4320 + 1) plus the previous
#: epoch's start for early-epoch projections.
BOOTSTRAP_BLOCKS = 4321 + 2016
#: How often a snapshot is published without any new event (ages, staleness, block gap).
SNAPSHOT_TICK_S = 5.0
#: Minimum spacing of snapshots driven by price ticks (20 ticks/s must not mean 20 snapshots/s).
SNAPSHOT_MIN_SPACING_S = 1.0
PRUNE_EVERY_S = 300.0
#: Bound of the metrics subscription (and its batch size).
METRICS_QUEUE = 5000
#: ends the divergence text the runtime appends to a FeedStatus detail (recognises its own)
_FLAG_MARK = " (median check)"


@dataclass
class RuntimeOptions:
    """What the runtime needs beyond config: the knobs tests and the demo turn."""

    clock: Callable[[], float] = time.time
    reconnect_delays: Callable[[], Any] | None = None
    #: the demo labels everything as a replay
    demo: bool = False
    #: skip REST backfill (tests that script the chain themselves)
    backfill: bool = True
    tip_check_interval_s: float = 180.0
    extra_tasks: list[Callable[[], Any]] = field(default_factory=list)


class Runtime:
    """Runs every enabled feed, the writer and the metrics until cancelled."""

    def __init__(
        self, config: Any, *, bus: Bus | None = None, options: RuntimeOptions | None = None
    ):
        self.config = config
        self.bus = bus or Bus()
        self.options = options or RuntimeOptions()
        self.clock = self.options.clock
        self.db_path: Path = Path(config.database.path)
        self.demo = self.options.demo
        self.attach = False
        self.engine: Any = None
        self.writer: Any = None
        self.ready = asyncio.Event()
        self._last_status: dict[str, FeedStatus] = {}
        self._flags: dict[str, str | None] = {}
        self._snapshot_due = asyncio.Event()

    # ----------------------------------------------------------------- building blocks
    def _make_engine(self) -> Any:
        from feeds.metrics import MetricsEngine

        econ = self.config.economics
        return MetricsEngine(
            econ.fleet,
            econ.network,
            price_fresh_after_s=self.config.feeds.price_fresh_after,
            price_divergence_pct=self.config.feeds.price_divergence_pct,
            clock=self.clock,
        )

    def _bootstrap(self, engine: Any) -> None:
        """Fill the engine from the store so metrics are right from the first snapshot."""
        from feeds.store import Store

        store = Store.open(self.db_path)
        try:
            blocks = store.active_blocks(limit=BOOTSTRAP_BLOCKS)
            engine.on_blocks(blocks)
            now = self.clock()
            for point in store.daily_history(since_day=int(now) - 400 * 86400):
                engine.on_daily(point)
            for tick in store.latest_prices():
                engine.on_price(tick)
            log.info("runtime: bootstrapped %d blocks from %s", len(blocks), self.db_path)
        finally:
            store.close()

    def _ws_adapters(self) -> list[Any]:
        from feeds.sources.registry import SOURCES

        adapters = []
        for name, cls in SOURCES.items():
            cfg = getattr(self.config.feeds, name, None)
            if cfg is None or not cfg.enabled:
                continue
            adapters.append(cls(cfg.ws_url, stale_after_s=cfg.stale_after))
        return adapters

    # ----------------------------------------------------------------------- tasks
    async def _metrics_loop(self) -> None:
        sub = self.bus.subscribe(
            [Block, PriceTick, DailyPoint, FeedStatus, DifficultyAdjustment],
            maxsize=METRICS_QUEUE,
            name="metrics",
        )
        engine = self.engine
        last_published = -SNAPSHOT_TICK_S
        dirty = False  # events applied since the last snapshot
        statuses: list[FeedStatus] = []  # ... of which feed statuses (price-divergence flags)
        try:
            while True:
                # Within SNAPSHOT_MIN_SPACING_S of a snapshot, price ticks and statuses could
                # not produce another one anyway: sleep until the spacing is over (a block or
                # any other non-coalescable event still wakes us at once), then take
                # everything that came meanwhile. One wake-up a second instead of one per tick.
                since = time.monotonic() - last_published
                if since < SNAPSHOT_MIN_SPACING_S:
                    timeout, min_events = SNAPSHOT_MIN_SPACING_S - since, METRICS_QUEUE
                elif dirty:
                    timeout, min_events = 0.0, 1
                else:
                    timeout, min_events = max(0.0, SNAPSHOT_TICK_S - since), 1
                batch = await sub.get_batch(
                    limit=METRICS_QUEUE, timeout=timeout, min_events=min_events
                )
                new_block = False
                for event in batch:
                    if isinstance(event, PriceTick):
                        engine.on_price(event)
                    elif isinstance(event, Block):
                        engine.on_block(event)
                        new_block = True
                    elif isinstance(event, DailyPoint):
                        engine.on_daily(event)
                    elif isinstance(event, FeedStatus):
                        engine.on_feed_status(event)
                        statuses.append(event)
                    elif isinstance(event, DifficultyAdjustment):
                        # mempool's figure for the last retarget, used while h0-1 is not held
                        engine.on_difficulty_adjustment(event)
                dirty = dirty or bool(batch)
                mono = time.monotonic()
                since = mono - last_published
                if (
                    new_block
                    or (dirty and since >= SNAPSHOT_MIN_SPACING_S)
                    or since >= SNAPSHOT_TICK_S
                ):
                    now = self.clock()
                    self.bus.publish(engine.snapshot(now))
                    self._flag_divergent_prices(now, statuses)
                    statuses = []
                    last_published = mono
                    dirty = False
        finally:
            sub.close()

    def _flag_divergent_prices(self, now: float, batch: list[Any]) -> None:
        """A price source more than ``price_divergence_pct`` off the median of the others is
        flagged in its own FeedStatus (DOMAIN.md), so the footer and ``status`` show it.

        The flag rides on the adapter's latest status; when the adapter publishes a new
        status (which knows nothing of the flag), the flag is put back on it."""
        renewed = set()
        for event in batch:
            # Our own republished statuses come back through the bus: recognise and skip them.
            if isinstance(event, FeedStatus) and not (event.detail or "").endswith(_FLAG_MARK):
                self._last_status[event.source] = event
                renewed.add(event.source)
        flagged = self.engine.prices.flagged(now)
        for source, status in self._last_status.items():
            pct = flagged.get(source)
            text = f"price {pct:+.1f}% off the other sources{_FLAG_MARK}" if pct else None
            if text == self._flags.get(source) and source not in renewed:
                continue
            if text is None and self._flags.get(source) is None:
                continue
            self._flags[source] = text
            base = (status.detail or "").strip()
            detail = "; ".join(p for p in (base, text) if p) or None
            self.bus.publish(dataclasses.replace(status, detail=detail, received_at=now))

    async def _prune_loop(self) -> None:
        retention = self.config.database.price_tick_retention
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            await self.writer.call(lambda store: store.prune(self.clock(), retention))

    async def _mempool_rest(self) -> None:
        """Backfill once, then check the tip every few minutes and fill any gap."""
        from feeds.sources.mempool_rest import MempoolRest
        from feeds.store import Store

        cfg = self.config.feeds.mempool
        reader = Store.open(self.db_path)
        rest = MempoolRest(
            cfg.rest_url,
            self.bus,
            store_tip=lambda: t.height if (t := reader.tip()) else None,
            missing_heights=reader.missing_heights,
            clock=self.clock,
        )
        gap_sub = self.bus.subscribe([FeedStatus], maxsize=100, name="gapfill")
        try:
            if self.options.backfill:
                await self.writer.flush()
                await rest.backfill(self.config.feeds.backfill_blocks)
                await rest.backfill_history()
            last_check = time.monotonic()
            was_live = True
            while True:
                batch = await gap_sub.get_batch(timeout=self.options.tip_check_interval_s)
                for status in batch:
                    if status.source != "mempool":
                        continue
                    live = status.state is FeedState.LIVE
                    if live and not was_live:
                        # Reconnected: whatever was pushed while we were away is missing.
                        await self.writer.flush()
                        await rest.check_tip()
                    was_live = live
                if time.monotonic() - last_check >= self.options.tip_check_interval_s:
                    await self.writer.flush()
                    await rest.check_tip()
                    last_check = time.monotonic()
        finally:
            gap_sub.close()
            await rest.close()
            reader.close()

    async def _rest_price_fallback(self) -> None:
        from feeds.sources.rest_prices import run_rest_fallback

        await run_rest_fallback(self.config.feeds, self.bus, clock=self.clock)

    async def _supervised(self, name: str, factory: Callable[[], Any]) -> None:
        """Run a feed task forever: an unexpected error in one source is logged and the
        source restarted after a pause, never taking the other feeds or the writer down."""
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                await factory()
                return  # a source that returns on purpose (fatal handshake error) stays down
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runtime: task %s crashed; restarting in %.0f s", name, delay)
            if time.monotonic() - started > 60:
                delay = 1.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run(self) -> None:
        from feeds.store import Store
        from feeds.writer import Writer

        # Open (and migrate) the database first: a bad file stops start-up with a clear error.
        Store.open(self.db_path).close()
        self.engine = self._make_engine()
        await asyncio.to_thread(self._bootstrap, self.engine)
        self.writer = Writer(self.db_path)
        writer_sub = self.bus.subscribe(maxsize=100_000, name="writer")
        if self.demo:
            log.warning("runtime: DEMO REPLAY: all data comes from local replay servers")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.writer.run(writer_sub), name="writer")
                tg.create_task(self._metrics_loop(), name="metrics")
                tg.create_task(self._prune_loop(), name="prune")
                from feeds.transport import run_ws

                for adapter in self._ws_adapters():
                    tg.create_task(
                        self._supervised(
                            f"ws:{adapter.name}",
                            lambda a=adapter: run_ws(
                                a,
                                self.bus,
                                clock=self.clock,
                                reconnect_delays=self.options.reconnect_delays,
                                clock_offset_warn_s=self.config.feeds.clock_offset_warn,
                            ),
                        ),
                        name=f"ws:{adapter.name}",
                    )
                if self.config.feeds.mempool.enabled:
                    tg.create_task(
                        self._supervised("mempool-rest", self._mempool_rest), name="mempool-rest"
                    )
                tg.create_task(
                    self._supervised("rest-prices", self._rest_price_fallback), name="rest-prices"
                )
                for factory in self.options.extra_tasks:
                    tg.create_task(factory())
                self.ready.set()
        finally:
            writer_sub.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.close(), 2.0)

    def snapshot(self) -> MetricsSnapshot | None:
        return self.engine.snapshot(self.clock()) if self.engine else None
