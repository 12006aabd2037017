"""REST price fallback: polled only while every price websocket is down.

Pollers (a feed's ``rest_url`` is the API base; the documented paths are appended):

* Coinbase ``GET {rest_url}/v2/prices/BTC-USD/spot`` -> ``data.amount`` (string);
* Kraken ``GET {rest_url}/0/public/Ticker?pair=XBTUSD`` -> ``result.XXBTZUSD.c[0]`` (the key
  is *not* the requested pair name);
* mempool ``GET {rest_url}/v1/prices`` -> ``USD`` (integer; ``-1`` means unavailable).

The ticks use their own source names (``coinbase_spot``, ``kraken_ticker``,
``mempool_prices``), each with its own ``FeedStatus``: the websocket source of the same
exchange is down while they run, and its status must keep saying so.

"Down" means not LIVE: a STALE websocket delivers no prices either. Start-up gets a grace
period (one interval) so that the websockets can connect before anything is polled.
A round polls every source concurrently (different upstreams), and the next round is
scheduled when the current one has ended, so polls never overlap. ``PoliteHttp`` honours
429 + ``Retry-After`` and retries 5xx/timeouts; a 4xx stops that one poller (DOWN).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from feeds.bus import Bus
from feeds.errors import FatalFeedError, FeedError
from feeds.events import FeedState, FeedStatus, PriceTick
from feeds.http import PoliteHttp
from feeds.sources.registry import PRICE_WS_SOURCES
from feeds.transport import BadFrame, as_price

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
STANDBY = "standby: websocket prices available"


def parse_coinbase_spot(body: Any, received_at: float) -> PriceTick | None:
    """``{"data":{"base":"BTC","currency":"USD","amount":"50000.00"}}``"""
    data = body.get("data") if type(body) is dict else None
    if type(data) is not dict:
        raise BadFrame("coinbase spot: no data object")
    if data.get("currency", "USD") != "USD":
        raise BadFrame(f"coinbase spot: currency {data.get('currency')!s:.10}")
    price = as_price(data.get("amount"), "amount")
    return PriceTick(
        source="coinbase_spot", price_usd=price, time=received_at, received_at=received_at
    )


def parse_kraken_ticker(body: Any, received_at: float) -> PriceTick | None:
    """``{"error":[],"result":{"XXBTZUSD":{"c":["3537.50000","0.25000000"], ...}}}``"""
    if type(body) is not dict:
        raise BadFrame("kraken ticker: not an object")
    errors = body.get("error")
    if errors:
        raise BadFrame(f"kraken ticker: error {errors!s:.100}")
    result = body.get("result")
    pair = result.get("XXBTZUSD") if type(result) is dict else None
    last = pair.get("c") if type(pair) is dict else None
    if type(last) is not list or not last:
        raise BadFrame("kraken ticker: no result.XXBTZUSD.c")
    price = as_price(last[0], "c[0]")
    return PriceTick(
        source="kraken_ticker", price_usd=price, time=received_at, received_at=received_at
    )


def parse_mempool_prices(body: Any, received_at: float) -> PriceTick | None:
    """``{"time":1703252411,"USD":43753,"EUR":40545, ...}``; ``USD: -1`` -> None."""
    if type(body) is not dict:
        raise BadFrame("mempool prices: not an object")
    usd = body.get("USD")
    if usd == -1 and type(usd) is int:
        return None
    price = as_price(usd, "USD")
    t = body.get("time")
    upstream = float(t) if type(t) is int and 0 < t < 1 << 40 else received_at
    return PriceTick(
        source="mempool_prices", price_usd=price, time=upstream, received_at=received_at
    )


@dataclass(frozen=True, slots=True)
class PricePoller:
    source: str  # the PriceTick/FeedStatus source name
    upstream: str  # the [feeds.<name>] section whose rest_url it uses
    path: str
    params: dict[str, str] | None
    parse: Callable[[Any, float], PriceTick | None]


POLLERS: tuple[PricePoller, ...] = (
    PricePoller("coinbase_spot", "coinbase", "/v2/prices/BTC-USD/spot", None, parse_coinbase_spot),
    PricePoller(
        "kraken_ticker", "kraken", "/0/public/Ticker", {"pair": "XBTUSD"}, parse_kraken_ticker
    ),
    PricePoller("mempool_prices", "mempool", "/v1/prices", None, parse_mempool_prices),
)

HttpFactory = Callable[[str, str], PoliteHttp]


class RestPriceFallback:
    """Watches the price websockets' ``FeedStatus`` and polls while none of them is LIVE."""

    def __init__(
        self,
        bus: Bus,
        pollers: Iterable[tuple[PricePoller, str]],
        watched: Iterable[str],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        grace_s: float | None = None,
        clock: Callable[[], float] = time.time,
        http_factory: HttpFactory | None = None,
    ) -> None:
        self.bus = bus
        self.interval_s = interval_s
        self.grace_s = interval_s if grace_s is None else grace_s
        self.clock = clock
        self._http_factory = http_factory or (lambda name, base: PoliteHttp(name, base))
        self._pollers = [(p, base) for p, base in pollers]
        self._watched = set(watched)
        self._ws_states: dict[str, FeedState | None] = dict.fromkeys(self._watched)
        self._http: dict[str, PoliteHttp] = {}
        self._dead: set[str] = set()
        self._states: dict[str, FeedState] = {}
        self._since: dict[str, float] = {}
        self.active = False
        self.rounds = 0
        self.polls = 0

    def all_down(self) -> bool:
        return not any(s is FeedState.LIVE for s in self._ws_states.values())

    def _status(
        self, source: str, state: FeedState, error: str | None = None, detail: str | None = None
    ) -> None:
        same = self._states.get(source) is state
        if same and error is None and state is not FeedState.LIVE:
            return
        now = self.clock()
        if not same:
            self._since[source] = now
        self._states[source] = state
        self.bus.publish(
            FeedStatus(
                source=source,
                state=state,
                since=self._since[source],
                received_at=now,
                last_message_at=now if state is FeedState.LIVE else None,
                last_error=error,
                detail=detail,
            )
        )

    def _absorb(self, batch: list[Any]) -> None:
        for ev in batch:
            if isinstance(ev, FeedStatus) and ev.source in self._watched:
                self._ws_states[ev.source] = ev.state

    async def run(self) -> None:
        sub = self.bus.subscribe(
            [FeedStatus], maxsize=1000, name="rest-fallback", replay_latest=True
        )
        loop = asyncio.get_running_loop()
        for poller, _ in self._pollers:
            self._status(poller.source, FeedState.DISABLED, detail=STANDBY)
        try:
            self._absorb(sub.get_nowait())
            down_since = loop.time() if self.all_down() else None
            next_round = 0.0
            while True:
                now = loop.time()
                if not self.all_down():
                    down_since = None
                    if self.active:
                        log.info("rest-prices: a price websocket is live again; standing by")
                        self.active = False
                        for poller, _ in self._pollers:
                            if poller.source not in self._dead:
                                self._status(poller.source, FeedState.DISABLED, detail=STANDBY)
                    timeout: float | None = None
                else:
                    if down_since is None:
                        down_since = now
                    if not self.active and now - down_since >= self.grace_s:
                        log.warning("rest-prices: every price websocket is down; polling REST")
                        self.active = True
                        next_round = now
                    if self.active and now >= next_round:
                        await self._round()
                        next_round = loop.time() + self.interval_s
                        continue  # re-check states gathered while polling
                    wake = next_round if self.active else down_since + self.grace_s
                    timeout = max(0.0, wake - loop.time())
                self._absorb(await sub.get_batch(timeout=timeout))
        finally:
            sub.close()
            for http in self._http.values():
                with contextlib.suppress(Exception):
                    await http.close()

    async def _round(self) -> None:
        self.rounds += 1
        jobs: list[Awaitable[None]] = [
            self._poll(p, base) for p, base in self._pollers if p.source not in self._dead
        ]
        await asyncio.gather(*jobs)

    async def _poll(self, poller: PricePoller, base_url: str) -> None:
        http = self._http.get(poller.source)
        if http is None:
            http = self._http[poller.source] = self._http_factory(poller.source, base_url)
        if self._states.get(poller.source) is not FeedState.LIVE:
            self._status(poller.source, FeedState.CONNECTING)
        self.polls += 1
        try:
            body = await http.get_json(poller.path, poller.params)
            tick = poller.parse(body, self.clock())
        except FatalFeedError as exc:
            log.error("rest-prices: %s: giving up: %s", poller.source, exc)
            self._dead.add(poller.source)
            self._status(poller.source, FeedState.DOWN, error=str(exc)[:200])
            return
        except (FeedError, BadFrame) as exc:
            log.warning("rest-prices: %s: poll failed: %s", poller.source, exc)
            self._status(poller.source, FeedState.BACKING_OFF, error=str(exc)[:200])
            return
        if tick is None:
            self._status(poller.source, FeedState.STALE, detail="upstream price unavailable")
            return
        self.bus.publish(tick)
        self._status(poller.source, FeedState.LIVE)


def fallback_from_config(
    feeds_cfg: Any,
    bus: Bus,
    *,
    clock: Callable[[], float] = time.time,
    http_factory: HttpFactory | None = None,
    grace_s: float | None = None,
) -> RestPriceFallback:
    """Build the fallback from the ``[feeds]`` config (duck-typed: ``rest_fallback_interval``
    and per-feed ``enabled``/``rest_url``)."""
    pollers: list[tuple[PricePoller, str]] = []
    for poller in POLLERS:
        cfg = getattr(feeds_cfg, poller.upstream, None)
        rest_url = getattr(cfg, "rest_url", None)
        if cfg is not None and getattr(cfg, "enabled", True) and rest_url:
            pollers.append((poller, rest_url))
    watched = []
    for name in PRICE_WS_SOURCES:
        cfg = getattr(feeds_cfg, name, None)
        if cfg is not None and getattr(cfg, "enabled", True):
            watched.append(name)
    interval = getattr(feeds_cfg, "rest_fallback_interval", DEFAULT_INTERVAL_S)
    return RestPriceFallback(
        bus,
        pollers,
        watched,
        interval_s=float(interval),
        grace_s=grace_s,
        clock=clock,
        http_factory=http_factory,
    )


async def run_rest_fallback(
    feeds_cfg: Any,
    bus: Bus,
    *,
    clock: Callable[[], float] = time.time,
    http_factory: HttpFactory | None = None,
    grace_s: float | None = None,
) -> None:
    """Run until cancelled (the runtime's entry point)."""
    fallback = fallback_from_config(
        feeds_cfg, bus, clock=clock, http_factory=http_factory, grace_s=grace_s
    )
    if not fallback._pollers:
        log.info("rest-prices: no REST price source configured")
        return
    await fallback.run()
