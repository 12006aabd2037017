"""The dashboard App: compose the panels, start the workers, route messages to reactives.

Data path: runtime -> bus -> ``bridge.pump`` (one worker) -> messages -> ``DisplayBuffer`` ->
a ``set_interval`` at ``refresh_per_second`` assigns widget reactives. Ages tick once a second
from memory. SQLite is read only for history views, in a thread worker, on mount and after
new blocks. The runtime starts after the first frame, so no network I/O delays it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from tui import bridge
from tui import messages as m
from tui.runtime_api import RuntimeLike
from tui.widgets.alerts import AlertsPanel
from tui.widgets.alerts import apply as apply_transitions
from tui.widgets.blocks import BlocksPanel, merge, row_from_block
from tui.widgets.difficulty import DifficultyPanel
from tui.widgets.economics import EconomicsPanel
from tui.widgets.feeds import FeedsFooter
from tui.widgets.hashrate import HashratePanel
from tui.widgets.panel import Panel
from tui.widgets.price import PricePanel
from tui.widgets.revenue import RevenuePanel

log = logging.getLogger(__name__)

#: refresh rates offered by + and -; the issue caps repaints at 4/s unless config asks more
RATES = (0.5, 1.0, 2.0, 4.0)
THEMES = {"dark": "textual-dark", "light": "textual-light"}


class HashwatchApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "hashwatch"
    # The roomy three-column layout needs both width and height; else the compact one.
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (120, "-wide"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-short"), (36, "-tall")]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("p", "toggle_pause", "Pause", id="pause"),
        Binding("r", "reload", "Reload", id="reload"),
        Binding("t", "test_alert", "Test alert", id="test_alert"),
        Binding("s", "silence", "Silence", id="silence"),
        Binding("u", "unsilence", "Unsilence", show=False, id="unsilence"),
        Binding("plus,equals_sign", "faster", "Faster", show=False, id="faster"),
        Binding("minus", "slower", "Slower", show=False, id="slower"),
        Binding("d", "toggle_theme", "Theme", show=False, id="theme"),
        Binding("question_mark", "help", "Help", id="help"),
    ]

    #: palette entries: (title, help, action name); the same actions the keys run
    COMMANDS_LIST: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Pause / resume display", "Freeze or resume repaints (p)", "toggle_pause"),
        ("Reload config", "Ask the runtime to reload its config (r)", "reload"),
        ("Send test alert", "Send a test notification to every target (t)", "test_alert"),
        ("Silence selected alert", "Silence the selected alert for 1h/4h/24h (s)", "silence"),
        ("Unsilence selected alert", "Lift the selected alert's silence (u)", "unsilence"),
        ("Faster refresh", "Repaint more often (+)", "faster"),
        ("Slower refresh", "Repaint less often (-)", "slower"),
        ("Toggle theme", "Switch between dark and light (d)", "toggle_theme"),
        ("Help", "Keys and units (?)", "help"),
    )

    paused: reactive[bool] = reactive(False, init=False)
    refresh_rate: reactive[float] = reactive(4.0, init=False)

    def __init__(
        self,
        runtime: RuntimeLike,
        *,
        refresh_per_second: float = 4.0,
        theme: str = "dark",
        compact: str | bool = "auto",
        price_fresh_after: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.clock = clock
        self.buffer = bridge.DisplayBuffer()
        self._max_rate = max(RATES[-1], refresh_per_second)
        self._rates = tuple(sorted({*RATES, refresh_per_second}))
        self._theme_base = THEMES.get(theme, theme)
        self._price_fresh_after = price_fresh_after
        self._flush_timer: Timer | None = None
        self._history_running = False
        self._history_dirty = False
        self._live_alert_rules: set[str] = set()
        self._runtime_failed = False
        #: newest data receive time per source since the last tick (the footer's ages)
        self._seen: dict[str, float] = {}
        self.history_loads = 0  # completed history reads (tests wait on it)
        if compact is True or compact in ("always", "true", "yes"):
            self.HORIZONTAL_BREAKPOINTS = [(0, "-narrow")]
        elif compact is False or compact in ("never", "false", "no"):
            self.HORIZONTAL_BREAKPOINTS = [(0, "-wide")]
            self.VERTICAL_BREAKPOINTS = [(0, "-tall")]
        self.set_reactive(HashwatchApp.refresh_rate, min(refresh_per_second, self._max_rate))

    # ---- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Grid(id="panels"):
            yield PricePanel(id="price")
            yield HashratePanel(id="hashrate")
            yield DifficultyPanel(id="difficulty")
            yield RevenuePanel(id="revenue")
            yield EconomicsPanel(id="economics")
            yield AlertsPanel(id="alerts")
            yield BlocksPanel(id="blocks")
        yield FeedsFooter(id="feeds")
        yield Footer()

    def on_mount(self) -> None:
        try:
            self.theme = self._theme_base
        except Exception:  # unknown theme name in config: keep Textual's default
            log.warning("unknown theme %r, using the default", self._theme_base)
            self._theme_base = self.theme
        panels = list(self.query(Panel))
        self._snapshot_panels = [p for p in panels if p.USES_SNAPSHOT]
        self._ticking_panels = [p for p in panels if p.TICKS]
        # Looked up once: a flush runs up to 4 times a second and must not walk the DOM.
        self._price = self.query_one(PricePanel)
        self._hashrate = self.query_one(HashratePanel)
        self._revenue = self.query_one(RevenuePanel)
        self._blocks = self.query_one(BlocksPanel)
        self._alerts = self.query_one(AlertsPanel)
        self._feeds = self.query_one(FeedsFooter)
        self._price.fresh_after = self._price_fresh_after
        self._alerts.focus()
        self._tick()
        self._update_subtitle()
        self._flush_timer = self.set_interval(1.0 / self.refresh_rate, self.flush)
        self.set_interval(1.0, self._tick)
        # Workers start after the first frame is on screen: nothing below may delay it.
        self.call_after_refresh(self._start_workers)

    def _repaint_interval(self) -> float:
        return 1.0 / self.refresh_rate

    def _start_workers(self) -> None:
        self.run_worker(
            bridge.pump(self.runtime.bus, self.post_message, every=self._repaint_interval),
            name="bridge",
            group="bridge",
            exit_on_error=False,
        )
        self.run_worker(self.runtime.run(), name="runtime", group="runtime", exit_on_error=False)
        self.request_history()

    # ---- messages from the bridge: remember, repaint on the next flush ---------------------
    def on_price_updated(self, msg: m.PriceUpdated) -> None:
        self.buffer.note(msg.tick)

    def on_metrics_updated(self, msg: m.MetricsUpdated) -> None:
        self.buffer.note(msg.snapshot)

    def on_feed_status_changed(self, msg: m.FeedStatusChanged) -> None:
        self.buffer.note(msg.status)

    def on_backfill_updated(self, msg: m.BackfillUpdated) -> None:
        self.buffer.note(msg.progress)

    def on_daily_point_arrived(self, msg: m.DailyPointArrived) -> None:
        self.buffer.note(msg.point)

    def on_alert_changed(self, msg: m.AlertChanged) -> None:
        self._live_alert_rules.add(msg.transition.rule)
        self.buffer.note(msg.transition)

    def on_block_arrived(self, msg: m.BlockArrived) -> None:
        self.buffer.note(msg.block)
        self._history_dirty = True  # read on the next flush: a backfill flood reads once

    def on_history_loaded(self, msg: m.HistoryLoaded) -> None:
        self._history_running = False
        self.history_loads += 1
        self.buffer.note(msg.history)

    # ---- repaint ----------------------------------------------------------------------
    def flush(self) -> None:
        """Move everything pending into the widgets' reactives (at most refresh_rate/s)."""
        if self.paused:
            return
        if self._history_dirty:
            self.request_history()
        p = self.buffer.drain()
        if p.empty():
            return
        with self.batch_update():
            self._apply(p)

    def _apply(self, p: bridge.Pending) -> None:
        price, hashrate, blocks = self._price, self._hashrate, self._blocks
        alerts, feeds = self._alerts, self._feeds
        h = p.history
        if h is not None:
            price.points = h.price_points
            price.price_24h_ago = h.price_24h_ago
            hashrate.daily = dict(h.daily_hashrate)
            blocks.rows = merge(blocks.rows, h.blocks)
            revenue = self._revenue
            revenue.past_24h, revenue.past_7d = h.past_24h, h.past_7d
            self._apply_alert_history(alerts, h)
        if p.snapshot is not None:
            for panel in self._snapshot_panels:
                panel.snapshot = p.snapshot
        # Data ages in the footer move with the once-a-second tick, not with every tick.
        self._seen.update((t.source, t.received_at) for t in p.ticks.values())
        self._seen.update((b.source, b.received_at) for b in p.blocks if not b.backfill)
        if p.ticks:
            price.ticks = {**price.ticks, **p.ticks}
        if p.feeds:
            feeds.statuses = {**feeds.statuses, **p.feeds}
        if p.backfill:
            feeds.backfill = {**feeds.backfill, **p.backfill}
        if p.daily:
            daily = dict(hashrate.daily)
            for d in p.daily:
                if d.hashrate_hs is not None:
                    daily[d.day] = d.hashrate_hs
            hashrate.daily = daily
        if p.blocks:
            blocks.rows = merge(blocks.rows, [row_from_block(b) for b in p.blocks])
        if p.transitions:
            alerts.active, alerts.history = apply_transitions(
                alerts.active, alerts.history, p.transitions
            )

    def _apply_alert_history(self, alerts: AlertsPanel, h: m.History) -> None:
        # The store is authoritative for silences and for alerts this UI has not seen change;
        # live transitions win for the rest (the read may predate them).
        active = dict(alerts.active)
        for row in h.alerts_active:
            if row.state in ("pending", "firing") and row.rule not in self._live_alert_rules:
                active[row.rule] = row
            elif row.rule in active:
                active[row.rule] = m.AlertRow(
                    **{**active[row.rule].__dict__, "silenced_until": row.silenced_until}
                )
        alerts.active = active
        seen: dict[tuple[str, str, float], m.AlertRow] = {}
        for row in (*alerts.history, *h.alert_history):
            seen.setdefault((row.rule, row.state, round(row.since, 3)), row)
        alerts.history = tuple(sorted(seen.values(), key=lambda r: -r.since))[:20]

    def _tick(self) -> None:
        if self.paused:
            return
        now = self.clock()
        if self._seen:
            self._feeds.last_seen = {**self._feeds.last_seen, **self._seen}
            self._seen = {}
        for panel in self._ticking_panels:
            panel.now = now

    # ---- history (thread worker, never on a timer) ----------------------------------------
    def request_history(self) -> None:
        self._history_dirty = False
        if self._history_running:
            self._history_dirty = True  # one more read when this one lands
            return
        self._history_running = True
        self._load_history(self.runtime.db_path, self.clock())

    @work(thread=True, group="history", exit_on_error=False)
    def _load_history(self, path: Any, now: float) -> None:
        from tui import history  # sqlite3 and the queries: not needed for the first frame

        self.post_message(m.HistoryLoaded(history.load(path, now)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state is not WorkerState.ERROR:
            return
        log.error("worker %s failed: %r", worker.name, worker.error)
        if worker.group == "history":
            self._history_running = False
        self.notify(f"{worker.name} stopped: {worker.error}", severity="error", timeout=30)
        if worker.group == "runtime":
            self._runtime_failed = True
            self._update_subtitle()

    # ---- actions ----------------------------------------------------------------------
    def _update_subtitle(self) -> None:
        parts = ["RUNTIME STOPPED"] if self._runtime_failed else []
        if self.runtime.demo:
            parts.append("REPLAY")
        if self.runtime.attach:
            parts.append("ATTACHED (read-only)")
        if self.paused:
            parts.append("PAUSED")
        parts.append(f"{self.refresh_rate:g}/s")
        self.sub_title = " · ".join(parts)

    def watch_paused(self) -> None:
        self._update_subtitle()
        if not self.paused:
            self._tick()
            self.flush()

    def watch_refresh_rate(self, rate: float) -> None:
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = self.set_interval(1.0 / rate, self.flush)
        self._update_subtitle()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_faster(self) -> None:
        higher = [r for r in self._rates if r > self.refresh_rate and r <= self._max_rate]
        if higher:
            self.refresh_rate = higher[0]

    def action_slower(self) -> None:
        lower = [r for r in self._rates if r < self.refresh_rate]
        if lower:
            self.refresh_rate = lower[-1]

    def action_toggle_theme(self) -> None:
        dark = self.current_theme.dark
        base_dark = self.get_theme(self._theme_base)
        if base_dark is not None and base_dark.dark != dark:
            self.theme = self._theme_base
        else:
            self.theme = "textual-light" if dark else "textual-dark"

    def action_help(self) -> None:
        from tui.screens import HelpScreen  # screens load when first opened, not at start-up

        if isinstance(self.screen, HelpScreen):
            return
        keys = [
            # Show the first key of each binding ("+" rather than "plus,equals_sign").
            (self.get_key_display(replace(b, key=b.key.split(",")[0])), b.description)
            for b in self._bindings_list()
            if b.description
        ]
        self.push_screen(HelpScreen(keys))

    def _bindings_list(self) -> Iterable[Binding]:
        for b in self.BINDINGS:
            if isinstance(b, Binding):
                yield b

    def _submit(self, action: str, done: str, **args: Any) -> bool:
        try:
            self.runtime.submit_action(action, **args)
        except Exception as exc:  # an operator action must never take the dashboard down
            log.exception("operator action %s failed", action)
            self.notify(f"{action} failed: {exc}", severity="error")
            return False
        self.notify(done)
        return True

    def action_reload(self) -> None:
        self._submit("reload", "config reload requested")

    def action_test_alert(self) -> None:
        self._submit("test_alert", "test alert requested")

    def action_silence(self) -> None:
        row = self.query_one(AlertsPanel).selected
        if row is None:
            self.notify("no alert selected", severity="warning")
            return
        rule = row.rule
        from tui.screens import SilenceScreen

        def chosen(seconds: int | None) -> None:
            if seconds is None:
                return
            if self._submit(
                "silence", f"{rule} silenced for {seconds // 3600}h", rule=rule, seconds=seconds
            ):
                alerts = self.query_one(AlertsPanel)
                alerts.requested = {**alerts.requested, rule: self.clock() + seconds}

        self.push_screen(SilenceScreen(rule), chosen)

    def action_unsilence(self) -> None:
        alerts = self.query_one(AlertsPanel)
        row = alerts.selected
        if row is None:
            self.notify("no alert selected", severity="warning")
            return
        if self._submit("unsilence", f"{row.rule} unsilenced", rule=row.rule):
            alerts.requested = {k: v for k, v in alerts.requested.items() if k != row.rule}

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_, action in self.COMMANDS_LIST:
            yield SystemCommand(title, help_, getattr(self, f"action_{action}"))


def make_app(
    config: Any, runtime: RuntimeLike, *, clock: Callable[[], float] | None = None
) -> HashwatchApp:
    """Build the dashboard (used by the CLI and the tests). ``config`` may be None: defaults.

    Ages are measured on ``clock``, else on the runtime's own ``clock`` when it has one (the
    demo replays history on a replay clock), else on ``time.time``.
    """
    clock = clock or getattr(runtime, "clock", None) or time.time
    ui = getattr(config, "ui", None)
    feeds_cfg = getattr(config, "feeds", None)
    return HashwatchApp(
        runtime,
        refresh_per_second=float(getattr(ui, "refresh_per_second", 4) or 4),
        theme=str(getattr(ui, "theme", "dark") or "dark"),
        compact=getattr(ui, "compact", "auto"),
        price_fresh_after=float(getattr(feeds_cfg, "price_fresh_after", 60.0) or 60.0),
        clock=clock,
    )
