"""Polite HTTP for REST upstreams: bounded concurrency, honoured 429s, bounded retries.

Every REST source (mempool backfill, exchange fallback polling) goes through one
``PoliteHttp`` per upstream so that the upstream sees at most ``max_in_flight`` requests from
us at once, and a ``429 Too Many Requests`` pauses *every* request to that upstream for the
``Retry-After`` it asked for, not only the one that was refused.

Classification (what retrying can and cannot fix):

* 2xx -> the body;
* 429, and 5xx with ``Retry-After`` -> wait exactly what the server asked, then retry;
* 5xx, timeouts, connection errors -> retry after a capped, jittered backoff, a bounded number
  of times, then ``FeedError``;
* any other status (4xx: bad path, bad parameter, auth) -> ``FatalFeedError`` at once.

``poll_forever`` runs a poll coroutine repeatedly and schedules the next run only when the
current one has finished, so polls can never overlap or stack up behind a slow upstream.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp

from feeds.errors import FatalFeedError, FeedError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: A server asking for more than this is obeyed only up to this long per attempt; the bounded
#: retry count then turns a pathological ``Retry-After`` into a ``FeedError``, not a hang.
MAX_RETRY_AFTER_S = 3600.0


def default_retry_delays(
    base: float = 1.0, cap: float = 60.0, attempts: int = 5
) -> Iterator[float]:
    """Capped exponential backoff with "equal jitter": half fixed, half random.

    The jitter keeps several clients that failed together from retrying in lockstep.
    """
    for n in range(attempts):
        ceiling = min(cap, base * 2**n)
        yield ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date; None if invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are always GMT; be strict
        return None
    return max(0.0, when.timestamp() - now)


class PoliteHttp:
    """A small, polite GET-only client for one upstream (``name`` is used in logs/errors).

    ``retry_delays`` is a factory giving a fresh iterator of backoff delays per request; its
    length bounds the number of retries (tests inject millisecond delays). ``sleep`` and
    ``clock`` are injectable so that tests can check ``Retry-After`` was honoured without
    waiting for it.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        max_in_flight: int = 2,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        retry_delays: Callable[[], Iterator[float]] | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        headers: dict[str, str] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self._session = session
        self._own_session = session is None
        self._retry_delays = retry_delays or default_retry_delays
        self._sleep = sleep
        self._clock = clock
        self._headers = {"User-Agent": "hashwatch/0.1", **(headers or {})}
        self._sem = asyncio.Semaphore(max_in_flight)
        # Wall-clock time before which no request may start (set by 429/Retry-After). Shared
        # so that one refusal pauses every request to this upstream.
        self._pause_until = 0.0
        #: counters for status reporting and tests
        self.requests = 0
        self.retries = 0
        self.in_flight = 0
        self.max_seen_in_flight = 0
        self.last_error: str | None = None

    def url(self, path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    async def get_text(self, path: str, params: dict[str, Any] | None = None) -> str:
        return await self._request(path, params)

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded JSON body, whatever the Content-Type says (some upstreams lie)."""
        text = await self._request(path, params)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FeedError(f"{self.name}: {path}: response is not JSON ({exc})") from exc

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> PoliteHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
            self._own_session = True
        return self._session

    async def _wait_pause(self) -> None:
        # Sleep once for the current pause; again only if another 429 extended it meanwhile
        # (never spin on the clock, so an injected sleep need not advance an injected clock).
        while True:
            target = self._pause_until
            delay = target - self._clock()
            if delay <= 0:
                return
            await self._sleep(delay)
            if self._pause_until <= target:
                return

    async def _request(self, path: str, params: dict[str, Any] | None) -> str:
        url = self.url(path)
        delays = self._retry_delays()
        attempt = 0
        while True:
            attempt += 1
            await self._wait_pause()
            status: int | None = None
            retry_after: str | None = None
            error: str
            try:
                async with self._sem:
                    self.in_flight += 1
                    self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
                    self.requests += 1
                    try:
                        async with self._get_session().get(
                            url,
                            params=params,
                            timeout=aiohttp.ClientTimeout(total=self.timeout),
                        ) as resp:
                            status = resp.status
                            if 200 <= status < 300:
                                body = await resp.read()
                                return body.decode("utf-8", errors="replace")
                            retry_after = resp.headers.get("Retry-After")
                            error = f"HTTP {status}"
                    finally:
                        self.in_flight -= 1
            except TimeoutError:
                error = f"timeout after {self.timeout:g}s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"

            self.last_error = error
            if status is not None and status != 429 and not 500 <= status < 600:
                raise FatalFeedError(f"{self.name}: GET {path} -> {error}")

            asked: float | None = None
            if status is not None:  # 429, or 5xx that may also say when to come back
                asked = parse_retry_after(retry_after, self._clock())
            backoff = next(delays, None)
            if backoff is None:
                raise FeedError(f"{self.name}: GET {path} failed {attempt} times: {error}")
            self.retries += 1
            if asked is not None:
                # The pause is shared: the top of the loop (ours and every other request's)
                # waits it out before sending anything to this upstream again.
                asked = min(asked, MAX_RETRY_AFTER_S)
                self._pause_until = max(self._pause_until, self._clock() + asked)
                log.warning("%s: GET %s: %s; Retry-After %.3gs", self.name, path, error, asked)
            else:
                log.warning(
                    "%s: GET %s: %s; retry %d in %.3gs", self.name, path, error, attempt, backoff
                )
                await self._sleep(backoff)


async def poll_forever(
    fn: Callable[[], Awaitable[object]],
    interval_s: float | Callable[[], float],
    *,
    name: str = "poll",
    sleep: Sleep = asyncio.sleep,
    initial_delay_s: float = 0.0,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Call ``fn`` forever; the next call is scheduled ``interval_s`` after this one *ends*.

    ``FeedError`` from one poll is logged and reported to ``on_error``, and polling goes on;
    ``FatalFeedError`` (retrying cannot fix it) is reported and re-raised. Cancelling the
    task stops the loop cleanly, mid-request or mid-sleep.
    """
    if initial_delay_s > 0:
        await sleep(initial_delay_s)
    while True:
        try:
            await fn()
        except FatalFeedError as exc:
            log.error("%s: giving up: %s", name, exc)
            if on_error is not None:
                on_error(exc)
            raise
        except FeedError as exc:
            log.warning("%s: poll failed: %s", name, exc)
            if on_error is not None:
                on_error(exc)
        interval = interval_s() if callable(interval_s) else interval_s
        await sleep(interval)
