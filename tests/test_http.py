"""PoliteHttp against a real aiohttp server on 127.0.0.1: statuses, Retry-After, concurrency."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from feeds.errors import FatalFeedError, FeedError
from feeds.http import PoliteHttp, parse_retry_after, poll_forever


def ms_delays(n: int = 3) -> Iterator[float]:
    return iter([0.001] * n)


class R:
    """A response recipe (aiohttp response objects cannot be sent twice)."""

    def __init__(
        self,
        status: int = 200,
        *,
        text: str | None = None,
        json: object = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status, self.text, self.json = status, text, json
        self.headers, self.content_type = headers, content_type

    def build(self) -> web.Response:
        if self.text is None and self.json is not None:
            return web.json_response(self.json, status=self.status, headers=self.headers)
        return web.Response(
            status=self.status,
            text=self.text,
            headers=self.headers,
            content_type=self.content_type,
        )


class Script:
    """A queue of responses per path; the last one repeats. Counts hits and concurrency."""

    def __init__(self) -> None:
        self.responses: dict[str, list[R | float]] = {}
        self.hits: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.responses.get(path)
            if not queue:
                return web.json_response({"ok": True, "q": dict(request.query)})
            item = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(item, float):  # a slow answer, to trigger the client timeout
                await asyncio.sleep(item)
                return web.json_response({"slow": True})
            return item.build()
        finally:
            self.in_flight -= 1


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", script.handle)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield script, str(srv.make_url("/api"))
    finally:
        await srv.close()


class FakeTime:
    """An injected clock and sleep: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
        await asyncio.sleep(0)


async def test_get_json_and_text(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/blocks/tip/height"] = [R(text="890448")]
    async with PoliteHttp("t", base, retry_delays=ms_delays) as http:
        assert await http.get_text("/blocks/tip/height") == "890448"
        body = await http.get_json("/v1/x", params={"currency": "USD"})
    assert body == {"ok": True, "q": {"currency": "USD"}}


async def test_get_json_on_text_plain_body_still_decodes(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/n"] = [R(text="42", content_type="text/plain")]
    async with PoliteHttp("t", base, retry_delays=ms_delays) as http:
        assert await http.get_json("/n") == 42


async def test_non_json_body_is_feed_error(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/n"] = [R(text="<html>oops")]
    async with PoliteHttp("t", base, retry_delays=ms_delays) as http:
        with pytest.raises(FeedError, match="not JSON"):
            await http.get_json("/n")


async def test_429_retry_after_seconds_is_honoured(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/r"] = [
        R(status=429, headers={"Retry-After": "7"}),
        R(json=[1, 2]),
    ]
    ft = FakeTime()
    async with PoliteHttp(
        "t", base, retry_delays=ms_delays, sleep=ft.sleep, clock=ft.clock
    ) as http:
        assert await http.get_json("/r") == [1, 2]
    assert script.hits["/api/r"] == 2
    assert ft.sleeps == [pytest.approx(7.0)]


async def test_429_retry_after_http_date_is_honoured(server: tuple[Script, str]) -> None:
    script, base = server
    ft = FakeTime()
    when = email.utils.formatdate(ft.now + 120, usegmt=True)
    script.responses["/api/r"] = [
        R(status=429, headers={"Retry-After": when}),
        R(json="ok"),
    ]
    async with PoliteHttp(
        "t", base, retry_delays=ms_delays, sleep=ft.sleep, clock=ft.clock
    ) as http:
        assert await http.get_json("/r") == "ok"
    assert ft.sleeps == [pytest.approx(120.0, abs=1.0)]


async def test_429_pause_is_shared_by_concurrent_requests(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/a"] = [
        R(status=429, headers={"Retry-After": "30"}),
        R(json="a"),
    ]
    ft = FakeTime()
    async with PoliteHttp(
        "t", base, retry_delays=ms_delays, sleep=ft.sleep, clock=ft.clock
    ) as http:
        assert await http.get_json("/a") == "a"
        # The pause is over now (clock advanced); a fresh request goes straight through.
        n = len(ft.sleeps)
        assert await http.get_json("/b") == {"ok": True, "q": {}}
        assert len(ft.sleeps) == n
        # A new pause, set while another request is queued, delays that request too.
        http._pause_until = ft.now + 5
        assert await http.get_json("/b")
        assert ft.sleeps[-1] == pytest.approx(5.0)


async def test_500s_are_retried_then_succeed(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/f"] = [
        R(status=500),
        R(status=503),
        R(json={"x": 1}),
    ]
    async with PoliteHttp("t", base, retry_delays=ms_delays) as http:
        assert await http.get_json("/f") == {"x": 1}
        assert http.retries == 2
    assert script.hits["/api/f"] == 3


async def test_500s_give_up_after_bounded_retries(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/f"] = [R(status=502)]
    async with PoliteHttp("t", base, retry_delays=lambda: ms_delays(2)) as http:
        with pytest.raises(FeedError, match="HTTP 502") as info:
            await http.get_json("/f")
    assert not isinstance(info.value, FatalFeedError)
    assert script.hits["/api/f"] == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_other_4xx_is_fatal_without_retry(server: tuple[Script, str], status: int) -> None:
    script, base = server
    script.responses["/api/g"] = [R(status=status)]
    async with PoliteHttp("t", base, retry_delays=ms_delays) as http:
        with pytest.raises(FatalFeedError, match=str(status)):
            await http.get_json("/g")
    assert script.hits["/api/g"] == 1


async def test_timeout_is_retried(server: tuple[Script, str]) -> None:
    script, base = server
    script.responses["/api/slow"] = [0.5, R(json="fast")]
    async with PoliteHttp("t", base, timeout=0.05, retry_delays=ms_delays) as http:
        assert await http.get_json("/slow") == "fast"
        assert http.retries == 1
        assert "timeout" in (http.last_error or "")


async def test_connection_refused_is_feed_error() -> None:
    # Bind then close a port so nothing listens there.
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    async with PoliteHttp("t", f"http://127.0.0.1:{port}", retry_delays=ms_delays) as http:
        with pytest.raises(FeedError) as info:
            await http.get_json("/x")
    assert not isinstance(info.value, FatalFeedError)


@pytest.mark.parametrize("limit", [1, 2])
async def test_at_most_max_in_flight(server: tuple[Script, str], limit: int) -> None:
    script, base = server
    script.delay = 0.01
    async with PoliteHttp("t", base, max_in_flight=limit, retry_delays=ms_delays) as http:
        await asyncio.gather(*(http.get_json(f"/c/{i}") for i in range(8)))
    assert script.max_in_flight == limit  # measured at the server
    assert sum(script.hits.values()) == 8


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now) == 60.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after(None, now) is None


async def test_poll_forever_never_overlaps_and_survives_feed_errors() -> None:
    running = 0
    overlaps = 0
    calls = 0
    errors: list[Exception] = []
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal running, overlaps, calls
        running += 1
        overlaps = max(overlaps, running)
        calls += 1
        await asyncio.sleep(0.002)  # slower than the interval
        running -= 1
        if calls == 2:
            raise FeedError("transient")
        if calls == 5:
            done.set()

    task = asyncio.create_task(poll_forever(poll, 0.0, name="p", on_error=errors.append))
    await asyncio.wait_for(done.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlaps == 1
    assert calls >= 5
    assert [str(e) for e in errors] == ["transient"]


async def test_poll_forever_stops_on_fatal() -> None:
    async def poll() -> None:
        raise FatalFeedError("404")

    with pytest.raises(FatalFeedError):
        await asyncio.wait_for(poll_forever(poll, 0.0), 1)
