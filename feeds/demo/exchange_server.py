"""A scriptable local exchange: Coinbase Exchange, Kraken v2 and Bitstamp websockets, plus the
Coinbase/Kraken (and mempool ``/v1/prices``) REST spot endpoints, on 127.0.0.1.

The offline demo and the tests drive the very same adapters as live use against it, with
only the URLs changed. Payload shapes follow the recorded fixtures (fixtures/PROTOCOLS.md §2):
Coinbase prices are strings and the ticker sequence skips; Kraken values are JSON numbers and
the server greets with ``status``; Bitstamp trades carry numbers and ``_str`` copies.

Prices come from outside: :meth:`ExchangeServer.publish_price` (sync, fan-out to every
subscribed client) or :meth:`ExchangeServer.feed` (an async iterable of ``(price, time)``).
The fields a real ticker has beyond the price (volumes, bid/ask, 24 h range) are synthesized
around it and are **synthetic**.

Fault hooks (all take the protocol name ``"coinbase" | "kraken" | "bitstamp"``):
``drop`` (abort the TCP connection after what is already queued), ``send_raw`` (garbage,
truncated, wrong-typed, oversized frames: see :func:`bad_frames`), ``refuse`` (answer the
handshake with an HTTP status), ``mute`` (stop sending and answering anything: heartbeats,
pings), ``request_reconnect`` (Bitstamp), ``rest_fault`` (REST 429 + Retry-After, 500s).

Layout: websockets at ``/ws/<proto>``, REST bases at ``/rest/<proto>`` (``coinbase``,
``kraken``, ``mempool``), so that a feed's ``rest_url`` is the base and the documented paths
are appended as for the real APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

PROTOCOLS = ("coinbase", "kraken", "bitstamp")
_DROP = object()  # queue sentinel: abort the connection here


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(eq=False)  # identity-hashed: kept in a set
class _Client:
    proto: str
    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    subscribed: bool = False


@dataclass
class ProtoStats:
    """What the server saw, per protocol (tests assert on these)."""

    handshakes: int = 0
    refused: int = 0
    connections: int = 0
    subscribes: int = 0
    pings: int = 0
    received: list[str] = field(default_factory=list)


class ExchangeServer:
    """Start with ``async with ExchangeServer() as srv`` (or ``await srv.start()``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        heartbeat_interval_s: float = 1.0,
        subscribe_deadline_s: float = 5.0,
        initial_price: float = 65_000.0,
        seed: int | None = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.heartbeat_interval_s = heartbeat_interval_s
        self.subscribe_deadline_s = subscribe_deadline_s
        self.price = initial_price
        self.price_time = clock()
        self._rng = random.Random(seed)
        self._clients: set[_Client] = set()
        self._refuse: dict[str, deque[int]] = {p: deque() for p in PROTOCOLS}
        self._refuse_forever: dict[str, int | None] = dict.fromkeys(PROTOCOLS)
        self._muted: set[str] = set()
        self._answer_pings: dict[str, bool] = dict.fromkeys(PROTOCOLS, True)
        self._rest_faults: dict[str, deque[tuple[int, dict[str, str]]]] = {
            p: deque() for p in ("coinbase", "kraken", "mempool")
        }
        self.stats: dict[str, ProtoStats] = {p: ProtoStats() for p in PROTOCOLS}
        self.rest_requests: dict[str, int] = {"coinbase": 0, "kraken": 0, "mempool": 0}
        self._seq = itertools.count(86_000_000_000)
        self._trade_ids = itertools.count(600_000_000)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> ExchangeServer:
        app = web.Application()
        for proto in PROTOCOLS:
            app.router.add_get(f"/ws/{proto}", self._ws_handler(proto))
        app.router.add_get("/rest/coinbase/v2/prices/BTC-USD/spot", self._coinbase_spot)
        app.router.add_get("/rest/kraken/0/public/Ticker", self._kraken_ticker)
        app.router.add_get("/rest/mempool/v1/prices", self._mempool_prices)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._spawn(self._heartbeats())
        log.info("exchange demo server on %s:%d", self.host, self.port)
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in list(self._clients):
            with contextlib.suppress(Exception):
                await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ExchangeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ws_url(self, proto: str) -> str:
        return f"ws://{self.host}:{self.port}/ws/{proto}"

    def rest_url(self, proto: str) -> str:
        return f"http://{self.host}:{self.port}/rest/{proto}"

    def clients(self, proto: str) -> int:
        return sum(1 for c in self._clients if c.proto == proto and c.subscribed)

    # ------------------------------------------------------------------ prices
    def publish_price(self, price: float, at: float | None = None) -> None:
        """Fan one trade at ``price`` out to every subscribed client of every protocol."""
        self.price = price
        self.price_time = self.clock() if at is None else at
        for client in self._clients:
            if client.subscribed and client.proto not in self._muted:
                client.queue.put_nowait(self._price_frame(client.proto, price, self.price_time))

    async def feed(self, stream: AsyncIterable[tuple[float, float]]) -> None:
        """Publish every ``(price, upstream_time)`` of ``stream`` as it comes."""
        async for price, at in stream:
            self.publish_price(price, at)

    async def push_burst(self, proto: str, n: int, *, price: float | None = None) -> None:
        """Queue ``n`` ticker frames to every ``proto`` client and wait until all are sent
        (the ingest benchmark)."""
        base = self.price if price is None else price
        targets = [c for c in self._clients if c.proto == proto and c.subscribed]
        now = self.clock()
        for i in range(n):
            frame = self._price_frame(proto, base + (i % 100) * 0.01, now)
            for c in targets:
                c.queue.put_nowait(frame)
        await self.drain(proto)

    async def drain(self, proto: str) -> None:
        """Wait until every queued frame to ``proto`` clients has been written."""
        for c in [c for c in self._clients if c.proto == proto]:
            await c.queue.join()

    def _price_frame(self, proto: str, price: float, at: float) -> str:
        if proto == "coinbase":
            return coinbase_ticker(price, at, next(self._seq), next(self._trade_ids), self._rng)
        if proto == "kraken":
            return kraken_ticker(price, at, "update")
        return bitstamp_trade(price, at, next(self._trade_ids), self._rng)

    # ------------------------------------------------------------------ faults
    def send_raw(self, proto: str, frame: str | bytes) -> None:
        """Queue an arbitrary frame to every ``proto`` client (after what is queued)."""
        for c in self._clients:
            if c.proto == proto:
                c.queue.put_nowait(frame)

    def drop(self, proto: str) -> None:
        """Abort every ``proto`` connection (no close frame) after what is already queued."""
        for c in self._clients:
            if c.proto == proto:
                c.queue.put_nowait(_DROP)

    def refuse(self, proto: str, status: int, times: int | None = 1) -> None:
        """Answer the next ``times`` handshakes (None: all) with HTTP ``status``."""
        if times is None:
            self._refuse_forever[proto] = status
        else:
            self._refuse[proto].extend([status] * times)

    def allow(self, proto: str) -> None:
        self._refuse[proto].clear()
        self._refuse_forever[proto] = None

    def mute(self, proto: str, muted: bool = True) -> None:
        """A muted server keeps the connection open but sends and answers nothing."""
        if muted:
            self._muted.add(proto)
        else:
            self._muted.discard(proto)

    def answer_pings(self, proto: str, answer: bool) -> None:
        """Stop (or resume) answering app-level pings only; data keeps flowing."""
        self._answer_pings[proto] = answer

    def request_reconnect(self) -> None:
        """Bitstamp: ``bts:request_reconnect`` to every client (the docs' shape)."""
        self.send_raw(
            "bitstamp", json.dumps({"event": "bts:request_reconnect", "channel": "", "data": ""})
        )

    def rest_fault(
        self, proto: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """The next ``times`` REST requests to ``proto`` get ``status`` (and Retry-After)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._rest_faults[proto].extend([(status, headers)] * times)

    # ------------------------------------------------------------------ websockets
    def _ws_handler(self, proto: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            stats = self.stats[proto]
            stats.handshakes += 1
            status = self._refuse[proto].popleft() if self._refuse[proto] else None
            if status is None:
                status = self._refuse_forever[proto]
            if status is not None:
                stats.refused += 1
                return web.Response(status=status, text=f"refused ({status})\n")
            ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 16)
            await ws.prepare(request)
            stats.connections += 1
            client = _Client(proto, ws, request)
            self._clients.add(client)
            writer = asyncio.get_running_loop().create_task(self._writer(client))
            try:
                await self._serve(client)
            finally:
                self._clients.discard(client)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            return ws

        return handler

    async def _writer(self, client: _Client) -> None:
        while True:
            frame = await client.queue.get()
            try:
                if frame is _DROP:
                    transport = client.request.transport
                    if transport is not None:
                        transport.abort()
                    return
                if client.ws.closed:
                    continue
                if isinstance(frame, bytes):
                    await client.ws.send_bytes(frame)
                else:
                    await client.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return
            finally:
                client.queue.task_done()

    def _send(self, client: _Client, frame: dict[str, Any]) -> None:
        client.queue.put_nowait(json.dumps(frame))

    async def _serve(self, client: _Client) -> None:
        proto, ws, stats = client.proto, client.ws, self.stats[client.proto]
        if proto == "kraken":
            self._send(client, KRAKEN_STATUS)
        deadline = asyncio.get_running_loop().time() + self.subscribe_deadline_s
        while True:
            timeout = None
            if proto == "coinbase" and not client.subscribed:
                # Coinbase disconnects clients that do not subscribe within 5 s.
                timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                await ws.close(code=1008, message=b"subscribe deadline")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type is not WSMsgType.TEXT:
                continue
            stats.received.append(msg.data)
            if proto in self._muted:
                continue
            try:
                req = json.loads(msg.data)
            except ValueError:
                req = None
            if type(req) is not dict:
                continue
            if proto == "coinbase":
                self._coinbase_request(client, req)
            elif proto == "kraken":
                self._kraken_request(client, req)
            else:
                self._bitstamp_request(client, req)

    def _coinbase_request(self, client: _Client, req: dict[str, Any]) -> None:
        if req.get("type") != "subscribe":
            self._send(client, {"type": "error", "message": "Failed to subscribe"})
            return
        self.stats["coinbase"].subscribes += 1
        products = req.get("product_ids") or []
        channels = [
            {"name": ch, "product_ids": products} if isinstance(ch, str) else ch
            for ch in req.get("channels") or []
        ]
        self._send(client, {"type": "subscriptions", "channels": channels})
        client.subscribed = True

    def _kraken_request(self, client: _Client, req: dict[str, Any]) -> None:
        method, req_id = req.get("method"), req.get("req_id")
        now = _iso(self.clock())
        if method == "ping":
            self.stats["kraken"].pings += 1
            if self._answer_pings["kraken"]:
                pong = {"method": "pong", "req_id": req_id, "time_in": now, "time_out": now}
                self._send(client, pong)
            return
        if method != "subscribe":
            return
        self.stats["kraken"].subscribes += 1
        params = req.get("params") or {}
        for symbol in params.get("symbol") or []:
            ack: dict[str, Any] = {"method": "subscribe", "time_in": now, "time_out": now}
            if req_id is not None:
                ack["req_id"] = req_id
            if params.get("channel") == "ticker" and symbol == "BTC/USD":
                ack.update(
                    result={"channel": "ticker", "snapshot": True, "symbol": symbol},
                    success=True,
                )
                self._send(client, ack)
                client.queue.put_nowait(kraken_ticker(self.price, self.price_time, "snapshot"))
                client.subscribed = True
            else:
                ack.update(success=False, error=f"Currency pair not supported {symbol}")
                self._send(client, ack)

    def _bitstamp_request(self, client: _Client, req: dict[str, Any]) -> None:
        event = req.get("event")
        if event == "bts:heartbeat":
            self.stats["bitstamp"].pings += 1
            if self._answer_pings["bitstamp"]:
                self._send(
                    client,
                    {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}},
                )
        elif event == "bts:subscribe":
            self.stats["bitstamp"].subscribes += 1
            channel = (req.get("data") or {}).get("channel")
            self._send(
                client, {"event": "bts:subscription_succeeded", "channel": channel, "data": {}}
            )
            # Like the real one, an unknown channel is acked and then stays silent.
            client.subscribed = channel == "live_trades_btcusd"

    async def _heartbeats(self) -> None:
        """Coinbase ``heartbeat`` channel and Kraken ``heartbeat``: one per interval."""
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            now = _iso(self.clock())
            for c in list(self._clients):
                if not c.subscribed or c.proto in self._muted:
                    continue
                if c.proto == "coinbase":
                    self._send(
                        c,
                        {
                            "type": "heartbeat",
                            "sequence": next(self._seq),
                            "last_trade_id": next(self._trade_ids),
                            "product_id": "BTC-USD",
                            "time": now,
                        },
                    )
                elif c.proto == "kraken":
                    self._send(c, {"channel": "heartbeat"})

    # ------------------------------------------------------------------ REST
    def _rest_fault_response(self, proto: str) -> web.Response | None:
        self.rest_requests[proto] += 1
        if self._rest_faults[proto]:
            status, headers = self._rest_faults[proto].popleft()
            return web.Response(status=status, headers=headers, text=f"HTTP {status}\n")
        return None

    async def _coinbase_spot(self, request: web.Request) -> web.Response:
        fault = self._rest_fault_response("coinbase")
        if fault is not None:
            return fault
        body = {"data": {"base": "BTC", "currency": "USD", "amount": f"{self.price:.2f}"}}
        return web.json_response(body)

    async def _kraken_ticker(self, request: web.Request) -> web.Response:
        fault = self._rest_fault_response("kraken")
        if fault is not None:
            return fault
        if request.query.get("pair") not in ("XBTUSD", "XXBTZUSD"):
            return web.json_response({"error": ["EQuery:Unknown asset pair"], "result": {}})
        p = self.price
        ticker = {
            "a": [f"{p + 0.1:.5f}", "1", "1.000"],
            "b": [f"{p - 0.1:.5f}", "2", "2.000"],
            "c": [f"{p:.5f}", "0.00100000"],
            "v": ["1234.56789012", "2345.67890123"],
            "p": [f"{p:.5f}", f"{p:.5f}"],
            "t": [12345, 23456],
            "l": [f"{p * 0.98:.5f}", f"{p * 0.97:.5f}"],
            "h": [f"{p * 1.02:.5f}", f"{p * 1.03:.5f}"],
            "o": f"{p * 0.99:.5f}",
        }
        return web.json_response({"error": [], "result": {"XXBTZUSD": ticker}})

    async def _mempool_prices(self, request: web.Request) -> web.Response:
        fault = self._rest_fault_response("mempool")
        if fault is not None:
            return fault
        usd = round(self.price)
        body = {"time": int(self.price_time), "USD": usd, "EUR": round(usd * 0.92)}
        return web.json_response(body)


# ---------------------------------------------------------------------- frame builders


def coinbase_ticker(
    price: float, at: float, sequence: int, trade_id: int, rng: random.Random | None = None
) -> str:
    """A Coinbase Exchange ``ticker`` (strings for every price and size; synthetic extras)."""
    rng = rng or random.Random(0)
    return json.dumps(
        {
            "type": "ticker",
            "sequence": sequence,
            "product_id": "BTC-USD",
            "price": f"{price:.2f}",
            "open_24h": f"{price * 0.99:.2f}",
            "volume_24h": "8123.45678901",
            "low_24h": f"{price * 0.98:.2f}",
            "high_24h": f"{price * 1.02:.2f}",
            "volume_30d": "245532.79269678",
            "best_bid": f"{price - 0.01:.2f}",
            "best_bid_size": "0.46688654",
            "best_ask": f"{price + 0.01:.2f}",
            "best_ask_size": "1.56637040",
            "side": "buy" if rng.random() < 0.5 else "sell",
            "time": _iso(at),
            "trade_id": trade_id,
            "last_size": "0.00396987",
        },
        separators=(",", ":"),
    )


def kraken_ticker(price: float, at: float, kind: str = "update") -> str:
    """A Kraken v2 ``ticker`` snapshot/update (JSON numbers; synthetic extras)."""
    return json.dumps(
        {
            "channel": "ticker",
            "type": kind,
            "data": [
                {
                    "symbol": "BTC/USD",
                    "bid": round(price - 0.1, 1),
                    "bid_qty": 0.5,
                    "ask": round(price + 0.1, 1),
                    "ask_qty": 1.25,
                    "last": round(price, 1),
                    "volume": 1234.56789012,
                    "vwap": round(price, 1),
                    "low": round(price * 0.98, 1),
                    "high": round(price * 1.02, 1),
                    "change": round(price * 0.01, 1),
                    "change_pct": 1.0,
                    "timestamp": _iso(at),
                }
            ],
        },
        separators=(",", ":"),
    )


def bitstamp_trade(price: float, at: float, trade_id: int, rng: random.Random | None = None) -> str:
    """A Bitstamp ``trade`` on ``live_trades_btcusd`` (numbers and ``_str`` copies)."""
    rng = rng or random.Random(0)
    amount = round(rng.uniform(0.0001, 0.5), 8)
    micro = int(at * 1_000_000)
    return json.dumps(
        {
            "data": {
                "id": trade_id,
                "timestamp": str(micro // 1_000_000),
                "amount": amount,
                "amount_str": f"{amount:.8f}",
                "price": round(price, 2),
                "price_str": f"{price:.2f}",
                "type": rng.randint(0, 1),
                "microtimestamp": str(micro),
                "buy_order_id": 1_800_000_000 + trade_id,
                "sell_order_id": 1_800_000_001 + trade_id,
            },
            "channel": "live_trades_btcusd",
            "event": "trade",
        },
        separators=(",", ":"),
    )


KRAKEN_STATUS = {
    "channel": "status",
    "data": [
        {
            "api_version": "v2",
            "connection_id": 13834774380200032777,
            "system": "online",
            "version": "2.0.0",
        }
    ],
    "type": "update",
}


def bad_frames(proto: str, *, oversize_bytes: int = 70 * 1024) -> dict[str, str | bytes]:
    """Faulty frames for ``proto``: each must be counted and dropped, never published."""
    good = {
        "coinbase": coinbase_ticker(65_000.0, 1_700_000_000.0, 1, 1),
        "kraken": kraken_ticker(65_000.0, 1_700_000_000.0),
        "bitstamp": bitstamp_trade(65_000.0, 1_700_000_000.0, 1),
    }[proto]
    obj = json.loads(good)
    if proto == "coinbase":
        obj["price"] = {"amount": "65000"}
    elif proto == "kraken":
        obj["data"][0]["last"] = "sixty-five thousand"
    else:
        obj["data"]["price_str"] = None
        obj["data"]["price"] = [65000]
    oversized = json.loads(good)
    oversized["padding"] = "x" * oversize_bytes
    return {
        "garbage": "\x00\xffnot json at all{",
        "binary_garbage": b"\xff\xfe\x00garbage",
        "truncated": good[: len(good) // 2],
        "wrong_type": json.dumps(obj),
        "not_an_object": json.dumps([obj]),
        "oversized": json.dumps(oversized),
    }
