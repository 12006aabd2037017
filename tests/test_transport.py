"""run_ws against the local exchange server: reconnects, faults, watchdogs, status."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve

from feeds.bus import Bus
from feeds.demo.exchange_server import ExchangeServer, bad_frames
from feeds.events import Event, FeedState, FeedStatus, PriceTick
from feeds.sources.bitstamp import Bitstamp
from feeds.sources.coinbase import CoinbaseExchange
from feeds.sources.kraken import KrakenV2
from feeds.transport import (
    BadFrame,
    WsAdapter,
    classify_connect_error,
    default_reconnect_delays,
    load_object,
    run_ws,
)
from tests.support_exchange import Collector, fast, fast_delays, running

T0 = 1_700_000_000.0


@pytest.mark.parametrize("proto", ["coinbase", "kraken", "bitstamp"])
async def test_dropped_connection_reconnects_and_resubscribes(proto: str) -> None:
    cls = {"coinbase": CoinbaseExchange, "kraken": KrakenV2, "bitstamp": Bitstamp}[proto]
    async with ExchangeServer(heartbeat_interval_s=0.02) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(cls)(srv.ws_url(proto))
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients(proto) == 1, what="subscribed")
            srv.publish_price(60000.0, T0)
            srv.drop(proto)  # mid-stream: after the queued trade
            await got.wait_for(lambda c: srv.stats[proto].subscribes == 2, what="resubscribed")
            await got.wait_for(lambda c: srv.clients(proto) == 1, what="subscribed again")
            srv.publish_price(60100.0, T0 + 1)
            await got.wait_for(
                lambda c: any(t.price_usd == 60100.0 for t in c.prices(proto)), what="tick"
            )
        prices = [t.price_usd for t in got.prices(proto)]
        assert 60000.0 in prices and 60100.0 in prices
        assert srv.stats[proto].connections == 2
        assert adapter.stats.reconnects == 1
        states = got.states(proto)
        assert FeedState.BACKING_OFF in states
        assert states[-1] is FeedState.LIVE
        last = got.of(FeedStatus)[-1]
        assert last.reconnects == 1 and last.last_error


@pytest.mark.parametrize("proto", ["coinbase", "kraken", "bitstamp"])
async def test_bad_frames_are_counted_and_never_published(proto: str) -> None:
    cls = {"coinbase": CoinbaseExchange, "kraken": KrakenV2, "bitstamp": Bitstamp}[proto]
    async with ExchangeServer(heartbeat_interval_s=60) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(cls, idle_ping_after_s=None)(srv.ws_url(proto))
        bad = bad_frames(proto)
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients(proto) == 1, what="subscribed")
            base = len(got.prices(proto))  # kraken's subscribe snapshot
            for frame in bad.values():
                srv.send_raw(proto, frame)
            srv.publish_price(61000.0, T0)  # a good frame after the bad ones still works
            await got.wait_for(lambda c: len(c.prices(proto)) == base + 1, what="good tick")
        assert adapter.stats.bad_frames == len(bad)
        assert adapter.stats.bad_by_reason == {"malformed": len(bad) - 1, "oversized": 1}
        assert [t.price_usd for t in got.prices(proto)][base:] == [61000.0]
        assert srv.stats[proto].connections == 1  # none of it cost the connection


async def test_handshake_401_is_fatal_without_retry_loop() -> None:
    async with ExchangeServer() as srv:
        srv.refuse("coinbase", 401, times=None)
        bus = Bus()
        got = Collector(bus)
        await asyncio.wait_for(
            run_ws(CoinbaseExchange(srv.ws_url("coinbase")), bus, reconnect_delays=fast_delays),
            timeout=5,
        )
        assert srv.stats["coinbase"].handshakes == 1
        last = got.of(FeedStatus)[-1]
        assert last.state is FeedState.DOWN and "401" in (last.last_error or "")


@pytest.mark.parametrize("status", [403, 404])
def test_other_auth_and_path_errors_are_fatal(status: int) -> None:
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    exc = InvalidStatus(Response(status, "x", Headers()))
    assert classify_connect_error(exc) is not None
    assert classify_connect_error(InvalidStatus(Response(503, "x", Headers()))) is None
    assert classify_connect_error(ConnectionRefusedError()) is None
    assert classify_connect_error(TimeoutError()) is None


async def test_handshake_503_is_retried_with_backoff_status() -> None:
    async with ExchangeServer(heartbeat_interval_s=0.02) as srv:
        srv.refuse("kraken", 503, times=3)
        bus = Bus()
        got = Collector(bus)
        adapter = fast(KrakenV2)(srv.ws_url("kraken"))
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients("kraken") == 1, what="subscribed")
            await got.wait_for(lambda c: c.states("kraken")[-1] is FeedState.LIVE, what="live")
        assert srv.stats["kraken"].handshakes == 4 and srv.stats["kraken"].refused == 3
        backing = [s for s in got.of(FeedStatus) if s.state is FeedState.BACKING_OFF]
        assert [s.reconnects for s in backing] == [1, 2, 3]
        assert "503" in (backing[0].last_error or "")


async def test_connection_refused_is_retried_until_cancelled() -> None:
    bus = Bus()
    got = Collector(bus)
    # a port nobody listens on: reserve one and close it
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    async with running(KrakenV2(f"ws://127.0.0.1:{port}"), bus):
        await got.wait_for(lambda c: len(c.states("kraken")) >= 3, what="retries")
    assert set(got.states("kraken")[1:]) == {FeedState.BACKING_OFF}


@pytest.mark.parametrize("proto", ["kraken", "bitstamp"])
async def test_server_that_stops_answering_app_pings_triggers_reconnect(proto: str) -> None:
    cls = {"kraken": KrakenV2, "bitstamp": Bitstamp}[proto]
    async with ExchangeServer(heartbeat_interval_s=60) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(cls, idle_ping_after_s=0.03, pong_timeout_s=0.05)(srv.ws_url(proto))
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.stats[proto].pings >= 2, what="answered pings")
            assert srv.stats[proto].connections == 1
            srv.answer_pings(proto, False)
            await got.wait_for(lambda c: srv.stats[proto].connections >= 2, what="reconnect")
        assert adapter.stats.pings_sent >= 3
        assert any("after ping" in (s.last_error or "") for s in got.of(FeedStatus))


async def test_coinbase_silence_without_heartbeats_triggers_reconnect() -> None:
    async with ExchangeServer(heartbeat_interval_s=0.02) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(CoinbaseExchange, idle_ping_after_s=0.1, pong_timeout_s=0.05)(
            srv.ws_url("coinbase")
        )
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients("coinbase") == 1, what="subscribed")
            await asyncio.sleep(0.3)  # heartbeats flow: no reconnect
            assert srv.stats["coinbase"].connections == 1
            srv.mute("coinbase")
            await got.wait_for(lambda c: srv.stats["coinbase"].connections >= 2, what="reconnect")
        assert adapter.stats.pings_sent == 0  # Coinbase has no app ping; silence is the signal


async def test_bitstamp_request_reconnect_is_obeyed_promptly() -> None:
    slow_delays = lambda: itertools.repeat(30.0)  # noqa: E731 - a prompt reconnect skips these
    async with ExchangeServer() as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(Bitstamp, idle_ping_after_s=None)(srv.ws_url("bitstamp"))
        async with running(adapter, bus, reconnect_delays=slow_delays):
            await got.wait_for(lambda c: srv.clients("bitstamp") == 1, what="subscribed")
            srv.request_reconnect()
            await got.wait_for(lambda c: srv.stats["bitstamp"].subscribes == 2, limit_s=2.0)
        assert adapter.stats.reconnects_requested == 1
        assert srv.stats["bitstamp"].connections == 2


async def test_freshness_watchdog_is_separate_from_liveness() -> None:
    """Heartbeats keep the connection alive, but without trades the feed goes STALE, and the
    next trade makes it LIVE again, on the same connection."""
    async with ExchangeServer(heartbeat_interval_s=0.01) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(CoinbaseExchange)(srv.ws_url("coinbase"), stale_after_s=0.1)
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients("coinbase") == 1, what="subscribed")
            srv.publish_price(60000.0)  # upstream time = now: no clock-offset flag
            await got.wait_for(lambda c: c.states("coinbase")[-1] is FeedState.STALE, what="stale")
            srv.publish_price(60001.0)
            await got.wait_for(lambda c: c.states("coinbase")[-1] is FeedState.LIVE, what="live")
        assert srv.stats["coinbase"].connections == 1
        assert got.states("coinbase") == [
            FeedState.CONNECTING,
            FeedState.LIVE,
            FeedState.STALE,
            FeedState.LIVE,
        ]


async def test_clock_offset_beyond_10s_is_flagged_in_detail() -> None:
    async with ExchangeServer(heartbeat_interval_s=0.01) as srv:
        bus = Bus()
        got = Collector(bus)
        adapter = fast(CoinbaseExchange)(srv.ws_url("coinbase"))
        fake_now = 2_000_000_000.0
        async with running(adapter, bus, clock=lambda: fake_now):
            await got.wait_for(lambda c: srv.clients("coinbase") == 1, what="subscribed")
            for _ in range(3):
                srv.publish_price(60000.0, at=fake_now - 42.0)  # we are 42 s ahead
            await got.wait_for(
                lambda c: any(s.detail for s in c.of(FeedStatus)), what="offset flagged"
            )
        detail = next(s.detail for s in got.of(FeedStatus) if s.detail)
        assert "clock offset 42.0 s ahead" in detail


async def test_parser_bug_is_counted_not_fatal() -> None:
    class Buggy(WsAdapter):
        name = "buggy"
        default_ws_url = "ws://unused"
        idle_ping_after_s = None

        def subscribe_frames(self) -> list[str]:
            return []

        def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
            obj = load_object(frame)
            return [PriceTick("buggy", 1.0 / obj["p"], received_at, received_at)]

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        for p in (0, 2):  # ZeroDivisionError, then fine
            await ws.send(json.dumps({"p": p}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        bus = Bus()
        got = Collector(bus)
        adapter = Buggy(f"ws://127.0.0.1:{port}")
        async with running(adapter, bus):
            await got.wait_for(lambda c: len(c.prices()) == 1, what="tick after the bug")
        assert adapter.stats.bad_by_reason == {"parser error": 1}
        assert got.prices()[0].price_usd == 0.5


async def test_cancel_closes_connection_and_leaves_no_tasks() -> None:
    async with ExchangeServer(heartbeat_interval_s=0.01) as srv:
        bus = Bus()
        got = Collector(bus)
        before = asyncio.all_tasks()
        task = asyncio.create_task(run_ws(fast(KrakenV2)(srv.ws_url("kraken")), bus))
        await got.wait_for(lambda c: srv.clients("kraken") == 1, what="subscribed")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await got.wait_for(lambda c: srv.clients("kraken") == 0, limit_s=2, what="closed")
        assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


def test_default_delays_are_capped_and_jittered() -> None:
    delays = list(itertools.islice(default_reconnect_delays(1.0, 60.0), 12))
    assert all(0.5 <= d <= 1.0 for d in delays[:1])
    assert all(d <= 60.0 for d in delays) and max(delays) >= 30.0
    assert len(set(delays)) == len(delays)  # jitter


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@given(
    _JSON,
    st.sampled_from(["", " ", "\n", "\ufeff", "x", "{", "}"]),
    st.sampled_from(["", " ", "\t\n", "x", "]", ",1"]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_load_object_agrees_with_json_loads(
    value: object, before: str, after: str, as_bytes: bool
) -> None:
    """The direct-scanner fast path returns what json.loads returns and rejects exactly
    what it rejects (whitespace, BOM, extra data, truncation, bytes)."""
    text = before + json.dumps(value) + after
    frame: str | bytes = text.encode() if as_bytes else text
    try:
        expected = json.loads(frame)
    except ValueError:
        expected = BadFrame
    if expected is not BadFrame and type(expected) is not dict:
        expected = BadFrame
    try:
        got = load_object(frame)
    except BadFrame:
        got = BadFrame
    assert got == expected
    whole = json.dumps({"k": value})
    for cut in (1, len(whole) // 2):  # every proper prefix of an object is truncated
        with pytest.raises(BadFrame):
            load_object(whole[:-cut])
