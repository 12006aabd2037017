"""A scripted stand-in for the runtime (tui.runtime_api.RuntimeLike) plus fixed sample data.

It publishes events on a real ``feeds.bus.Bus`` and records operator actions. The sample
data is deterministic (a frozen clock at ``NOW``) so snapshot tests are stable.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from typing import Any

from feeds.bus import Bus
from feeds.events import (
    AlertState,
    AlertTransition,
    Block,
    DailyPoint,
    Event,
    FeedState,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)
from feeds.store import Store

NOW = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
DAY = 86400
TIP = 901_000
D = 126.4e12


class FakeRuntime:
    def __init__(
        self,
        script: list[Event] | None = None,
        *,
        db_path: pathlib.Path | None = None,
        demo: bool = False,
        attach: bool = False,
    ) -> None:
        self.bus = Bus()
        self.db_path = db_path
        self.demo = demo
        self.attach = attach
        self.script = list(script or [])
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.ran = asyncio.Event()
        self.cancelled = False

    async def run(self) -> None:
        for event in self.script:
            self.bus.publish(event)
        self.ran.set()
        try:
            await asyncio.Event().wait()  # like the real runtime: runs until cancelled
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def submit_action(self, action: str, **args: Any) -> None:
        self.actions.append((action, args))

    def publish(self, *events: Event) -> None:
        for e in events:
            self.bus.publish(e)

    def pending(self) -> int:
        return sum(sub.pending() for sub in self.bus._subs)


async def settle(app: Any, pilot: Any, *, history_loads: int = 1, rounds: int = 300) -> None:
    """Let the bridge drain the bus and the history read land, then repaint once."""
    runtime = app.runtime
    for _ in range(rounds):
        await pilot.pause()
        app.flush()  # also starts a history read a new block asked for
        if (
            runtime.ran.is_set()
            and runtime.pending() == 0
            and app._message_queue.empty()
            and app.history_loads >= history_loads
            and not app._history_running
            and not app._history_dirty
        ):
            break
    app.flush()
    await pilot.pause()


# ---- fixed sample data -----------------------------------------------------------------
def values(**overrides: float | None) -> dict[str, float | None]:
    v: dict[str, float | None] = {
        "price_usd": 104_250.0,
        "price_age_s": 2.0,
        "price_feeds_live": 3.0,
        "tip_height": float(TIP),
        "tip_time": NOW - 300,
        "tip_age_s": 300.0,
        "difficulty": D,
        "difficulty_change_pct": 1.56,
        "difficulty_projected_change_pct": -2.37,
        "difficulty_projected_band_pct": 3.4,
        "retarget_height": 903_168.0,
        "retarget_blocks_remaining": 2168.0 - 2016 + 0.0,
        "retarget_eta": NOW + 152 * 600 + 0.0,
        "hashrate_1d": 880.4e18,
        "hashrate_3d": 902.1e18,
        "hashrate_7d": 905.6e18,
        "hashrate_30d": 889.9e18,
        "hashrate_implied": D * 2**32 / 600,
        "hashrate_peak_30d": 931.0e18,
        "hashrate_peak_90d": 958.0e18,
        "subsidy_sats": 312_500_000.0,
        "fees_avg_144": 4_100_000.0,
        "hashvalue": 50_212.0,
        "hashprice": 52.35,
        "hashcost_energy": 28.80,
        "hashcost": 33.80,
        "hashprice_net": 50.78,
        "margin": 16.98,
        "breakeven_power_usd_per_kwh": 0.0953,
        "production_cost_usd": 69_400.0,
        "network_production_cost_usd": 91_800.0,
        "price_to_cost_pct": 13.56,
        "hash_ribbon_30_60": 1.02,
        "block_gap_probability": 0.61,
    }
    v.update(overrides)
    return v


def snapshot(
    at: float = NOW, stale: frozenset[str] = frozenset(), **overrides: float | None
) -> MetricsSnapshot:
    return MetricsSnapshot(at=at, values=values(**overrides), stale=stale)


def block(height: int, *, at: float, pool: str = "Foundry USA", backfill: bool = False) -> Block:
    return Block(
        height=height,
        hash=f"{height:064x}",
        prev_hash=f"{height - 1:064x}",
        time=int(at),
        bits=0x17023A04,
        source="mempool",
        received_at=at + 3,
        difficulty=D,
        tx_count=3000 + height % 997,
        fees_sats=4_000_000 + (height % 13) * 100_000,
        reward_sats=312_500_000 + 4_000_000 + (height % 13) * 100_000,
        pool=pool,
        backfill=backfill,
    )


def ticks(at: float = NOW) -> list[PriceTick]:
    return [
        PriceTick("coinbase", 104_251.5, at - 1, at - 1),
        PriceTick("kraken", 104_249.0, at - 2, at - 2),
        PriceTick("bitstamp", 104_180.0, at - 95, at - 95),
    ]


def feed_statuses(at: float = NOW) -> list[FeedStatus]:
    return [
        FeedStatus("mempool", FeedState.LIVE, at - 3600, at, last_message_at=at - 4),
        FeedStatus("coinbase", FeedState.LIVE, at - 3600, at, last_message_at=at - 1, reconnects=1),
        FeedStatus("kraken", FeedState.LIVE, at - 3600, at, last_message_at=at - 2),
        FeedStatus(
            "bitstamp",
            FeedState.STALE,
            at - 90,
            at,
            last_message_at=at - 95,
            reconnects=3,
            last_error="no message for 95 s",
        ),
    ]


def firing(rule: str = "hashprice_low", at: float = NOW - 720) -> AlertTransition:
    return AlertTransition(
        rule=rule,
        severity="warning",
        previous=AlertState.PENDING,
        state=AlertState.FIRING,
        at=at,
        value=52.35,
        threshold=55.0,
        message="hashprice below $55/PH/day",
    )


def resolved(rule: str = "hashprice_low", at: float = NOW) -> AlertTransition:
    return AlertTransition(
        rule=rule,
        severity="warning",
        previous=AlertState.FIRING,
        state=AlertState.RESOLVED,
        at=at,
        value=56.0,
        threshold=55.0,
        message="hashprice back above $55/PH/day",
        fired_at=at - 720,
    )


def script(at: float = NOW) -> list[Event]:
    """Everything a dashboard shows, as a runtime would publish it."""
    events: list[Event] = [*feed_statuses(at), *ticks(at)]
    events += [block(TIP - i, at=at - 300 - i * 590 - (i % 3) * 40) for i in range(5, -1, -1)]
    events.append(
        AlertTransition(
            rule="tip_age_high",
            severity="critical",
            previous=AlertState.INACTIVE,
            state=AlertState.PENDING,
            at=at - 90,
            value=300.0,
            threshold=3600.0,
            message="no block for a while",
        )
    )
    events.append(firing())
    events.append(
        DailyPoint("mempool", day=int(at // DAY * DAY), received_at=at, hashrate_hs=905e18)
    )
    events.append(snapshot(at))
    return events


def make_history_db(path: pathlib.Path, now: float = NOW) -> pathlib.Path:
    """A small store with deterministic data, in the collector's real schema (feeds.store)."""
    Store.open(path).close()
    conn = sqlite3.connect(path)
    start_min = int((now - DAY) // 60)
    conn.executemany(
        "INSERT INTO candles VALUES ('ref', ?, ?, ?, ?, ?, 1)",
        [
            (m * 60, p, p, p, p)
            for i, m in enumerate(range(start_min, int(now // 60) + 1))
            for p in [100_000.0 + 4_250.0 * i / 1440 + 600.0 * ((i % 180) / 180 - 0.5)]
        ],
    )
    today = int(now // DAY * DAY)
    conn.executemany(
        "INSERT INTO daily_history VALUES (?, 'mempool', ?, ?, NULL)",
        [
            (today - k * DAY, (850 + 90 * ((k * 7) % 11) / 11 + k * 0.3) * 1e18, D)
            for k in range(120)
        ],
    )
    conn.executemany(
        "INSERT INTO blocks (hash, height, prev_hash, time, first_seen, bits, difficulty, "
        "work, tx_count, fees_sats, reward_sats, pool, orphaned, source) "
        "VALUES (?, ?, ?, ?, ?, 0, ?, '0', ?, ?, ?, ?, 0, 'mempool')",
        [
            (
                b.hash,
                b.height,
                b.prev_hash,
                b.time,
                float(b.time),
                D,
                b.tx_count,
                b.fees_sats,
                b.reward_sats,
                "AntPool" if b.height % 2 else "Foundry USA",
            )
            for b in (block(TIP - 6 - i, at=now - 300 - (6 + i) * 600) for i in range(20))
        ],
    )
    past = {
        "hashprice": 50.10,
        "price_usd": 101_000.0,
        "difficulty": 123.2e12,
        "fees_avg_144": 5_200_000.0,
        "subsidy_sats": 312_500_000.0,
    }
    week = {
        "hashprice": 55.70,
        "price_usd": 108_900.0,
        "difficulty": 126.4e12,
        "fees_avg_144": 3_600_000.0,
        "subsidy_sats": 312_500_000.0,
    }
    for when, vals in ((now - DAY, past), (now - 7 * DAY, week)):
        conn.executemany(
            "INSERT INTO metric_samples VALUES (?, ?, ?)",
            [(name, int(when // 60) * 60, v) for name, v in vals.items()],
        )
    conn.execute(
        "INSERT INTO alert_history (rule, severity, previous, state, at, value, threshold, "
        "message, fired_at) VALUES ('price_drop', 'info', 'firing', 'resolved', ?, -3.1, -5.0, "
        "'price recovered', ?)",
        (now - 5 * 3600, now - 6 * 3600),
    )
    conn.commit()
    conn.close()
    return path
