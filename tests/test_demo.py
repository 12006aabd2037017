"""The offline demo: DemoReplay against the real adapters, the replay clock, the temp
database, loopback-only servers, the derived/synthetic history and the data files' licences."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from feeds.bus import Bus
from feeds.demo import synth
from feeds.demo.replay import (
    BLOCKS_CSV,
    DATA_DIR,
    PREMINED_BLOCKS,
    DemoReplay,
    hashrate_history,
    load_headers,
    load_retargets,
    period_start_times,
)
from feeds.derive import implied_hashrate, retarget_bits
from feeds.events import Block, DailyPoint, FeedStatus, MetricsSnapshot, PriceTick
from feeds.sources.mempool_rest import MempoolRest, parse_hashrate, parse_historical_prices
from feeds.sources.registry import SOURCES
from feeds.transport import run_ws
from tests.support_mempool import wait_until
from tui.config import Config

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
RETARGET_AT = 941_472
OLD_BITS, NEW_BITS = 0x1701F0CC, 0x17021A91


def csv_rows() -> dict[int, tuple[int, int]]:
    with BLOCKS_CSV.open() as fh:
        return {int(r["height"]): (int(r["time"]), int(r["bits"], 16)) for r in csv.DictReader(fh)}


def ms_delays() -> Iterator[float]:
    return itertools.repeat(0.005)


class FakeMono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[list[asyncio.Task[object]]]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


# ------------------------------------------------------------------------ clock and config


def test_replay_clock_is_frozen_until_start_then_linear() -> None:
    mono = FakeMono()
    demo = DemoReplay(speed=600.0, monotonic=mono)
    tip_time = csv_rows()[937_440 + PREMINED_BLOCKS - 1][0]
    assert demo.start_height == 937_440 + PREMINED_BLOCKS
    assert demo.data0 >= tip_time
    mono.t += 50
    assert demo.clock() == demo.data0  # not started: frozen
    demo._mono0 = mono()  # what start() does
    mono.t += 2.5
    assert demo.clock() == pytest.approx(demo.data0 + 2.5 * 600)
    mono.t += 10
    assert demo.clock() == pytest.approx(demo.data0 + 12.5 * 600)
    assert demo._wall_delay(demo.data0 + 13.5 * 600) == pytest.approx(1.0)
    assert demo._wall_delay(demo.data0) == 0.0


def test_label_names_the_replayed_range_and_what_is_synthetic() -> None:
    demo = DemoReplay(speed=600)
    assert demo.label == "REPLAY of 2026-02-19..2026-03-25 at 600x (prices, fees, pools synthetic)"


def test_ticks_are_about_3_per_second_and_at_most_20_replay_seconds_apart() -> None:
    assert DemoReplay(speed=1).tick_interval_s == pytest.approx(1 / 3)
    assert DemoReplay(speed=60).tick_interval_s == pytest.approx(1 / 3)
    fast = DemoReplay(speed=600).tick_interval_s
    assert fast * 600 <= 20.0 + 1e-9 and fast >= 1 / 40
    assert DemoReplay(speed=60_000).tick_interval_s == pytest.approx(1 / 40)  # capped


@pytest.mark.parametrize("bad", [{"speed": 0}, {"speed": -1}, {"start_height": 937_440},
                                 {"start_height": 942_201}])  # fmt: skip
def test_bad_arguments_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DemoReplay(**bad)  # type: ignore[arg-type]


def test_configure_never_uses_the_operators_database(tmp_path: Path) -> None:
    operator = tmp_path / "operator.db"
    config = Config()
    config = dataclasses.replace(
        config, database=dataclasses.replace(config.database, path=str(operator))
    )
    demo = DemoReplay(speed=600)
    out = demo.configure(config)
    path = Path(out.database.path)
    assert path != operator and operator not in path.parents
    assert path.parent.is_dir() and path.parent.name.startswith("hashwatch-demo-")
    assert config.database.path == str(operator)  # the input is untouched (a copy came back)
    # windows on the replay clock widened to wall seconds; backfill bounded by the premine
    assert out.feeds.price_fresh_after >= 600 * 10
    assert out.feeds.clock_offset_warn >= 600 * 0.5
    assert out.feeds.backfill_blocks == PREMINED_BLOCKS
    assert demo.configure(config).database.path == out.database.path  # one temp dir
    demo.cleanup()
    assert not path.parent.exists()
    assert not operator.exists()


def test_configure_uses_db_path_when_given_and_cleanup_keeps_it(tmp_path: Path) -> None:
    chosen = tmp_path / "mine.db"
    chosen.write_bytes(b"")
    demo = DemoReplay(speed=600, db_path=chosen)
    out = demo.configure(Config())
    assert Path(out.database.path) == chosen
    demo.cleanup()
    assert chosen.exists()


# ------------------------------------------------------------------------ end to end


async def test_real_adapters_get_real_blocks_in_order_and_prices_from_every_exchange() -> None:
    rows = csv_rows()
    # start 12 blocks before the real retarget, so the replay crosses it within ~0.2 s
    demo = DemoReplay(speed=60_000, start_height=RETARGET_AT - 12, seed=3)
    config = demo.configure(Config())
    bus = Bus()
    sub = bus.subscribe([Block, PriceTick, FeedStatus, DailyPoint], maxsize=1_000_000, name="t")
    try:
        config = await demo.start(config)
        feeds = config.feeds
        # every source enabled and pointed at loopback servers only
        for name in ("mempool", "coinbase", "kraken", "bitstamp"):
            cfg = getattr(feeds, name)
            assert cfg.enabled
            for url in (cfg.ws_url, cfg.rest_url):
                assert urlsplit(url).hostname == "127.0.0.1", url
        for srv in [demo.mempool, *demo.exchanges.values()]:
            assert srv is not None
            for s in srv._runner.sites:  # type: ignore[union-attr]
                for sock in s._server.sockets:  # type: ignore[union-attr]
                    assert sock.getsockname()[0] == "127.0.0.1"

        adapters = [
            SOURCES[n](getattr(feeds, n).ws_url)
            for n in ("mempool", "coinbase", "kraken", "bitstamp")
        ]
        ws = [run_ws(a, bus, clock=demo.clock, reconnect_delays=ms_delays) for a in adapters]
        async with running(*ws):
            assert demo.mempool is not None
            await wait_until(lambda: demo.mempool.clients >= 1, 5.0)  # type: ignore[union-attr]
            # REST backfill of the 30 blocks below the server's tip, as the collector does
            rest = MempoolRest(
                feeds.mempool.rest_url,
                bus,
                store_tip=lambda: None,
                missing_heights=lambda lo, hi: list(range(lo, hi + 1)),
                clock=demo.clock,
            )
            try:
                assert await rest.backfill(30) == 30
                async with running(demo.run()):
                    seen: list[Block] = []
                    prices: dict[str, list[PriceTick]] = {}

                    def drain() -> bool:
                        for ev in sub.get_nowait():
                            if isinstance(ev, Block):
                                seen.append(ev)
                            elif isinstance(ev, PriceTick):
                                prices.setdefault(ev.source, []).append(ev)
                        live = [b.height for b in seen if not b.backfill]
                        return (
                            bool(live)
                            and max(live) >= RETARGET_AT + 40
                            and all(
                                len(prices.get(s, ())) >= 3
                                for s in ("coinbase", "kraken", "bitstamp")
                            )
                        )

                    await wait_until(drain, 10.0)
                    stopped_at = demo.clock()
            finally:
                await rest.close()
    finally:
        sub.close()
        await demo.stop()
        demo.cleanup()

    backfilled = [b for b in seen if b.backfill and b.source == "mempool"]
    assert {b.height for b in backfilled} >= set(range(RETARGET_AT - 42, RETARGET_AT - 12))
    for b in seen:  # every block carries the real header time and bits
        assert (b.time, b.bits) == rows[b.height], b.height
    live = [b for b in seen if not b.backfill]
    heights = [b.height for b in live]
    assert heights == list(range(heights[0], heights[0] + len(heights)))  # in order, no gaps
    assert heights[0] <= RETARGET_AT - 1
    assert {b.bits for b in live if b.height < RETARGET_AT} == {OLD_BITS}
    assert {b.bits for b in live if b.height >= RETARGET_AT} == {NEW_BITS}
    # pushed when the replay clock passed the header time (never before it)
    for b in live:
        assert b.received_at >= b.time - 1
    # the synthetic extras are present and in range
    assert all(b.fees_sats and 1e5 < b.fees_sats < 1e8 for b in live)
    assert all(b.pool in dict(synth.POOL_SHARES) for b in live)
    # prices: every exchange, stamped with the replay clock, near the synthetic anchor
    for source in ("coinbase", "kraken", "bitstamp"):
        ticks = prices[source]
        assert all(demo.data0 <= t.time <= stopped_at for t in ticks)
        assert all(abs(t.price_usd / synth.ANCHOR_PRICE_USD - 1) < 0.2 for t in ticks)
        assert [t.time for t in ticks] == sorted(t.time for t in ticks)


async def run_runtime_until(
    demo: DemoReplay, db: Path, want: Callable[[dict[str, float | None]], bool], within_s: float
) -> dict[str, float | None]:
    """Run feeds.runtime.Runtime (real adapters, writer, metrics) on the demo until the
    newest snapshot satisfies ``want``; return its values."""
    from feeds.runtime import Runtime, RuntimeOptions

    config = await demo.start(demo.configure(Config()))
    rt = Runtime(
        config,
        options=RuntimeOptions(
            clock=demo.clock, demo=True, reconnect_delays=ms_delays, extra_tasks=[demo.run]
        ),
    )
    sub = rt.bus.subscribe([MetricsSnapshot], maxsize=1_000_000, name="t")
    last: dict[str, float | None] = {}

    def ready() -> bool:
        nonlocal last
        snaps = sub.get_nowait()
        if snaps:
            last = snaps[-1].values  # type: ignore[attr-defined]
        return bool(last) and want(last)

    async with running(rt.run()):
        await wait_until(ready, within_s)
    return last


async def test_runtime_runs_the_demo_into_sqlite(tmp_path: Path) -> None:
    from feeds.store import Store

    demo = DemoReplay(speed=60_000, db_path=tmp_path / "demo.db")
    oldest = demo.start_height - PREMINED_BLOCKS

    def backfilled() -> bool:
        # The windows fill from the first backfilled blocks, long before the last page lands.
        with contextlib.closing(Store.open(tmp_path / "demo.db")) as store:
            return not store.missing_heights(oldest + 50, demo.start_height)

    try:
        values = await run_runtime_until(
            demo,
            tmp_path / "demo.db",
            lambda v: (
                v.get("price_usd") is not None
                and v.get("hashrate_1d") is not None
                and (v.get("tip_height") or 0) > demo.start_height + 200
                and backfilled()
            ),
            10.0,
        )
    finally:
        await demo.stop()
        demo.cleanup()
    assert abs(values["price_usd"] / synth.ANCHOR_PRICE_USD - 1) < 0.3  # type: ignore[operator]
    assert values["hashrate_30d"] is None  # 3,500 + 200 blocks: not 30 days, honestly null
    assert 0.6e21 < values["hashrate_1d"] < 1.6e21  # type: ignore[operator]
    store = Store.open(tmp_path / "demo.db")
    try:
        tip = store.tip()
        assert tip is not None and tip.height > demo.start_height + 200
        held = store.active_blocks(limit=10_000)
        # the REST backfill stored (about) the 3,500 premined blocks below the live ones
        assert min(b.height for b in held) <= demo.start_height - PREMINED_BLOCKS + 50
        assert not store.missing_heights(min(b.height for b in held), tip.height)
    finally:
        store.close()


async def test_runtime_7d_hashrate_comes_from_the_backfill_at_once(tmp_path: Path) -> None:
    """Regression: on a fresh database the websocket's newest blocks reach the metrics before
    the REST backfill, whose older blocks the chain state used to ignore (below the first
    block it saw), so these stayed null until ~1,000 live blocks had passed."""
    demo = DemoReplay(speed=60_000, db_path=tmp_path / "demo.db")
    wanted = (
        "hashrate_1d",
        "hashrate_3d",
        "hashrate_7d",
        "difficulty_change_pct",
        "difficulty_projected_change_pct",
        "fees_avg_144",
    )
    try:
        values = await run_runtime_until(
            demo,
            tmp_path / "demo.db",
            lambda v: (
                all(v.get(k) is not None for k in wanted)
                or (v.get("tip_height") or 0) > demo.start_height + 300
            ),
            6.0,
        )
    finally:
        await demo.stop()
        demo.cleanup()
    assert {k: values[k] for k in wanted if values[k] is None} == {}
    assert values["fees_included"] == 1.0
    assert 0.6e21 < values["hashrate_7d"] < 1.6e21  # type: ignore[operator]


# ------------------------------------------------------------------------ synthetic blocks


def test_synthetic_continuation_links_and_retargets_by_consensus() -> None:
    headers = load_headers()
    gen = DemoReplay(speed=600, start_height=942_190).upcoming()
    blocks = list(itertools.islice(gen, 10 + 1300 + 5))
    real, fake = blocks[:10], blocks[10:]
    assert [b.height for b in real] == list(range(942_190, 942_200))
    assert not any(b.synthetic for b in real) and all(b.synthetic for b in fake)
    assert fake[0].prev_hash == headers[-1].hash
    for a, b in itertools.pairwise(blocks):
        assert b.height == a.height + 1 and b.prev_hash == a.hash
    by_h = {h.height: h for h in headers} | {b.height: b for b in fake}
    boundary = 943_488
    assert {by_h[h].bits for h in range(942_200, boundary)} == {NEW_BITS}
    expected = retarget_bits(NEW_BITS, by_h[RETARGET_AT].time, by_h[boundary - 1].time)
    assert by_h[boundary].bits == expected
    # intervals: exponential around work / last week's hashrate (about 600 s at this difficulty)
    gaps = [b.time - a.time for a, b in itertools.pairwise(fake[:1200])]
    mean = sum(gaps) / len(gaps)
    assert min(gaps) >= 1
    assert 400 < mean < 900
    assert sum(g > 3 * mean for g in gaps) > 10  # a long tail, not a metronome


def test_synthetic_parts_are_deterministic_per_seed() -> None:
    a = [synth.block_extras(7, h) for h in range(940_000, 940_200)]
    assert a == [synth.block_extras(7, h) for h in range(940_000, 940_200)]
    assert a != [synth.block_extras(8, h) for h in range(940_000, 940_200)]
    fees = sorted(x.fees_sats for x in a)
    assert 1_500_000 < fees[len(fees) // 2] < 4_500_000  # median about 0.03 BTC
    assert len({x.pool for x in a}) >= 5
    assert synth.fake_hash(1, 2, 3) == synth.fake_hash(1, 2, 3) != synth.fake_hash(1, 2, 4)
    assert len(synth.fake_hash(1, 2, 3)) == 64
    assert math.isclose(sum(w for _, w in synth.POOL_SHARES), 100.0)


def test_price_walk_volatility_is_per_replay_time() -> None:
    walk = synth.PriceWalk(1, 0.0)
    logs = []
    prev = walk.mid
    for day in range(1, 2001):
        p = walk.advance(day * synth.DAY_S)
        logs.append(math.log(p / prev))
        prev = p
    sd = (sum(x * x for x in logs) / len(logs)) ** 0.5
    assert 0.022 < sd < 0.028
    assert walk.advance(0.0) == prev  # time never goes back


# ------------------------------------------------------------------------ history


def test_period_start_times_reconstruct_the_missing_ones() -> None:
    periods = load_retargets()
    starts = period_start_times(periods)
    assert set(range(1, 468)) <= set(starts)
    # known anchors kept exactly
    assert starts[465] == 1_771_527_275 and starts[436] == 1_736_712_111
    # 2026-01-08 (period 462): Hashrate Index reported the retarget to 146.47 T that day
    assert 1_767_830_400 <= starts[462] < 1_767_830_400 + 86_400
    spans = [starts[p + 1] - starts[p] for p in range(436, 467)]
    assert all(10 * 86_400 < s < 18 * 86_400 for s in spans)


def test_hashrate_history_is_implied_hashrate_per_day() -> None:
    periods = load_retargets()
    day0 = 1_772_755_200  # 2026-03-06, wholly inside period 466
    doc = hashrate_history(periods, day0 - 30 * 86_400, day0)
    points = parse_hashrate(doc, 0.0)
    assert len(points) == 31
    p466 = next(p for p in periods if p.period == 466)
    last = points[-1]
    assert last.day == day0
    assert last.hashrate_hs == pytest.approx(implied_hashrate(p466.difficulty))
    assert last.difficulty == pytest.approx(p466.difficulty)
    # the retarget day 2026-03-05 (17:28 UTC) mixes the two difficulties
    p465 = next(p for p in periods if p.period == 465)
    mixed = points[-2].hashrate_hs
    assert implied_hashrate(min(p465.difficulty, p466.difficulty)) < mixed  # type: ignore[operator]
    assert mixed < implied_hashrate(max(p465.difficulty, p466.difficulty))  # type: ignore[operator]


async def test_served_history_ends_before_the_replay_start_and_never_leaks_the_future() -> None:
    demo = DemoReplay(speed=600)
    rates, prices = demo._history()
    points = parse_hashrate(rates, demo.data0)
    assert 360 <= len(points) <= 366
    assert max(p.day for p in points) < demo.data0
    assert max(d["time"] for d in rates["difficulty"]) <= demo.data0
    daily = parse_historical_prices({"prices": [{"time": t, "USD": p} for t, p in prices]})
    assert len(daily) == 366
    assert daily[max(daily)] == synth.ANCHOR_PRICE_USD


# ------------------------------------------------------------------------ data and licences


def test_shipped_data_files_are_the_permitted_ones_unchanged() -> None:
    shipped = sorted(p.name for p in DATA_DIR.iterdir())
    assert shipped == ["SOURCES.md", "blocks_937440_942199.csv", "retargets.csv"]
    if SHARED.is_dir():
        for name in ("blocks_937440_942199.csv", "retargets.csv"):
            ours = hashlib.sha256((DATA_DIR / name).read_bytes()).digest()
            assert ours == hashlib.sha256((SHARED / name).read_bytes()).digest(), name
    text = (DATA_DIR / "SOURCES.md").read_text()
    for must in ("CC0", "MIT", "synthetic", "derived", "bitcoin-data/block-arrival-times"):
        assert must.lower() in text.lower(), must
    # the CC BY-NC file is neither shipped nor read by shipped code
    for py in (REPO / "feeds").rglob("*.py"):
        assert "btc_daily" not in py.read_text(), py
