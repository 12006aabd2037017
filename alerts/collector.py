"""The whole collector: feeds runtime + alert service + outbox sender, as one runnable.

Both the headless CLI and the dashboard run a :class:`Collector` (the dashboard as a worker),
so the UI is never a requirement of the daemon. :class:`AttachedCollector` is the read-only
twin for ``hashwatch run --attach``: it runs no feeds and writes no data; it watches another
collector's database through SQLite's ``data_version`` and republishes what changed as bus
events, so the same dashboard code serves both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from feeds.bus import Bus
from feeds.events import AlertState, AlertTransition, OperatorAction
from feeds.runtime import BOOTSTRAP_BLOCKS, Runtime, RuntimeOptions

log = logging.getLogger(__name__)


class Collector:
    """Feeds, store, metrics, rules and delivery until cancelled."""

    def __init__(
        self,
        config: Any,
        *,
        demo: Any = None,
        bus: Bus | None = None,
        clock: Callable[[], float] | None = None,
        runtime_options: RuntimeOptions | None = None,
        notifier: Any = None,
        config_loader: Callable[[], Any] | None = None,
    ) -> None:
        self.config = config
        self._demo = demo
        self.bus = bus or Bus()
        self.clock: Callable[[], float] = clock or (demo.clock if demo else time.time)
        self.db_path = Path(config.database.path)
        self.attach = False
        self.runtime: Runtime | None = None
        self.service: Any = None
        self.sender: Any = None
        self._runtime_options = runtime_options
        self._notifier = notifier
        # Re-reads the config file for the dashboard's reload action (injected by the CLI,
        # which owns config loading; this layer must not import it).
        self._config_loader = config_loader
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def demo(self) -> bool:
        return self._demo is not None

    @property
    def label(self) -> str:
        return getattr(self._demo, "label", "") if self._demo else ""

    def _options(self) -> RuntimeOptions:
        opts = self._runtime_options or RuntimeOptions()
        opts.clock = self.clock
        opts.demo = self.demo
        return opts

    def _heartbeat_summary(self) -> Mapping[str, Any]:
        snap = self.runtime.snapshot() if self.runtime else None
        return dict(snap.values) if snap else {}

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        config = self.config
        if self._demo is not None:
            config = await self._demo.start(config)
            self.config = config
        runtime = Runtime(config, bus=self.bus, options=self._options())
        self.runtime = runtime
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(runtime.run(), name="runtime")
                tg.create_task(self._alerts(runtime), name="alerts")
                if self._demo is not None:
                    tg.create_task(self._demo.run(), name="demo")
        finally:
            if self._demo is not None:
                with contextlib.suppress(Exception):
                    await self._demo.stop()

    async def _alerts(self, runtime: Runtime) -> None:
        from alerts.notify import AppriseNotifier
        from alerts.outbox import OutboxSender
        from alerts.service import AlertService

        await runtime.ready.wait()
        config = self.config
        notify = config.notify
        notifier = self._notifier or AppriseNotifier(timeout_s=notify.send_timeout)
        self.sender = OutboxSender(
            self.db_path,
            notifier,
            notify.targets,
            clock=self.clock,
            max_per_target_per_10m=notify.max_per_target_per_10m,
            writer=runtime.writer,
            heartbeat_s=notify.heartbeat,
            heartbeat_summary=self._heartbeat_summary,
        )
        self.service = AlertService(
            config.rules,
            runtime.writer,
            self.bus,
            notify.targets,
            clock=self.clock,
            eval_interval_s=config.alerts.eval_interval,
            rule_loader=self._rule_loader if self._config_loader else None,
            sender=self.sender,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.service.run(), name="alert-service")
            tg.create_task(self.sender.run(), name="outbox")

    def _rule_loader(self) -> Any:
        assert self._config_loader is not None
        new = self._config_loader()  # raises ConfigError: the service keeps the old rules
        self.config = new
        return new.rules

    # ------------------------------------------------------------ operator actions
    def submit_action(self, action: str, **args: Any) -> None:
        """From the dashboard: the in-process fast path through the bus."""
        self.bus.publish(OperatorAction(action=action, args=dict(args), at=self.clock()))

    def reload(self, new_config: Any) -> None:
        """SIGHUP: swap rules (an invalid config never reaches here: the CLI checks it)."""
        self.config = new_config
        if self.service is not None:
            self.service.reload(new_config.rules)


class AttachedCollector:
    """Read-only view of another collector's database for ``run --attach``."""

    POLL_S = 1.0

    def __init__(
        self, config: Any, *, bus: Bus | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.bus = bus or Bus()
        self.clock = clock
        self.db_path = Path(config.database.path)
        self.demo = False
        self.attach = True
        self.label = f"ATTACHED to {self.db_path} (read-only)"
        self._engine: Any = None
        self._last_height: int | None = None
        self._last_history_id = 0

    async def run(self) -> None:
        from feeds.metrics import MetricsEngine
        from feeds.store import Store

        while not self.db_path.exists():
            log.warning("attach: waiting for %s to exist", self.db_path)
            await asyncio.sleep(5)
        # One thread for every read: PRAGMA data_version is per connection, and the store's
        # read connections are per thread.
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="attach")
        loop = asyncio.get_running_loop()

        def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
            return loop.run_in_executor(executor, fn, *args)

        store = await in_thread(lambda: Store.open(self.db_path, readonly=True))
        econ = self.config.economics
        self._engine = MetricsEngine(
            econ.fleet,
            econ.network,
            price_fresh_after_s=self.config.feeds.price_fresh_after,
            clock=self.clock,
        )
        last_version: int | None = None
        try:
            while True:
                version = await in_thread(store.data_version)
                if version != last_version:
                    # data_version changes only when another connection committed: cheap to
                    # poll, and we re-read only then.
                    last_version = version
                    events = await in_thread(self._read_changes, store)
                    for event in events:
                        self.bus.publish(event)
                else:
                    self.bus.publish(self._engine.snapshot(self.clock()))
                await asyncio.sleep(self.POLL_S)
        finally:
            await in_thread(store.close)
            executor.shutdown(wait=False)

    def _read_changes(self, store: Any) -> list[Any]:
        events: list[Any] = []
        engine = self._engine
        if self._last_height is None:
            blocks = store.active_blocks(limit=BOOTSTRAP_BLOCKS)
            engine.on_blocks(blocks)
            for point in store.daily_history(since_day=int(self.clock()) - 400 * 86400):
                engine.on_daily(point)
                events.append(point)
            events.extend(blocks[-50:])
        else:
            blocks = store.active_blocks(since_height=self._last_height - 6)
            for block in blocks:
                engine.on_block(block)
            events.extend(b for b in blocks if b.height > self._last_height)
        if blocks:
            self._last_height = max(self._last_height or 0, blocks[-1].height)
        for tick in store.latest_prices():
            engine.on_price(tick)
            events.append(tick)
        for status in store.feed_statuses():
            engine.on_feed_status(status)
            events.append(status)
        events.extend(self._new_transitions(store))
        events.append(engine.snapshot(self.clock()))
        return events

    def _new_transitions(self, store: Any) -> list[AlertTransition]:
        rows = (
            store.reader()
            .execute(
                "SELECT id, rule, severity, previous, state, at, value, threshold, message, "
                "fired_at "
                "FROM alert_history WHERE id > ? ORDER BY id",
                [self._last_history_id],
            )
            .fetchall()
        )
        out = []
        for row in rows:
            self._last_history_id = max(self._last_history_id, int(row[0]))
            try:
                out.append(
                    AlertTransition(
                        rule=row[1],
                        severity=row[2],
                        previous=AlertState(row[3]),
                        state=AlertState(row[4]),
                        at=row[5],
                        value=row[6],
                        threshold=row[7],
                        message=row[8] or "",
                        fired_at=row[9],
                    )
                )
            except ValueError:
                continue
        return out

    def submit_action(self, action: str, **args: Any) -> None:
        from alerts.actions import submit_action

        submit_action(self.db_path, action, args, now=self.clock())

    def reload(self, new_config: Any) -> None:
        self.config = new_config
