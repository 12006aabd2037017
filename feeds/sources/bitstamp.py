"""Bitstamp websocket live trades (``wss://ws.bitstamp.net``).

Protocol notes (fixtures/PROTOCOLS.md §2): keepalive is client-initiated
(``bts:heartbeat``); the server may send ``bts:request_reconnect`` and expects a reconnect
within seconds; trades carry numbers *and* ``_str`` copies; ``microtimestamp`` is µs as a
string. An ack is no proof of data (unknown channels are acked, then silent): the freshness
watchdog is what notices that.
"""

from __future__ import annotations

import json
from typing import ClassVar

from feeds.events import Event, PriceTick
from feeds.transport import (
    BadFrame,
    ReconnectRequested,
    UpstreamError,
    WsAdapter,
    as_price,
    load_object,
)

_HEARTBEAT = json.dumps({"event": "bts:heartbeat"})


def _epoch_from(data: dict[str, object]) -> float:
    micro = data.get("microtimestamp")
    if type(micro) is str and micro.isdigit() and len(micro) <= 20:
        return int(micro) / 1e6
    ts = data.get("timestamp")
    if type(ts) is str and ts.isdigit() and len(ts) <= 15:
        return float(int(ts))
    if type(ts) is int and 0 <= ts < 1 << 40:
        return float(ts)
    raise BadFrame("trade has no usable timestamp")


class Bitstamp(WsAdapter):
    name: ClassVar[str] = "bitstamp"
    default_ws_url: ClassVar[str] = "wss://ws.bitstamp.net"
    idle_ping_after_s: ClassVar[float | None] = 10.0
    pong_timeout_s: ClassVar[float] = 5.0
    max_frame_bytes: ClassVar[int] = 64 * 1024
    channel: ClassVar[str] = "live_trades_btcusd"

    def subscribe_frames(self) -> list[str]:
        return [json.dumps({"event": "bts:subscribe", "data": {"channel": self.channel}})]

    def ping_frame(self) -> str | None:
        return _HEARTBEAT

    def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
        """A trade::

        {"event":"trade","channel":"live_trades_btcusd","data":{"id":104007706,
         "price":9334.73,"price_str":"9334.73","timestamp":"1580336751",
         "microtimestamp":"1580336751488517","type":1, ...}}
        """
        msg = load_object(frame)
        event = msg.get("event")
        if event == "trade":
            if msg.get("channel") != self.channel:
                return []
            data = msg.get("data")
            if type(data) is not dict:
                raise BadFrame("trade data is not an object")
            raw = data.get("price_str")
            if raw is None:
                raw = data.get("price")
            return [
                PriceTick(
                    source=self.name,
                    price_usd=as_price(raw),
                    time=_epoch_from(data),
                    received_at=received_at,
                )
            ]
        if event == "bts:request_reconnect":
            raise ReconnectRequested("bts:request_reconnect")
        if event == "bts:error":
            data = msg.get("data")
            detail = data.get("message") if type(data) is dict else data
            raise UpstreamError(f"bts:error {detail!s:.160}")
        if type(event) is not str:
            raise BadFrame(f"event has type {type(event).__name__}")
        # bts:heartbeat, bts:subscription_succeeded, unknown events: nothing to publish
        return []
