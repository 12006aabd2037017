"""Property tests: arbitrary JSON and arbitrary text into every parser. Only BadFrame (or
a clean result) may come out; the in-band signals (UpstreamError, ReconnectRequested) are
allowed for the frames that legitimately carry them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.events import PriceTick
from feeds.sources.bitstamp import Bitstamp
from feeds.sources.coinbase import CoinbaseExchange
from feeds.sources.kraken import KrakenV2
from feeds.sources.rest_prices import (
    parse_coinbase_spot,
    parse_kraken_ticker,
    parse_mempool_prices,
)
from feeds.transport import BadFrame, ReconnectRequested, UpstreamError, WsAdapter

ADAPTERS: list[WsAdapter] = [CoinbaseExchange(), KrakenV2(), Bitstamp()]
REST_PARSERS = [parse_coinbase_spot, parse_kraken_ticker, parse_mempool_prices]
ALLOWED = (BadFrame, UpstreamError, ReconnectRequested)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

# Values that look like the real thing, so the deep branches of every parser are reached.
price_like = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
    st.just("65000.12"),
)
time_like = st.one_of(
    st.text(max_size=40),
    st.just("2024-07-27T21:16:00.512060Z"),
    st.integers(),
    st.none(),
    st.just("1580336751488517"),
    st.just("99999999999999999999"),
)
near_miss = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ticker", "heartbeat", "error", "subscriptions", 3])},
        optional={
            "product_id": st.sampled_from(["BTC-USD", "ETH-USD", 1]),
            "price": price_like,
            "time": time_like,
            "message": json_values,
        },
    ),
    st.fixed_dictionaries(
        {"channel": st.sampled_from(["ticker", "heartbeat", "status", 7, None])},
        optional={
            "type": st.sampled_from(["snapshot", "update"]),
            "data": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {"symbol": st.sampled_from(["BTC/USD", "XBT/USD"])},
                        optional={"last": price_like, "timestamp": time_like},
                    ),
                    max_size=3,
                ),
            ),
            "method": st.sampled_from(["subscribe", "pong", "ping"]),
            "success": json_values,
        },
    ),
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(
                ["trade", "bts:heartbeat", "bts:error", "bts:request_reconnect", None, 1]
            )
        },
        optional={
            "channel": st.sampled_from(["live_trades_btcusd", "", 5]),
            "data": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "price": price_like,
                        "price_str": price_like,
                        "timestamp": time_like,
                        "microtimestamp": time_like,
                    },
                ),
            ),
        },
    ),
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_ticks(events: list[Any]) -> None:
    for ev in events:
        assert type(ev) is PriceTick
        assert math.isfinite(ev.price_usd) and ev.price_usd > 0
        assert math.isfinite(ev.time)


def _feed(adapter: WsAdapter, frame: str | bytes) -> None:
    try:
        events = adapter.parse(frame, 1_700_000_000.0)
    except ALLOWED:
        return
    _check_ticks(events)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(value=json_values)
def test_arbitrary_json_only_badframe_escapes(adapter: WsAdapter, value: Any) -> None:
    _feed(adapter, json.dumps(value))


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(value=near_miss)
def test_near_miss_frames_only_badframe_escapes(adapter: WsAdapter, value: Any) -> None:
    _feed(adapter, json.dumps(value))


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_and_bytes_only_badframe_escapes(
    adapter: WsAdapter, text: str | bytes
) -> None:
    _feed(adapter, text)


@pytest.mark.parametrize("parse", REST_PARSERS, ids=lambda p: p.__name__)
@FAST
@given(
    value=json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "data": st.fixed_dictionaries({}, optional={"amount": price_like}),
            "result": st.fixed_dictionaries(
                {}, optional={"XXBTZUSD": st.fixed_dictionaries({"c": st.lists(price_like)})}
            ),
            "error": json_values,
            "USD": price_like,
            "time": json_values,
        },
    )
)
def test_rest_parsers_only_badframe_escapes(parse: Any, value: Any) -> None:
    try:
        tick = parse(value, 1_700_000_000.0)
    except BadFrame:
        return
    if tick is not None:
        _check_ticks([tick])
