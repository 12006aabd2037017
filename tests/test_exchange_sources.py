"""Exchange price adapters: recorded payloads, then end to end against the local exchange."""

from __future__ import annotations

import asyncio
import json
import types

import pytest

from feeds.bus import Bus
from feeds.demo.exchange_server import ExchangeServer
from feeds.events import FeedState, FeedStatus, PriceTick
from feeds.http import PoliteHttp
from feeds.sources.bitstamp import Bitstamp
from feeds.sources.coinbase import CoinbaseExchange
from feeds.sources.kraken import KrakenV2
from feeds.sources.registry import SOURCES
from feeds.sources.rest_prices import (
    POLLERS,
    RestPriceFallback,
    fallback_from_config,
    parse_coinbase_spot,
    parse_kraken_ticker,
    parse_mempool_prices,
)
from feeds.transport import BadFrame, ReconnectRequested, UpstreamError
from tests.support_exchange import Collector, fast, fixture_lines, fixture_objects, running

T0 = 1_700_000_000.0


# ---------------------------------------------------------------- recorded payloads


def test_registry_names_match_adapters() -> None:
    assert {n: c.name for n, c in SOURCES.items()} == {
        "mempool": "mempool",
        "coinbase": "coinbase",
        "kraken": "kraken",
        "bitstamp": "bitstamp",
    }


def test_coinbase_recorded_frames() -> None:
    a = CoinbaseExchange()
    subs, heartbeat, ticker = fixture_lines("coinbase/exchange_ws.jsonl")
    assert a.parse(subs, T0) == []
    assert a.parse(heartbeat, T0) == []
    # the recorded ticker is ETH-USD: not ours
    assert a.parse(ticker, T0) == []
    btc = json.loads(ticker) | {"product_id": "BTC-USD"}
    (tick,) = a.parse(json.dumps(btc), T0)
    assert tick == PriceTick("coinbase", 1285.22, 1666222102.061769, T0)


def test_coinbase_subscribe_frame_is_ticker_plus_heartbeat() -> None:
    (frame,) = CoinbaseExchange().subscribe_frames()
    assert json.loads(frame) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD"],
        "channels": ["ticker", "heartbeat"],
    }
    assert CoinbaseExchange().ping_frame() is None


def test_coinbase_error_and_unknown_types() -> None:
    a = CoinbaseExchange()
    with pytest.raises(UpstreamError, match="Failed to subscribe"):
        a.parse('{"type":"error","message":"Failed to subscribe","reason":"x"}', T0)
    assert a.parse('{"type":"l2update","product_id":"BTC-USD"}', T0) == []
    # a ticker sequence that skips is not an error (the ticker samples the full feed)
    t1 = json.dumps(
        {
            "type": "ticker",
            "sequence": 10,
            "product_id": "BTC-USD",
            "price": "1",
            "time": "2024-01-01T00:00:00Z",
        }
    )
    t2 = t1.replace('"sequence":10', '"sequence":97')
    assert len(a.parse(t1, T0)) == 1 and len(a.parse(t2, T0)) == 1


def test_kraken_recorded_frames() -> None:
    a = KrakenV2()
    status, ack, heartbeat, pong, snapshot, update = fixture_lines("kraken/ws_v2.jsonl")
    for frame in (status, ack, heartbeat, pong):
        assert a.parse(frame, T0) == []
    # the docs use ALGO/USD
    assert a.parse(snapshot, T0) == []
    algo = type("Algo", (KrakenV2,), {"symbol": "ALGO/USD"})()
    (tick,) = algo.parse(update, T0)
    assert tick.price_usd == 0.10035 and tick.time == pytest.approx(1695632671.742648)
    for frame in fixture_lines("kraken/ws_v2_captured_sequence.jsonl"):
        assert a.parse(frame, T0) == []  # status, ack, heartbeat, a trade (not ticker)


def test_kraken_subscribe_ping_and_failed_ack() -> None:
    a = KrakenV2()
    (sub,) = a.subscribe_frames()
    assert json.loads(sub) == {
        "method": "subscribe",
        "params": {"channel": "ticker", "symbol": ["BTC/USD"]},
        "req_id": 1,
    }
    p1, p2 = json.loads(a.ping_frame() or ""), json.loads(a.ping_frame() or "")
    assert p1["method"] == "ping" and p2["req_id"] == p1["req_id"] + 1
    with pytest.raises(UpstreamError, match="Currency pair not supported"):
        a.parse(
            '{"method":"subscribe","success":false,"error":"Currency pair not supported XBT/USD"}',
            T0,
        )
    with pytest.raises(UpstreamError, match="maintenance"):
        a.parse('{"channel":"status","data":[{"system":"maintenance"}],"type":"update"}', T0)
    with pytest.raises(BadFrame):
        a.parse('{"channel":"ticker","type":"update","data":{"symbol":"BTC/USD"}}', T0)


def test_bitstamp_recorded_frames() -> None:
    a = Bitstamp()
    ok, hb, trade1, trade2, reconnect = fixture_lines("bitstamp/ws.jsonl")
    assert a.parse(ok, T0) == [] and a.parse(hb, T0) == []
    assert a.parse(trade1, T0) == [PriceTick("bitstamp", 11801.15, 1565268956.596198, T0)]
    assert a.parse(trade2, T0)[0].price_usd == 9334.73
    with pytest.raises(ReconnectRequested):
        a.parse(reconnect, T0)
    assert json.loads(a.subscribe_frames()[0]) == {
        "event": "bts:subscribe",
        "data": {"channel": "live_trades_btcusd"},
    }
    assert json.loads(a.ping_frame() or "") == {"event": "bts:heartbeat"}


def test_rest_parsers_on_recorded_payloads() -> None:
    observed, docs = fixture_objects("coinbase/rest_spot.jsonl")
    assert parse_coinbase_spot(observed, T0).price_usd == 50000.0  # type: ignore[union-attr]
    assert parse_coinbase_spot(docs, T0).price_usd == 1015.0  # type: ignore[union-attr]
    (kraken,) = fixture_objects("kraken/rest_ticker.jsonl")
    assert parse_kraken_ticker(kraken, T0).price_usd == 3537.5  # type: ignore[union-attr]
    with pytest.raises(BadFrame):  # the key is XXBTZUSD, not the requested XBTUSD
        parse_kraken_ticker({"error": [], "result": {"XBTUSD": kraken["result"]["XXBTZUSD"]}}, T0)
    tick = parse_mempool_prices({"time": 1703252411, "USD": 43753, "EUR": 40545}, T0)
    assert tick is not None and (tick.price_usd, tick.time) == (43753.0, 1703252411.0)
    assert parse_mempool_prices({"time": 1703252411, "USD": -1}, T0) is None


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("cls", [CoinbaseExchange, KrakenV2, Bitstamp])
async def test_adapter_end_to_end(cls: type) -> None:
    async with ExchangeServer(heartbeat_interval_s=0.02) as srv:
        proto = cls.name
        bus = Bus()
        got = Collector(bus)
        adapter = fast(cls)(srv.ws_url(proto))
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.clients(proto) == 1, what="subscribed")
            for i, price in enumerate([64000.5, 64010.25, 63990.0]):
                srv.publish_price(price, at=T0 + i)
            await got.wait_for(lambda c: len(c.prices(proto)) >= 3, what="3 ticks")
        ticks = got.prices(proto)
        if proto == "kraken":  # the subscribe snapshot carries the current price first
            assert ticks[0].price_usd == 65000.0
            ticks = ticks[1:]
        assert [round(t.price_usd, 1) for t in ticks] == [64000.5, 64010.2, 63990.0][: len(ticks)]
        assert [t.time for t in ticks] == pytest.approx([T0, T0 + 1, T0 + 2])
        assert all(t.source == proto for t in ticks)
        assert got.states(proto)[:2] == [FeedState.CONNECTING, FeedState.LIVE]
        assert adapter.stats.bad_frames == 0
        assert srv.stats[proto].subscribes == 1


async def test_kraken_app_ping_answered_keeps_connection() -> None:
    async with ExchangeServer(heartbeat_interval_s=60) as srv:  # no heartbeats: pings needed
        bus = Bus()
        got = Collector(bus)
        adapter = fast(KrakenV2, idle_ping_after_s=0.03, pong_timeout_s=0.2)(srv.ws_url("kraken"))
        async with running(adapter, bus):
            await got.wait_for(lambda c: srv.stats["kraken"].pings >= 3, what="3 pings")
        assert srv.stats["kraken"].connections == 1
        assert adapter.stats.reconnects == 0


# ---------------------------------------------------------------- REST fallback


def _feeds_cfg(srv: ExchangeServer, interval: float = 0.05) -> types.SimpleNamespace:
    def section(name: str, rest: bool = True) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            enabled=True, ws_url=srv.ws_url(name), rest_url=srv.rest_url(name) if rest else ""
        )

    return types.SimpleNamespace(
        rest_fallback_interval=interval,
        coinbase=section("coinbase"),
        kraken=section("kraken"),
        bitstamp=section("bitstamp", rest=False),
        mempool=section("mempool"),
    )


def _ws_status(bus: Bus, source: str, state: FeedState) -> None:
    bus.publish(FeedStatus(source=source, state=state, since=T0, received_at=T0))


def _fast_http(name: str, base: str) -> PoliteHttp:
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return PoliteHttp(name, base, retry_delays=lambda: iter([0.001] * 3), sleep=no_sleep)


async def test_rest_fallback_polls_only_while_every_price_ws_is_down() -> None:
    async with ExchangeServer() as srv:
        srv.price = 61234.0
        bus = Bus()
        got = Collector(bus)
        fb = fallback_from_config(_feeds_cfg(srv), bus, http_factory=_fast_http, grace_s=0.0)
        for name in ("coinbase", "kraken", "bitstamp"):
            _ws_status(bus, name, FeedState.BACKING_OFF)
        _ws_status(bus, "kraken", FeedState.LIVE)  # one websocket is fine
        task = asyncio.create_task(fb.run())
        try:
            await asyncio.sleep(0.15)
            assert fb.polls == 0 and sum(srv.rest_requests.values()) == 0
            _ws_status(bus, "kraken", FeedState.DOWN)  # now every one is down
            await got.wait_for(lambda c: len(c.prices()) >= 6, what="two rounds")
            by_source = {t.source: t.price_usd for t in got.prices()}
            assert by_source == {
                "coinbase_spot": 61234.0,
                "kraken_ticker": 61234.0,
                "mempool_prices": 61234.0,
            }
            _ws_status(bus, "bitstamp", FeedState.LIVE)  # a websocket recovered
            await got.wait_for(lambda c: not fb.active, what="standby")
            before = dict(srv.rest_requests)
            await asyncio.sleep(0.2)  # four intervals: nothing polled
            assert srv.rest_requests == before
            assert got.of(FeedStatus)[-1].state is FeedState.DISABLED
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # polls never overlap: no upstream ever had more than one request in flight
        assert all(h.max_seen_in_flight == 1 for h in fb._http.values())


async def test_rest_fallback_honours_429_retry_after_and_500() -> None:
    slept: list[float] = []

    def http(name: str, base: str) -> PoliteHttp:
        async def record(delay: float) -> None:
            slept.append(delay)

        return PoliteHttp(name, base, retry_delays=lambda: iter([0.001] * 3), sleep=record)

    async with ExchangeServer() as srv:
        srv.rest_fault("coinbase", 429, retry_after="7")
        srv.rest_fault("kraken", 500, times=2)
        bus = Bus()
        got = Collector(bus)
        fb = RestPriceFallback(
            bus,
            [(p, srv.rest_url(p.upstream)) for p in POLLERS[:2]],
            watched=["coinbase"],
            interval_s=10.0,
            grace_s=0.0,
            http_factory=http,
        )
        task = asyncio.create_task(fb.run())
        try:
            await got.wait_for(lambda c: len(c.prices()) == 2, what="ticks after faults")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert any(d == pytest.approx(7.0, abs=0.5) for d in slept), slept
        assert srv.rest_requests["coinbase"] == 2 and srv.rest_requests["kraken"] == 3
        assert fb.rounds == 1  # one round, no overlapping second poll while retrying


async def test_rest_fallback_4xx_marks_that_poller_down() -> None:
    async with ExchangeServer() as srv:
        srv.rest_fault("mempool", 404, times=5)
        bus = Bus()
        got = Collector(bus)
        fb = fallback_from_config(_feeds_cfg(srv), bus, http_factory=_fast_http, grace_s=0.0)
        task = asyncio.create_task(fb.run())
        try:
            await got.wait_for(lambda c: fb.rounds >= 3, what="three rounds")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert srv.rest_requests["mempool"] == 1
        assert got.states("mempool_prices")[-1] is FeedState.DOWN
        assert {t.source for t in got.prices()} == {"coinbase_spot", "kraken_ticker"}
