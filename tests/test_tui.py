"""Pilot tests of the dashboard driven by a scripted FakeRuntime on a real bus."""

from __future__ import annotations

import io
import math
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
from fake_runtime import (
    NOW,
    TIP,
    FakeRuntime,
    block,
    firing,
    make_history_db,
    resolved,
    script,
    settle,
    snapshot,
)
from rich.console import Console

from feeds.events import Block, MetricsSnapshot, PriceTick
from tui import bridge
from tui import format as fmt
from tui import messages as m
from tui.app import make_app
from tui.screens import HelpScreen, SilenceScreen
from tui.widgets.alerts import AlertsPanel
from tui.widgets.blocks import BlocksPanel, merge
from tui.widgets.price import PricePanel
from tui.widgets.revenue import attribute

WIDE = (160, 48)


def text(app, selector: str) -> str:
    """What a panel shows, as plain text at its current width."""
    w = app.query_one(selector)
    console = Console(width=max(20, w.content_size.width), file=io.StringIO(), record=True)
    console.print(w.render())
    return console.export_text()


def screen_text(app) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def runtime(tmp_path):
    return FakeRuntime(script(), db_path=make_history_db(tmp_path / "h.db"), demo=True)


async def test_every_panel_shows_values_and_units(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        price = text(app, "#price")
        assert "$104,250" in price
        assert "24h +4.6%" in price  # 104,250 against the 99,700 candle a day ago
        assert "coinbase $104,252 1s" in price
        assert "bitstamp" in price and "1m 35s stale" in price
        assert any(c in price for c in fmt.SPARK_CHARS)

        hashrate = text(app, "#hashrate")
        assert "905.6 EH/s ±3%" in hashrate and "880.4 EH/s ±8%" in hashrate
        assert "30d 889.9 EH/s ±2%" in hashrate
        assert "904.8 EH/s" in hashrate  # implied: D * 2**32 / 600
        assert "peak 30d -2.7%" in hashrate and "90d -5.5%" in hashrate
        assert "daily" in hashrate and "120 days" in hashrate

        diff = text(app, "#difficulty")
        assert "126.40 T" in diff and "last retarget +1.56%" in diff
        assert "92%" in diff and "152 left" in diff and "█" in diff
        assert "next -2.37% ±3.4" in diff and "ETA 1d 1h" in diff
        assert "halving 149,000 blocks" in diff

        rev = text(app, "#revenue")
        assert "$52.35/PH/day" in rev and "50,212 sats/PH/day" in rev
        assert "fees 1.3% of reward" in rev
        assert "24h +0.3%: price +3.2%  diff -2.6%  fees -0.3%" in rev
        assert "7d  -4.1%" in rev

        eco = text(app, "#economics")
        assert "$33.80" in eco and "+$16.98 profit" in eco
        assert "$0.095/kWh" in eco and "$69,400" in eco and "$91,800" in eco
        assert "+13.6% above" in eco

        blocks = text(app, "#blocks")
        assert "901,000" in blocks and "Foundry USA" in blocks and "AntPool" in blocks
        assert "4m 57s" in blocks  # first seen 3 s after its header time, 300 s ago
        assert "10m 30s" in blocks and "3,709" in blocks and "0.049" in blocks
        assert "3.174" in blocks

        alerts = text(app, "#alerts")
        assert "FIRING" in alerts and "hashprice_low 12m 00s" in alerts
        assert "PENDING" in alerts and "tip_age_high 1m 30s" in alerts
        assert "RESOLVED price_drop" in alerts  # history from the store

        feeds = text(app, "#feeds")
        assert "bitstamp STALE 1m 35s r3" in feeds and "coinbase live 1s r1" in feeds
        assert "REPLAY" in app.sub_title


async def test_compact_layout_at_80x24_keeps_the_key_figures(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.screen.has_class("-narrow") and app.screen.has_class("-short")
        shown = screen_text(app)
        for needle in ("$104,250", "905.6", "126.40 T", "$52.35/PH/day", "+$16.98", "901,000"):
            assert needle in shown, needle
        assert "FIRING" in shown and "bitstamp STALE" in shown
        assert "Hashrate (EH/s)" in shown  # the unit moves to the title when narrow


async def test_missing_values_show_a_dash_never_a_number():
    rt = FakeRuntime([snapshot(hashprice=None, hashvalue=None, fees_avg_144=None, price_usd=None)])
    app = make_app(None, rt, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        rev = text(app, "#revenue")
        assert rev.splitlines()[0].strip() == "—  —"
        assert "excl. fees" in rev and "n/a" in rev  # no history: no change to explain
        assert text(app, "#price").startswith("—")
        assert "no blocks yet" in text(app, "#blocks")


async def test_stale_values_are_marked_in_text(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        assert "(stale)" not in text(app, "#revenue")
        runtime.publish(snapshot(stale=frozenset({"price_usd", "hashprice"}), price_age_s=240.0))
        await settle(app, pilot)
        assert "$104,250 (stale)" in text(app, "#price")
        assert "$52.35/PH/day (stale)" in text(app, "#revenue")
        assert "(stale)" not in text(app, "#difficulty")


async def test_alert_appears_then_resolves():
    rt = FakeRuntime([snapshot()])
    app = make_app(None, rt, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        assert "nothing firing or pending" in text(app, "#alerts")
        rt.publish(firing(at=NOW - 60))
        await settle(app, pilot)
        alerts = text(app, "#alerts")
        assert "FIRING" in alerts and "hashprice_low 1m 00s" in alerts
        rt.publish(resolved(at=NOW))
        await settle(app, pilot)
        panel = app.query_one(AlertsPanel)
        assert panel.active == {}
        alerts = text(app, "#alerts")
        assert "nothing firing or pending" in alerts
        assert "RESOLVED hashprice_low" in alerts and "FIRING hashprice_low" in alerts


async def test_silence_submits_the_action(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        assert app.query_one(AlertsPanel).selected.rule == "hashprice_low"  # firing first
        await pilot.press("s")
        assert isinstance(app.screen, SilenceScreen)
        await pilot.press("4")
        await pilot.pause()
        assert runtime.actions == [("silence", {"rule": "hashprice_low", "seconds": 4 * 3600})]
        assert "silenced 4h 00m" in text(app, "#alerts")
        # select the other alert, silence 24 h through the option list
        await pilot.press("down", "s", "down", "down", "enter")
        await pilot.pause()
        assert runtime.actions[-1] == ("silence", {"rule": "tip_age_high", "seconds": 86400})
        await pilot.press("s", "escape")
        assert len(runtime.actions) == 2  # cancelled: nothing submitted
        await pilot.press("u")
        assert runtime.actions[-1] == ("unsilence", {"rule": "tip_age_high"})


async def test_pause_stops_repaints_and_resume_catches_up(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        assert app.paused and "PAUSED" in app.sub_title
        runtime.publish(snapshot(price_usd=99_000.0), PriceTick("kraken", 99_001.0, NOW, NOW))
        await settle(app, pilot)
        price = app.query_one(PricePanel)
        assert price.snapshot.values["price_usd"] == 104_250.0
        assert "$104,250" in text(app, "#price")
        await pilot.press("p")
        await pilot.pause()
        assert "PAUSED" not in app.sub_title
        assert price.snapshot.values["price_usd"] == 99_000.0
        assert price.ticks["kraken"].price_usd == 99_001.0


async def test_reload_and_test_alert_submit_actions(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("r", "t")
        assert runtime.actions == [("reload", {}), ("test_alert", {})]


async def test_failed_action_is_reported_not_fatal(runtime):
    def boom(action, **args):
        raise OSError("database is locked")

    runtime.submit_action = boom
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert app.is_running
        assert any("database is locked" in str(n.message) for n in app._notifications)


async def test_help_opens_and_closes(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        shown = screen_text(app)
        for word in ("Quit", "Pause", "Reload", "Test alert", "Silence", "Help"):
            assert word in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_refresh_rate_and_theme_keys(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.refresh_rate == 4.0
        await pilot.press("minus", "minus")
        assert app.refresh_rate == 1.0 and "1/s" in app.sub_title
        await pilot.press("plus", "plus", "plus")
        assert app.refresh_rate == 4.0  # capped at 4 repaints a second
        before = app.current_theme.dark
        await pilot.press("d")
        assert app.current_theme.dark is not before
        await pilot.press("d")
        assert app.current_theme.dark is before


async def test_every_action_is_in_the_command_palette(runtime):
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=(80, 24)):
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title in (
            "Quit",
            "Pause / resume display",
            "Reload config",
            "Send test alert",
            "Faster refresh",
            "Slower refresh",
            "Toggle theme",
            "Help",
            "Silence selected alert",
        ):
            assert title in titles
        ids = {b.id for b in app.BINDINGS}
        assert {"quit", "pause", "reload", "test_alert", "faster", "slower", "theme", "help"} <= ids


async def test_config_is_read_with_defaults():
    ui = SimpleNamespace(ui=SimpleNamespace(refresh_per_second=2, theme="light", compact="always"))
    app = make_app(ui, FakeRuntime(), clock=Clock())
    async with app.run_test(size=WIDE):
        assert app.refresh_rate == 2.0
        assert app.theme == "textual-light"
        assert app.screen.has_class("-narrow")  # compact forced on a wide terminal


async def test_history_is_read_on_mount_and_after_blocks_not_on_a_timer(runtime):
    clock = Clock()
    app = make_app(None, runtime, clock=clock)
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        loads = app.history_loads
        for _ in range(5):
            app.flush()
            app._tick()
            await pilot.pause()
        assert app.history_loads == loads  # nothing new: no reads
        runtime.publish(block(TIP + 1, at=NOW - 10))
        await settle(app, pilot, history_loads=loads + 1)
        assert app.history_loads == loads + 1
        rows = app.query_one(BlocksPanel).rows
        assert rows[0].height == TIP + 1


async def test_ages_tick_from_memory(runtime):
    clock = Clock()
    app = make_app(None, runtime, clock=clock)
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        assert "4m 57s" in text(app, "#blocks")
        clock.t += 63
        app._tick()
        await pilot.pause()
        assert "6m 00s" in text(app, "#blocks")
        assert "coinbase $104,252 1m 04s stale" in text(app, "#price")


async def test_runtime_failure_is_shown_not_fatal():
    class Broken(FakeRuntime):
        async def run(self) -> None:
            self.ran.set()
            raise RuntimeError("no route to host")

    rt = Broken()
    app = make_app(None, rt, clock=Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.is_running and "RUNTIME STOPPED" in app.sub_title


async def test_first_frame_does_not_wait_for_the_runtime():
    class Slow(FakeRuntime):
        async def run(self) -> None:
            self.ran.set()
            await __import__("asyncio").Event().wait()  # never publishes anything

    app = make_app(None, Slow(), clock=Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = screen_text(app)
        assert "Price BTC/USD" in shown and "—" in shown and "no blocks yet" in shown


def test_importing_the_app_does_not_import_apprise():
    code = "import sys, tui.app; assert 'apprise' not in sys.modules, 'apprise imported'"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(pathlib.Path(__file__).parents[1]),
    )


# ---- pure pieces --------------------------------------------------------------------------
def test_display_buffer_keeps_newest_per_key_and_every_block():
    buf = bridge.DisplayBuffer()
    for i in range(100):
        buf.note(PriceTick("kraken", 100.0 + i, NOW + i, NOW + i))
        buf.note(MetricsSnapshot(at=NOW + i, values={"price_usd": 100.0 + i}))
    buf.note(block(TIP, at=NOW))
    buf.note(block(TIP + 1, at=NOW))
    p = buf.drain()
    assert p.ticks["kraken"].price_usd == 199.0 and p.snapshot.at == NOW + 99
    assert [b.height for b in p.blocks] == [TIP, TIP + 1]
    assert buf.drain().empty()


def test_high_rate_messages_replace_each_other_blocks_do_not():
    a = m.PriceUpdated(PriceTick("kraken", 1.0, NOW, NOW))
    b = m.PriceUpdated(PriceTick("kraken", 2.0, NOW, NOW))
    c = m.PriceUpdated(PriceTick("coinbase", 2.0, NOW, NOW))
    assert b.can_replace(a) and not c.can_replace(a)
    assert m.MetricsUpdated(snapshot()).can_replace(m.MetricsUpdated(snapshot()))
    blk: Block = block(TIP, at=NOW)
    assert not m.BlockArrived(blk).can_replace(m.BlockArrived(blk))


def test_blocks_merge_handles_reorgs():
    rows = merge((), [m.BlockRow(h, f"a{h}", h, h) for h in range(10, 15)])
    assert [r.height for r in rows] == [14, 13, 12, 11, 10]
    rows = merge(rows, [m.BlockRow(12, "b12", 12, 12)])  # reorg at 12: 13 and 14 go
    assert [(r.height, r.hash) for r in rows] == [(12, "b12"), (11, "a11"), (10, "a10")]


def test_revenue_attribution_adds_up():
    now = {
        "price_usd": 104_000.0,
        "difficulty": 126e12,
        "subsidy_sats": 312_500_000.0,
        "fees_avg_144": 4e6,
    }
    then = {
        "price_usd": 100_000.0,
        "difficulty": 120e12,
        "subsidy_sats": 312_500_000.0,
        "fees_avg_144": 6e6,
    }
    c = attribute(now, then)
    assert c is not None
    expected = (104 / 100) * (120 / 126) * (316.5 / 318.5) * 100 - 100
    assert math.isclose(c.total_pct, expected, rel_tol=1e-9)
    assert math.isclose(c.price_pct + c.difficulty_pct + c.fees_pct, c.total_pct, rel_tol=1e-9)
    assert c.price_pct > 0 > c.difficulty_pct and c.fees_pct < 0
    assert attribute(now, {**then, "price_usd": None}) is None


@pytest.mark.parametrize(
    ("value", "func", "expected"),
    [
        (905.63e18, fmt.hashrate, "905.6 EH/s"),
        (126.4e12, fmt.difficulty, "126.40 T"),
        (52.345, fmt.hashprice, "$52.35/PH/day"),  # float rounding of .345 is fine either way
        (None, fmt.hashprice, "—"),
        (float("nan"), fmt.usd, "—"),
        (-0.04, fmt.pct, "+0.0%"),
        (59, fmt.duration, "59s"),
        (3725, fmt.duration, "1h 02m"),
        (91200, fmt.duration, "1d 1h"),
        (-5, fmt.age, "0s"),
    ],
)
def test_format(value, func, expected):
    out = func(value)
    assert out == expected or (func is fmt.hashprice and out in ("$52.34/PH/day", "$52.35/PH/day"))


def test_sparkline_and_chart_shapes():
    assert fmt.sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert len(fmt.sparkline(list(range(1000)), 40)) == 40
    assert fmt.sparkline([None, None], 10) == ""
    rows = fmt.chart([1.0, 2.0, 3.0], 3, 2)
    assert len(rows) == 2 and rows[1][2] == "█" and rows[0][0] == " "
    assert fmt.uncertainty_pct("7d") == pytest.approx(100 / math.sqrt(1008))


async def test_no_color_is_respected_and_meaning_stays_in_text(monkeypatch, runtime):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(None, runtime, clock=Clock())
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        shown = screen_text(app)
        assert "STALE" in shown and "FIRING" in shown and "profit" in shown


async def test_a_burst_of_ticks_costs_a_few_repaints_not_one_each(runtime, monkeypatch):
    renders = 0
    original = PricePanel.render

    def counting(self):
        nonlocal renders
        renders += 1
        return original(self)

    monkeypatch.setattr(PricePanel, "render", counting)
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        before = renders
        for i in range(500):
            runtime.publish(PriceTick("kraken", 104_000.0 + i, NOW, NOW))
        await settle(app, pilot)
        assert app.query_one(PricePanel).ticks["kraken"].price_usd == 104_499.0
        assert renders - before <= 5


async def test_feed_detail_flags_are_shown(runtime):
    from feeds.events import FeedState, FeedStatus

    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        runtime.publish(
            FeedStatus(
                "kraken",
                FeedState.LIVE,
                NOW,
                NOW,
                last_message_at=NOW,
                detail="price deviates 2.4% from median",
            )
        )
        await settle(app, pilot)
        assert "kraken live 0s ! price deviates 2.4% from median" in text(app, "#feeds")


async def test_feed_age_follows_data_not_only_status_events(runtime):
    clock = Clock()
    app = make_app(None, runtime, clock=clock)
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        clock.t += 600
        runtime.publish(PriceTick("coinbase", 104_300.0, clock.t - 1, clock.t - 1))
        await settle(app, pilot)
        app._tick()
        await pilot.pause()
        feeds = text(app, "#feeds")
        assert "coinbase live 1s" in feeds  # a status event 10 minutes old, a tick 1 s old
        assert "kraken live 10m 02s" in feeds


async def test_alert_history_skips_no_data_churn():
    from feeds.events import AlertState, AlertTransition

    churn = AlertTransition(
        rule="block-gap",
        severity="warning",
        previous=AlertState.INACTIVE,
        state=AlertState.NO_DATA,
        at=NOW - 5,
        value=None,
        threshold=None,
        message="warming up",
    )
    rt = FakeRuntime([snapshot(), churn, firing()])
    app = make_app(None, rt, clock=Clock())
    async with app.run_test(size=WIDE) as pilot:
        await settle(app, pilot)
        alerts = text(app, "#alerts")
        assert "FIRING hashprice_low" in alerts and "block-gap" not in alerts


@pytest.mark.parametrize(("size", "shown"), [((80, 24), False), (WIDE, True)])
async def test_disabled_standby_feeds_only_on_wide_screens(runtime, size, shown):
    from feeds.events import FeedState, FeedStatus

    runtime.script.insert(0, FeedStatus("kraken_ticker", FeedState.DISABLED, NOW, NOW))
    app = make_app(None, runtime, clock=Clock())
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        feeds = text(app, "#feeds")
        assert ("kraken_ticker DISABLED" in feeds) is shown
        assert "bitstamp STALE" in feeds
