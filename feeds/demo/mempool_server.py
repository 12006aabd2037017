"""A local stand-in for mempool.space: websocket ``/api/v1/ws`` and REST ``/api/...``.

Backed by an in-memory chain that a test or the demo replay scripts (add blocks, reorg to a
competing branch, set prices), with fault hooks (drop connections, send garbage, stop
answering pings, REST 429/500/slow answers). Payload shapes follow the real ones in
``tests/fixtures/mempool/`` (BlockExtended with ``extras``; ``da`` in ms except
``previousTime``; ``/blocks/tip/height`` as text/plain; hashrate difficulty items with
``time``).

It binds 127.0.0.1 on an ephemeral port only. Fees, pools and tx counts of generated blocks
are synthetic unless the caller passes real values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

#: mempool terminates clients that send frames larger than this.
CLIENT_FRAME_LIMIT = 50_000
EPOCH = 2016
SUBSIDY_HALVING = 210_000
#: Real mainnet values around height 890448 (fixture ws_push_block.recorded_890448.json).
DEFAULT_BITS = 386038124
DEFAULT_DIFFICULTY = 113757508810854.0
SYNTHETIC_POOLS = ("Foundry USA", "AntPool", "ViaBTC", "F2Pool", "MARA Pool", "Braiins Pool")


def subsidy_sats(height: int) -> int:
    return (50 * 100_000_000) >> (height // SUBSIDY_HALVING)


def fake_hash(*parts: object) -> str:
    """A deterministic 64-hex "block hash" (leading zeros for looks)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return "0000000000000000000" + digest[19:]


@dataclass
class DemoBlock:
    height: int
    hash: str
    prev_hash: str
    timestamp: int
    bits: int = DEFAULT_BITS
    difficulty: float = DEFAULT_DIFFICULTY
    tx_count: int = 3000
    fees_sats: int = 2_500_000
    pool: str = "Foundry USA"

    def to_json(self) -> dict[str, Any]:
        """BlockExtended as mempool serves it (extras trimmed to what clients read)."""
        reward = subsidy_sats(self.height) + self.fees_sats
        return {
            "id": self.hash,
            "height": self.height,
            "version": 536870912,
            "timestamp": self.timestamp,
            "bits": self.bits,
            "nonce": self.height * 7919 % (1 << 32),
            "difficulty": self.difficulty,
            "merkle_root": fake_hash("merkle", self.hash)[-64:],
            "tx_count": self.tx_count,
            "size": 1_500_000,
            "weight": 3_993_000,
            "previousblockhash": self.prev_hash,
            "mediantime": self.timestamp - 1800,
            "stale": False,
            "extras": {
                "reward": reward,
                "coinbaseRaw": "03" + format(self.height, "06x"),
                "orphans": [],
                "medianFee": 2.5,
                "feeRange": [1, 1.5, 2, 2.5, 3, 5, 100],
                "totalFees": self.fees_sats,
                "avgFee": self.fees_sats // max(1, self.tx_count - 1),
                "avgFeeRate": 3,
                "utxoSetChange": 0,
                "feePercentiles": None,
                "virtualSize": 998_000.0,
                "utxoSetSize": None,
                "totalInputAmt": None,
                "pool": {
                    "id": zlib.crc32(self.pool.encode()) % 200,
                    "name": self.pool,
                    "slug": self.pool.lower().replace(" ", ""),
                    "minerNames": None,
                },
                "matchRate": 100,
                "expectedFees": self.fees_sats,
                "expectedWeight": 3_991_000,
                "similarity": 0.95,
            },
        }


@dataclass
class RestFault:
    """One scripted REST misbehaviour for paths starting with ``prefix``."""

    prefix: str
    times: int
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Chain:
    """The active chain (by height) plus every block ever made (orphans stay fetchable)."""

    def __init__(self, *, start_height: int = 890_000, start_time: int = 1_743_300_000) -> None:
        self.blocks: dict[int, DemoBlock] = {}
        self.by_hash: dict[str, DemoBlock] = {}
        self.start_height = start_height
        self.start_time = start_time
        self.branch = 0

    @property
    def tip(self) -> DemoBlock | None:
        return self.blocks[max(self.blocks)] if self.blocks else None

    def next_block(self, **overrides: Any) -> DemoBlock:
        tip = self.tip
        height = tip.height + 1 if tip else self.start_height
        prev = tip.hash if tip else fake_hash("genesis-parent", height)
        ts = tip.timestamp + 600 if tip else self.start_time
        fields: dict[str, Any] = {
            "height": height,
            "hash": fake_hash(height, self.branch),
            "prev_hash": prev,
            "timestamp": ts,
            "pool": SYNTHETIC_POOLS[height % len(SYNTHETIC_POOLS)],
            "fees_sats": 2_000_000 + (height * 104_729) % 3_000_000,
            "tx_count": 2000 + height % 2000,
        }
        if tip is not None:
            fields["bits"], fields["difficulty"] = tip.bits, tip.difficulty
        fields.update(overrides)
        block = DemoBlock(**fields)
        self.blocks[block.height] = block
        self.by_hash[block.hash] = block
        return block

    def rewind(self, depth: int) -> list[DemoBlock]:
        """Drop the top ``depth`` blocks from the active chain (they become orphans)."""
        dropped = []
        for _ in range(min(depth, len(self.blocks))):
            dropped.append(self.blocks.pop(max(self.blocks)))
        self.branch += 1
        return dropped

    def newest(self, n: int) -> list[DemoBlock]:
        """The ``n`` newest active blocks, ascending height (the ``blocks`` message)."""
        heights = sorted(self.blocks)[-n:]
        return [self.blocks[h] for h in heights]

    def page(self, end_height: int, n: int = 15) -> list[DemoBlock]:
        """``/v1/blocks/:h``: up to ``n`` active blocks, newest first, ending at ``h``."""
        return [self.blocks[h] for h in range(end_height, end_height - n, -1) if h in self.blocks]


def difficulty_adjustment(chain: Chain, now: float) -> dict[str, Any] | None:
    """mempool's ``da`` (the non-early branch of its estimator, PROTOCOLS.md §1.4)."""
    tip = chain.tip
    if tip is None:
        return None
    h = tip.height
    in_epoch = h % EPOCH
    start = chain.blocks.get(h - in_epoch)
    da_time = start.timestamp if start else tip.timestamp - in_epoch * 600
    now_s = int(now)
    diff_s = max(0, now_s - da_time)
    time_avg_s = diff_s / in_epoch if in_epoch else 600.0
    if in_epoch:
        actual = (tip.timestamp if in_epoch == EPOCH - 1 else now_s) - da_time
        change = (600 / (max(actual, 1) / (in_epoch + 1)) - 1) * 100
    else:
        change = 0.0
    change = max(-75.0, min(300.0, change))
    remaining = EPOCH - in_epoch
    time_avg_ms = int(time_avg_s * 1000)
    remaining_ms = remaining * time_avg_ms
    return {
        "progressPercent": in_epoch / EPOCH * 100,
        "difficultyChange": change,
        "estimatedRetargetDate": now_s * 1000 + remaining_ms,
        "remainingBlocks": remaining,
        "remainingTime": remaining_ms,
        "previousRetarget": 0.0,
        "previousTime": da_time,  # seconds, unlike the rest (as upstream)
        "nextRetargetHeight": h + remaining,
        "timeAvg": time_avg_ms,
        "adjustedTimeAvg": time_avg_ms,
        "timeOffset": 0,
        "expectedBlocks": diff_s / 600,
    }


class _Client:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.wants: set[str] = set()


class MempoolDemoServer:
    """Serve ``/api/v1/ws`` and the REST endpoints from a scripted :class:`Chain`.

    Use as ``async with MempoolDemoServer() as srv:`` then ``srv.ws_url`` / ``srv.rest_url``.
    ``clock`` is the server's wall clock for ``da`` (the demo maps replay time onto it).
    """

    def __init__(
        self,
        chain: Chain | None = None,
        *,
        clock: Callable[[], float] = time.time,
        stats_interval_s: float | None = None,
    ) -> None:
        self.chain = chain or Chain()
        self.clock = clock
        self.stats_interval_s = stats_interval_s
        self.price: dict[str, Any] | None = None
        self.daily_prices: list[dict[str, Any]] = []
        #: explicit ``/v1/mining/hashrate/1y`` payload; None = derived from the chain
        self.hashrate_payload: dict[str, Any] | None = None
        # fault hooks
        self.answer_pings = True
        self.rest_faults: list[RestFault] = []
        # observations
        self.hits: Counter[str] = Counter()
        self.block_page_requests: list[int] = []
        self.client_frames: list[str] = []
        self.ws_connections = 0
        self.rest_in_flight = 0
        self.rest_max_in_flight = 0
        self._clients: list[_Client] = []
        self._runner: web.AppRunner | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.port = 0

    # --------------------------------------------------------------------- lifecycle
    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.base}/api/v1/ws"

    @property
    def rest_url(self) -> str:
        return f"http://{self.base}/api"

    def make_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v1/ws", self._ws_handler)
        r.add_get("/api/blocks/tip/height", self._tip_height)
        r.add_get("/api/blocks/tip/hash", self._tip_hash)
        r.add_get("/api/v1/blocks", self._blocks_page)
        r.add_get("/api/v1/blocks/{height}", self._blocks_page)
        r.add_get("/api/v1/difficulty-adjustment", self._da)
        r.add_get("/api/v1/prices", self._prices)
        r.add_get("/api/v1/historical-price", self._historical_price)
        r.add_get("/api/v1/mining/hashrate/{interval}", self._hashrate)
        app.middlewares.append(self._rest_middleware)
        return app

    async def start(self) -> MempoolDemoServer:
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.stats_interval_s:
            self._stats_task = asyncio.create_task(self._stats_loop(), name="demo-mempool-stats")
        log.info("demo mempool server on %s (synthetic/replayed data)", self.base)
        return self

    async def close(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MempoolDemoServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --------------------------------------------------------------------- scripting
    async def add_block(self, *, push: bool = True, **overrides: Any) -> DemoBlock:
        """Mine one block on the tip; push it to ``blocks`` wanters unless ``push=False``
        (a block "missed" while the client was away)."""
        block = self.chain.next_block(**overrides)
        if push:
            await self.push_block(block)
        return block

    async def push_block(self, block: DemoBlock, *, extra: dict[str, Any] | None = None) -> None:
        """Send a ``block`` frame (also to re-send duplicates or stale blocks on purpose)."""
        for client in list(self._clients):
            msg: dict[str, Any] = {}
            if "blocks" in client.wants:
                msg["block"] = block.to_json()
            if "stats" in client.wants:
                msg.update(self._stats_payload())
            if msg:
                msg.update(extra or {})
                await self._send(client, msg)

    async def reorg(self, depth: int, new_blocks: int | None = None) -> list[DemoBlock]:
        """Replace the top ``depth`` blocks with ``new_blocks`` (default depth + 1) on a
        competing branch, then re-send the whole ``blocks`` list (and ``da``) like mempool."""
        self.chain.rewind(depth)
        made = [
            self.chain.next_block() for _ in range(depth + 1 if new_blocks is None else new_blocks)
        ]
        for client in list(self._clients):
            if "blocks" in client.wants:
                msg: dict[str, Any] = {"blocks": [b.to_json() for b in self.chain.newest(8)]}
                da = difficulty_adjustment(self.chain, self.clock())
                if da is not None:
                    msg["da"] = da
                await self._send(client, msg)
        return made

    async def set_price(self, usd: float, *, at: float | None = None) -> None:
        """Update ``conversions`` and push it to every client (mempool does, unsubscribed)."""
        t = int(self.clock() if at is None else at)
        self.price = {"time": t, "USD": usd, "EUR": -1, "GBP": -1, "CAD": -1, "CHF": -1,
                      "AUD": -1, "JPY": -1}  # fmt: skip
        await self.broadcast({"conversions": self.price})

    async def broadcast(self, msg: dict[str, Any] | str) -> None:
        for client in list(self._clients):
            await self._send(client, msg)

    async def send_raw(self, text: str | bytes) -> None:
        """Fault hook: send any frame (garbage, truncated JSON, oversized) to every client."""
        for client in list(self._clients):
            with contextlib.suppress(Exception):
                if isinstance(text, bytes):
                    await client.ws.send_bytes(text)
                else:
                    await client.ws.send_str(text)

    async def drop_connections(self) -> None:
        """Fault hook: cut every websocket (no close handshake from the client's view)."""
        for client in list(self._clients):
            transport = client.request.transport
            if transport is not None:
                transport.abort()  # an abrupt cut, as a network failure looks
            else:
                with contextlib.suppress(Exception):
                    await client.ws.close()
        self._clients.clear()

    def fail_rest(
        self,
        prefix: str,
        *,
        times: int = 1,
        status: int = 500,
        retry_after: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Fault hook: the next ``times`` requests under ``/api`` + ``prefix`` answer
        ``status`` (with ``Retry-After`` if given) after ``delay_s``. ``status=200`` with a
        delay is a slow-but-correct answer (client timeouts)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.rest_faults.append(RestFault(prefix, times, status, headers, delay_s))

    def set_daily_prices(self, points: list[tuple[int, float]]) -> None:
        self.daily_prices = [{"time": t, "USD": p} for t, p in points]

    @property
    def clients(self) -> int:
        return len(self._clients)

    # --------------------------------------------------------------------- websocket
    def _stats_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mempoolInfo": {"loaded": True, "size": 42_000, "bytes": 20_000_000},
            "vBytesPerSecond": 1500,
            "fees": {"fastestFee": 5, "halfHourFee": 4, "hourFee": 3, "economyFee": 2,
                     "minimumFee": 1},
        }  # fmt: skip
        da = difficulty_adjustment(self.chain, self.clock())
        if da is not None:
            out["da"] = da
        return out

    async def _send(self, client: _Client, msg: dict[str, Any] | str) -> None:
        text = msg if isinstance(msg, str) else json.dumps(msg)
        try:
            await client.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            with contextlib.suppress(ValueError):
                self._clients.remove(client)

    async def _stats_loop(self) -> None:
        assert self.stats_interval_s
        while True:
            await asyncio.sleep(self.stats_interval_s)
            for client in list(self._clients):
                if "stats" in client.wants:
                    await self._send(client, self._stats_payload())

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * CLIENT_FRAME_LIMIT)
        await ws.prepare(request)
        client = _Client(ws, request)
        self._clients.append(client)
        self.ws_connections += 1
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                data = msg.data
                self.client_frames.append(data)
                if len(data) > CLIENT_FRAME_LIMIT:
                    break  # mempool terminates the socket
                try:
                    req = json.loads(data)
                except ValueError:
                    break  # mempool closes on any unparseable frame
                if not isinstance(req, dict):
                    break
                await self._handle_request(client, req)
        finally:
            with contextlib.suppress(ValueError):
                self._clients.remove(client)
        return ws

    async def _handle_request(self, client: _Client, req: dict[str, Any]) -> None:
        action = req.get("action")
        if action == "ping":
            if self.answer_pings:
                await self._send(client, {"pong": True})
        elif action == "init":
            if self.chain.tip is None:
                return  # like mempool: nothing until it has blocks
            blob: dict[str, Any] = {
                **self._stats_payload(),
                "blocks": [b.to_json() for b in self.chain.newest(8)],
                "loadingIndicators": {},
                "backendInfo": {"hostname": "demo", "version": "demo", "gitCommit": "demo"},
            }
            if self.price is not None:
                blob["conversions"] = self.price
            await self._send(client, blob)
        elif action == "want" and isinstance(req.get("data"), list):
            wanted = {w for w in req["data"] if isinstance(w, str)}
            new = wanted - client.wants
            client.wants = wanted  # the list replaces the previous one
            reply: dict[str, Any] = {}
            if "blocks" in new and self.chain.tip is not None:
                reply["blocks"] = [b.to_json() for b in self.chain.newest(8)]
            if "stats" in new:
                reply.update(self._stats_payload())
            if reply:
                await self._send(client, reply)
        elif req.get("refresh-blocks") is True:
            await self._send(client, {"blocks": [b.to_json() for b in self.chain.newest(8)]})

    # --------------------------------------------------------------------- REST
    @web.middleware
    async def _rest_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        path = request.path
        if path == "/api/v1/ws":
            return await handler(request)  # type: ignore[no-any-return]
        self.hits[path] += 1
        self.rest_in_flight += 1
        self.rest_max_in_flight = max(self.rest_max_in_flight, self.rest_in_flight)
        try:
            for fault in self.rest_faults:
                if fault.times > 0 and path.startswith("/api" + fault.prefix):
                    fault.times -= 1
                    if fault.delay_s:
                        await asyncio.sleep(fault.delay_s)
                    if fault.status != 200:
                        return web.Response(status=fault.status, headers=fault.headers)
                    break
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            self.rest_in_flight -= 1

    async def _tip_height(self, request: web.Request) -> web.Response:
        tip = self.chain.tip
        if tip is None:
            return web.Response(status=404, text="Block not found")
        return web.Response(text=str(tip.height), content_type="text/plain")

    async def _tip_hash(self, request: web.Request) -> web.Response:
        tip = self.chain.tip
        if tip is None:
            return web.Response(status=404, text="Block not found")
        return web.Response(text=tip.hash, content_type="text/plain")

    async def _blocks_page(self, request: web.Request) -> web.Response:
        tip = self.chain.tip
        raw = request.match_info.get("height")
        if raw is None:
            end = tip.height if tip else 0
        else:
            try:
                end = int(raw)
            except ValueError:
                return web.Response(status=400, text="Invalid height")
        self.block_page_requests.append(end)
        return web.json_response([b.to_json() for b in self.chain.page(end)])

    async def _da(self, request: web.Request) -> web.Response:
        da = difficulty_adjustment(self.chain, self.clock())
        if da is None:
            return web.Response(status=503, text="Service Unavailable")
        return web.json_response(da)

    async def _prices(self, request: web.Request) -> web.Response:
        if self.price is None:
            return web.json_response({"time": int(self.clock()), "USD": -1})
        return web.json_response(self.price)

    async def _historical_price(self, request: web.Request) -> web.Response:
        currency = request.query.get("currency", "USD")
        prices = [
            {"time": p["time"], currency: p["USD"], "USD": p["USD"]} for p in self.daily_prices
        ]
        return web.json_response(
            {
                "prices": prices,
                "exchangeRates": {"USDEUR": 0.92, "USDGBP": 0.78, "USDCAD": 1.36,
                                  "USDCHF": 0.89, "USDAUD": 1.53, "USDJPY": 149.48},
            }
        )  # fmt: skip

    async def _hashrate(self, request: web.Request) -> web.Response:
        if self.hashrate_payload is not None:
            return web.json_response(self.hashrate_payload)
        return web.json_response(self._derived_hashrate())

    def _derived_hashrate(self) -> dict[str, Any]:
        """Daily figures from the chain: work of each UTC day's blocks / 86400."""
        per_day: dict[int, float] = {}
        for b in self.chain.blocks.values():
            day_end = (b.timestamp // 86400 + 1) * 86400  # mempool stamps the midnight ending it
            per_day[day_end] = per_day.get(day_end, 0.0) + b.difficulty * 2**32
        hashrates = [{"timestamp": t, "avgHashrate": w / 86400} for t, w in sorted(per_day.items())]
        difficulty = []
        prev: DemoBlock | None = None
        for h in sorted(self.chain.blocks):
            b = self.chain.blocks[h]
            if h % EPOCH == 0 or prev is None:
                ratio = b.difficulty / prev.difficulty if prev is not None else 1.0
                difficulty.append(
                    {"time": b.timestamp, "height": h, "difficulty": b.difficulty,
                     "adjustment": round(ratio, 6)}
                )  # fmt: skip
            prev = b
        tip = self.chain.tip
        return {
            "hashrates": hashrates,
            "difficulty": difficulty,
            "currentHashrate": hashrates[-1]["avgHashrate"] if hashrates else 0,
            "currentDifficulty": tip.difficulty if tip else 0,
        }
