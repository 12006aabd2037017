"""mempool.space REST source against the local demo server: backfill, restart, gap fill,
politeness (429/500/timeouts/in-flight bound) and the daily-history parsers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator

import pytest

from feeds.bus import Bus
from feeds.demo.mempool_server import MempoolDemoServer
from feeds.errors import FatalFeedError, FeedError
from feeds.events import BackfillProgress, Block, DailyPoint
from feeds.http import PoliteHttp
from feeds.sources.mempool_rest import (
    MempoolRest,
    parse_hashrate,
    parse_historical_prices,
    parse_tip_height,
    plan_pages,
)
from feeds.sources.mempool_ws import MempoolWs
from feeds.transport import BadFrame, run_ws
from tests.support_mempool import BlockStore, fixture, fixture_text, ms_delays, wait_until

DAY = 86_400


def fast_retries() -> object:
    return iter([0.001] * 4)


@pytest.fixture
async def server() -> AsyncIterator[MempoolDemoServer]:
    async with MempoolDemoServer() as srv:
        for _ in range(100):  # heights 890000..890099
            await srv.add_block(push=False)
        yield srv


def make_rest(
    srv: MempoolDemoServer, store: BlockStore, bus: Bus, **http_kw: object
) -> MempoolRest:
    http = PoliteHttp("mempool-rest", srv.rest_url, retry_delays=fast_retries, **http_kw)  # type: ignore[arg-type]
    return MempoolRest(
        srv.rest_url,
        bus,
        store_tip=store.tip,
        missing_heights=store.missing_heights,
        http=http,
    )


def pages_cover_each_height_once(srv: MempoolDemoServer) -> list[int]:
    heights: list[int] = []
    for end in srv.block_page_requests:
        heights.extend(range(end - 14, end + 1))
    assert len(heights) == len(set(heights)), "a height was requested twice"
    return heights


# --- parsers --------------------------------------------------------------------------------


def test_tip_height_is_text_plain() -> None:
    assert parse_tip_height(fixture_text("rest_blocks_tip_height.docs.txt")) == 698767
    for bad in ["", "abc", "-5", "1e5", "12 34", "９"]:
        with pytest.raises(BadFrame):
            parse_tip_height(bad)


def test_hashrate_uses_time_for_difficulty_and_day_before_timestamp() -> None:
    doc = fixture("rest_v1_mining_hashrate_3d.docs.json")
    # The real backend emits ``time``; make the docs' ``timestamp`` disagree to prove which
    # one is read.
    doc["difficulty"] = [
        {"time": 1652400000, "timestamp": 1652700000, "height": 736000, "difficulty": 30e12,
         "adjustment": 1.01},
        {"time": 1652530000, "timestamp": 1652300000, "height": 736249, "difficulty": 31e12,
         "adjustment": 1.033},
    ]  # fmt: skip
    pts = parse_hashrate(doc, 5.0)
    assert [p.day for p in pts] == [1652486400 - DAY, 1652572800 - DAY, 1652659200 - DAY]
    assert pts[0].hashrate_hs == pytest.approx(2.364997621087718e20)
    # day ending 1652486400: only the adjustment at time 1652400000 is before its end
    assert [p.difficulty for p in pts] == [30e12, 31e12, 31e12]
    assert all(p.source == "mempool" and p.price_usd is None for p in pts)


def test_hashrate_skips_bad_items_and_rejects_bad_documents() -> None:
    doc = {
        "hashrates": [{"timestamp": "x", "avgHashrate": 1}, 7, {"timestamp": 86400 * 3,
                      "avgHashrate": 5e20}],
        "difficulty": [{"time": None}, "z"],
    }  # fmt: skip
    (p,) = parse_hashrate(doc, 0.0)
    assert (p.day, p.hashrate_hs, p.difficulty) == (2 * DAY, 5e20, None)
    for bad in [[], {"hashrates": {}}, {"hashrates": [], "difficulty": 3}, "x"]:
        with pytest.raises(BadFrame):
            parse_hashrate(bad, 0.0)


def test_historical_prices_daily_last_sample() -> None:
    doc = fixture("rest_v1_historical_price_EUR_1500000000.docs.json")
    assert parse_historical_prices(doc) == {1499904000: 2254.9}
    doc = {
        "prices": [
            {"time": 10 * DAY + 3600, "USD": 100},
            {"time": 10 * DAY + 7200, "USD": 110},
            {"time": 11 * DAY, "USD": -1},
            {"time": 12 * DAY, "USD": "5"},
        ],
        "exchangeRates": {},
    }
    assert parse_historical_prices(doc) == {10 * DAY: 110.0}


def test_plan_pages_never_overlap() -> None:
    assert plan_pages([]) == []
    pages = plan_pages(set(range(1, 31)) | {100})
    assert [top for top, _ in pages] == [100, 30, 15]
    assert sorted(h for _, w in pages for h in w) == [*range(1, 31), 100]


# --- against the demo server ---------------------------------------------------------------


async def test_backfill_fetches_each_height_once_with_progress(
    server: MempoolDemoServer,
) -> None:
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    try:
        n = await rest.backfill(60)
    finally:
        await rest.close()
    assert n == 60
    assert server.hits["/api/blocks/tip/height"] == 1
    assert len(server.block_page_requests) == 4  # 60 heights / 15 per page
    pages_cover_each_height_once(server)
    store.drain()
    assert sorted(store.active) == list(range(890040, 890100))
    assert all(b.backfill for b in store.block_events)
    assert len(store.block_events) == 60  # every block exactly once
    for b in store.block_events:
        assert b.hash == server.chain.blocks[b.height].hash
        assert b.fees_sats == server.chain.blocks[b.height].fees_sats
    progress = [e for e in store.events if isinstance(e, BackfillProgress)]
    assert progress[0].done == 0
    assert (progress[-1].done, progress[-1].total, progress[-1].what) == (60, 60, "blocks")


async def test_restart_fetches_only_missing_heights(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    await rest.backfill(60)
    await rest.close()
    # "restart": 5 new blocks upstream, and a hole punched in the middle of the store
    for _ in range(5):
        await server.add_block(push=False)
    for h in (890050, 890051):
        store.forget(h)
    server.block_page_requests.clear()
    events_before = len(store.block_events)
    rest2 = make_rest(server, store, bus)
    try:
        await rest2.backfill(60)
    finally:
        await rest2.close()
    assert server.block_page_requests == [890104, 890051]
    store.drain()
    fetched = {b.height for b in store.block_events[events_before:]}
    assert fetched == {890100, 890101, 890102, 890103, 890104, 890050, 890051}
    assert sorted(store.active) == list(range(890040, 890105))


async def test_gap_after_reconnect_is_filled(server: MempoolDemoServer) -> None:
    """Websocket down while 20 blocks are mined; on reconnect the want reply brings the 8
    newest; the tip check finds the 12 below them and fetches only those."""
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    await rest.backfill(30)
    adapter = MempoolWs(server.ws_url)
    task = asyncio.create_task(run_ws(adapter, bus, reconnect_delays=ms_delays))
    try:
        await wait_until(lambda: server.clients == 1 and store.tip() == 890099)
        await server.drop_connections()
        for _ in range(20):
            await server.add_block(push=False)
        await wait_until(lambda: store.tip() == 890119)
        assert store.missing_heights(890100, 890119) == list(range(890100, 890112))
        server.block_page_requests.clear()
        tip = await rest.check_tip()
        assert tip == 890119
        assert store.missing_heights(890070, 890119) == []
        assert server.block_page_requests == [890111]  # one page, the 12 missing heights
        # a second check has nothing to do: no block page requested
        await rest.check_tip()
        assert server.block_page_requests == [890111]
        for h, hash_ in store.active.items():
            assert server.chain.blocks[h].hash == hash_
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rest.close()


async def test_gap_fill_counts_heights_not_minutes(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    try:
        await rest.backfill(20)
        server.block_page_requests.clear()
        await rest.check_tip()  # nothing new upstream, however long since the last block
        assert server.block_page_requests == []
        await server.add_block(push=False)
        assert await rest.gap_fill(890100) == 1
        assert store.tip() == 890100
    finally:
        await rest.close()


async def test_429_retry_after_is_honoured(server: MempoolDemoServer) -> None:
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/v1/blocks/", status=429, retry_after="4")
    rest = make_rest(server, store, bus, sleep=fake_sleep, max_in_flight=1)
    try:
        await rest.backfill(15)
    finally:
        await rest.close()
    assert sleeps and sleeps[0] == pytest.approx(4.0, abs=0.05)
    assert sorted(store.active) == list(range(890085, 890100))
    assert server.hits["/api/v1/blocks/890099"] == 2


async def test_500s_and_timeouts_are_retried(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/blocks/tip/height", status=500, times=2)
    server.fail_rest("/v1/blocks/", status=200, delay_s=0.3, times=1)  # slow: client times out
    rest = make_rest(server, store, bus, timeout=0.05)
    try:
        await rest.backfill(15)
    finally:
        await rest.close()
    assert server.hits["/api/blocks/tip/height"] == 3
    assert server.hits["/api/v1/blocks/890099"] == 2
    assert len(store.active) == 15
    assert rest.http.retries == 3


async def test_failed_page_is_retried_by_next_gap_fill(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/v1/blocks/890084", status=503, times=10)
    rest = make_rest(server, store, bus)
    try:
        await rest.backfill(30)
        assert store.missing_heights(890070, 890099) == list(range(890070, 890085))
        assert rest.failed == set(range(890070, 890085))
        server.rest_faults.clear()
        await rest.check_tip()
        assert store.missing_heights(890070, 890099) == []
        assert rest.failed == set()
    finally:
        await rest.close()


async def test_fatal_404_is_raised(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/v1/blocks/", status=404, times=100)
    rest = make_rest(server, store, bus)
    try:
        with pytest.raises(FatalFeedError):
            await rest.backfill(60)
    finally:
        await rest.close()
    assert server.hits["/api/v1/blocks/890099"] == 1


async def test_at_most_two_requests_in_flight(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/v1/blocks/", status=200, delay_s=0.01, times=100)  # slow pages
    rest = MempoolRest(
        server.rest_url, bus, store_tip=store.tip, missing_heights=store.missing_heights
    )
    try:
        await rest.backfill(100)
    finally:
        await rest.close()
    assert server.rest_max_in_flight == 2  # measured at the server
    assert len(server.block_page_requests) == 7
    assert len(store.active) == 100


async def test_backfill_history_merges_hashrate_and_prices(server: MempoolDemoServer) -> None:
    now = 1_743_400_000.0
    today = int(now) // DAY * DAY
    server.hashrate_payload = {
        "hashrates": [
            {"timestamp": today - DAY, "avgHashrate": 8e20},
            {"timestamp": today, "avgHashrate": 9e20},
            {"timestamp": today - 400 * DAY, "avgHashrate": 1e20},  # older than a year
        ],
        "difficulty": [{"time": today - 3 * DAY, "height": 1, "difficulty": 1.1e14,
                        "adjustment": 1.05}],
        "currentHashrate": 9e20,
        "currentDifficulty": 1.1e14,
    }  # fmt: skip
    server.set_daily_prices([(today - DAY + 60, 84_000.0), (today - 5 * DAY, 80_000.0)])
    bus = Bus()
    store = BlockStore(bus)
    rest = MempoolRest(
        server.rest_url,
        bus,
        store_tip=store.tip,
        missing_heights=store.missing_heights,
        clock=lambda: now,
    )
    try:
        assert await rest.backfill_history() == 3
    finally:
        await rest.close()
    store.drain()
    pts = {p.day: p for p in store.events if isinstance(p, DailyPoint)}
    assert set(pts) == {today - 5 * DAY, today - 2 * DAY, today - DAY}
    assert (pts[today - DAY].hashrate_hs, pts[today - DAY].price_usd) == (9e20, 84_000.0)
    assert pts[today - DAY].difficulty == 1.1e14
    assert (pts[today - 2 * DAY].hashrate_hs, pts[today - 2 * DAY].price_usd) == (8e20, None)
    assert (pts[today - 5 * DAY].hashrate_hs, pts[today - 5 * DAY].price_usd) == (None, 80_000.0)
    assert server.hits["/api/v1/mining/hashrate/1y"] == 1


async def test_history_failure_is_retried_later(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    server.fail_rest("/v1/mining/hashrate", status=500, times=100)
    now = [1_743_400_000.0]
    rest = MempoolRest(
        server.rest_url,
        bus,
        store_tip=store.tip,
        missing_heights=store.missing_heights,
        http=PoliteHttp("m", server.rest_url, retry_delays=fast_retries),
        clock=lambda: now[0],
    )
    try:
        await rest.backfill(15)
        await rest.backfill_history()
        hits = server.hits["/api/v1/mining/hashrate/1y"]
        await rest.check_tip()  # too soon: no retry
        assert server.hits["/api/v1/mining/hashrate/1y"] == hits
        server.rest_faults.clear()
        now[0] += 3601
        await rest.check_tip()
        assert server.hits["/api/v1/mining/hashrate/1y"] == hits + 1
    finally:
        await rest.close()


async def test_garbage_page_is_a_feed_error_not_a_crash(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    original = server.chain.blocks[890099]
    bad = copy.copy(original)
    bad.bits = 0  # invalid: the whole page is rejected, nothing from it published
    server.chain.blocks[890099] = bad
    try:
        await rest.backfill(15)
        assert store.active == {}
        server.chain.blocks[890099] = original
        await rest.check_tip()
        assert len(store.active) == 15
        assert all(isinstance(b, Block) and b.bits != 0 for b in store.block_events)
    finally:
        await rest.close()


async def test_bad_tip_text_is_feed_error(server: MempoolDemoServer) -> None:
    bus = Bus()
    store = BlockStore(bus)
    rest = make_rest(server, store, bus)
    server.chain.blocks.clear()  # demo answers 404 "Block not found" with no blocks
    try:
        with pytest.raises(FeedError):
            await rest.check_tip()
    finally:
        await rest.close()
