"""Coinbase Exchange websocket ticker (``wss://ws-feed.exchange.coinbase.com``).

Protocol notes (fixtures/PROTOCOLS.md §2): the subscribe must arrive within 5 s of the
handshake, so it is the first thing sent. ``heartbeat`` (1/s per product) is the liveness
signal: there is no app-level ping, so silence beyond ``idle_ping_after_s + pong_timeout_s``
reconnects. Ticker ``sequence`` numbers skip by design (the ticker is a sample of the full
feed), so a skip is *not* a loss and is not checked. Prices are JSON strings.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
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

_INF = math.inf
_fromisoformat = datetime.fromisoformat


class CoinbaseExchange(WsAdapter):
    name: ClassVar[str] = "coinbase"
    default_ws_url: ClassVar[str] = "wss://ws-feed.exchange.coinbase.com"
    #: no app ping exists; a heartbeat arrives every second, so 5 s of silence is suspect
    idle_ping_after_s: ClassVar[float | None] = 5.0
    pong_timeout_s: ClassVar[float] = 5.0
    max_frame_bytes: ClassVar[int] = 64 * 1024
    product_id: ClassVar[str] = "BTC-USD"

    def subscribe_frames(self) -> list[str]:
        return [
            json.dumps(
                {
                    "type": "subscribe",
                    "product_ids": [self.product_id],
                    "channels": ["ticker", "heartbeat"],
                }
            )
        ]

    def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
        """One ticker per match::

            {"type":"ticker","sequence":37475248783,"product_id":"BTC-USD","price":"1285.22",
             "side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401, ...}

        ``heartbeat`` and ``subscriptions`` carry no price; ``error`` raises UpstreamError;
        unknown types are ignored (the protocol says so).
        """
        msg = load_object(frame)
        get = msg.get
        kind = get("type")
        if kind == "ticker":
            if get("product_id") != self.product_id:
                return []
            # Positional (source, price_usd, time, received_at): the hot path, and keyword
            # arguments cost a third more on a frozen dataclass.
            # ``as_price`` and ``rfc3339_to_epoch`` inlined for the usual JSON strings (a
            # price, a UTC time ending in ``Z``): a third of the parse beyond the JSON. Anything
            # else goes through them, to be converted the same way or to raise.
            text = get("price")
            when = get("time")
            try:
                if type(text) is not str or type(when) is not str or when[-1] != "Z":
                    raise ValueError
                price = float(text)
                at = _fromisoformat(when).timestamp()
            except (ValueError, IndexError, OverflowError, OSError):
                # the price first: a frame with both wrong reports the price, as before
                price = as_price(text)
                at = rfc3339_to_epoch(when)
            if not 0.0 < price < _INF:
                price = as_price(text)
            return [PriceTick(self.name, price, at, received_at)]
        if kind == "heartbeat" or kind == "subscriptions":
            return []
        if kind == "error":
            message = msg.get("message")
            reason = msg.get("reason")
            text = str(message) if message is not None else "error"
            if reason:
                text = f"{text}: {reason}"
            raise UpstreamError(text[:200])
        if type(kind) is not str:
            raise BadFrame(f"type has type {type(kind).__name__}")
        return []
