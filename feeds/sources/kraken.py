"""Kraken websocket v2 ticker (``wss://ws.kraken.com/v2``).

Protocol notes (fixtures/PROTOCOLS.md §2): v2 symbols are ``BTC/USD`` (v1 said ``XBT/USD``);
values are JSON **numbers**; the server greets with a ``status`` frame; one subscribe ack
per symbol (``success`` false carries ``error``); ``{"channel":"heartbeat"}`` about once a
second once subscribed; app ping ``{"method":"ping","req_id":n}`` -> ``pong``. Kraken's
reconnection guide: about 5 s without any message means reconnect.
"""

from __future__ import annotations

import itertools
import json
from typing import ClassVar

from feeds.events import Event, PriceTick
from feeds.transport import (
    BadFrame,
    UpstreamError,
    WsAdapter,
    as_price,
    load_object,
    rfc3339_to_epoch,
)


class KrakenV2(WsAdapter):
    name: ClassVar[str] = "kraken"
    default_ws_url: ClassVar[str] = "wss://ws.kraken.com/v2"
    idle_ping_after_s: ClassVar[float | None] = 5.0
    pong_timeout_s: ClassVar[float] = 5.0
    max_frame_bytes: ClassVar[int] = 64 * 1024
    symbol: ClassVar[str] = "BTC/USD"

    def __init__(self, ws_url: str | None = None, *, stale_after_s: float | None = None) -> None:
        super().__init__(ws_url, stale_after_s=stale_after_s)
        # req_id 1 is the subscribe; pings count up from 100 so they are easy to tell apart
        self._req_ids = itertools.count(100)

    def subscribe_frames(self) -> list[str]:
        return [
            json.dumps(
                {
                    "method": "subscribe",
                    "params": {"channel": "ticker", "symbol": [self.symbol]},
                    "req_id": 1,
                }
            )
        ]

    def ping_frame(self) -> str | None:
        return json.dumps({"method": "ping", "req_id": next(self._req_ids)})

    def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
        """Ticker snapshot or update::

            {"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":..,
             "last":68580.0, ..., "timestamp":"2023-09-25T09:04:31.742648Z"}]}

        ``timestamp`` is optional in practice (absent -> the receipt time).
        """
        msg = load_object(frame)
        channel = msg.get("channel")
        if channel == "ticker":
            data = msg.get("data")
            if type(data) is not list:
                raise BadFrame("ticker data is not a list")
            out: list[Event] = []
            for item in data:
                if type(item) is not dict:
                    raise BadFrame("ticker item is not an object")
                if item.get("symbol") != self.symbol:
                    continue
                ts = item.get("timestamp")
                upstream = received_at if ts is None else rfc3339_to_epoch(ts, "timestamp")
                out.append(
                    PriceTick(
                        source=self.name,
                        price_usd=as_price(item.get("last"), "last"),
                        time=upstream,
                        received_at=received_at,
                    )
                )
            return out
        if channel == "heartbeat":
            return []
        if channel == "status":
            data = msg.get("data")
            if type(data) is list:
                for item in data:
                    if type(item) is dict and item.get("system") not in (None, "online"):
                        raise UpstreamError(f"system status {item.get('system')!s:.40}")
            return []
        method = msg.get("method")
        if method == "subscribe" or method == "unsubscribe":
            if msg.get("success") is False:
                raise UpstreamError(f"{method} failed: {msg.get('error')!s:.160}")
            return []
        if method == "pong":
            return []
        if channel is not None and type(channel) is not str:
            raise BadFrame(f"channel has type {type(channel).__name__}")
        # other channels (trade, book...) and unknown methods are none of our business
        return []
