"""Websocket transport: one resilient loop shared by every websocket source.

A source is a declarative :class:`WsAdapter` subclass (URL, keepalive timings, subscribe
frames, a pure ``parse``). :func:`run_ws` does everything else:

* reconnects with websockets' own ``connect(...)`` async-iterator loop; ``process_exception``
  classifies handshake/network errors (network errors, 5xx, 408/429 retried; other HTTP
  statuses such as 401/403/404 are fatal: ``FeedStatus`` DOWN, and the coroutine returns);
* a connection that opened and later dropped is followed by our own capped, jittered delay
  (websockets resets its backoff after every successful handshake, so a server that accepts
  and immediately drops would otherwise be hammered);
* sends the subscribe frames after every (re)connect;
* liveness: after ``idle_ping_after_s`` of silence it sends the adapter's app-level ping (if
  it has one) and expects *any* frame within ``pong_timeout_s``, else it reconnects. This is
  separate from freshness: ``stale_after_s`` without a data event marks the feed STALE while
  the connection stays up (heartbeats keep a connection alive but are not prices);
* a malformed, truncated, wrongly-typed or oversized frame is counted in ``adapter.stats``
  and logged at most once per ``BAD_FRAME_LOG_INTERVAL_S``; nothing from it is published;
* measures the offset between the upstream's timestamps and our clock (median of recent
  samples); beyond ``clock_offset_warn_s`` it is flagged in ``FeedStatus.detail``;
* publishes a ``FeedStatus`` on every change of state, error, reconnect count or detail.

The hot path (one frame) is: ``clock()``, one ``json.loads`` inside ``parse``, the event
constructor, ``bus.publish``. No per-frame tasks or timeouts: a single watchdog task per
connection handles every deadline.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)

from feeds.bus import Bus
from feeds.errors import FatalFeedError, FeedError
from feeds.events import Event, FeedState, FeedStatus, PriceTick

log = logging.getLogger(__name__)

#: At most one "bad frame" warning per adapter per this many seconds (the count keeps going).
BAD_FRAME_LOG_INTERVAL_S = 30.0
#: While nothing else changes, refresh ``last_message_at`` in the published status this often.
STATUS_REFRESH_S = 10.0
#: Number of recent (received_at - upstream time) samples the clock offset is the median of.
CLOCK_SAMPLES = 32
#: At most one clock-offset sample per this many seconds of loop time.
OFFSET_SAMPLE_S = 0.1

#: HTTP statuses at the handshake that retrying can fix (server trouble, rate limits).
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class BadFrame(ValueError):
    """A frame that is not what the protocol promises; counted and dropped, never published."""


class ReconnectRequested(Exception):
    """Raised by ``parse`` when the upstream asks us to reconnect (Bitstamp)."""


class UpstreamError(FeedError):
    """The upstream reported an error in-band (Coinbase ``type: error``, Kraken failed ack).

    Recorded as ``last_error`` and logged; the connection is kept (the server closes it if it
    wants to, and the freshness watchdog notices if no data follows).
    """


@dataclass(slots=True)
class WsStats:
    """Counters the transport keeps per adapter (tests and the benchmark read them)."""

    connects: int = 0
    reconnects: int = 0
    frames: int = 0
    events: int = 0
    bad_frames: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    pings_sent: int = 0
    upstream_errors: int = 0
    reconnects_requested: int = 0


class WsAdapter(abc.ABC):
    """One subclass per websocket upstream. Class attributes declare the protocol."""

    name: ClassVar[str]
    default_ws_url: ClassVar[str]
    #: Send the app-level ping after this much silence (None: no silence detection at all,
    #: websockets' protocol ping remains). If ``ping_frame`` returns None, nothing is sent but
    #: a frame is still expected within ``pong_timeout_s`` (Coinbase: the 1/s heartbeat).
    idle_ping_after_s: ClassVar[float | None] = 10.0
    pong_timeout_s: ClassVar[float] = 5.0
    #: Default data-freshness bound; overridable per instance (config ``stale_after``).
    default_stale_after_s: ClassVar[float] = 60.0
    #: Frames longer than this are counted as oversized and dropped.
    max_frame_bytes: ClassVar[int] = 64 * 1024

    def __init__(self, ws_url: str | None = None, *, stale_after_s: float | None = None) -> None:
        self.ws_url = ws_url or self.default_ws_url
        self.stale_after_s: float = (
            self.default_stale_after_s if stale_after_s is None else stale_after_s
        )
        self.stats = WsStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ws_url!r})"

    @abc.abstractmethod
    def subscribe_frames(self) -> list[str]:
        """Frames sent right after every (re)connect."""

    def ping_frame(self) -> str | None:
        """An app-level ping frame, or None when the protocol has none."""
        return None

    @abc.abstractmethod
    def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
        """Turn one frame into events. Raises only :class:`BadFrame`,
        :class:`ReconnectRequested` or :class:`UpstreamError`."""

    def upstream_time(self, event: Event) -> float | None:
        """The upstream's own timestamp of ``event`` for clock-offset measurement."""
        if type(event) is PriceTick:
            return event.time
        return None


# --- small pure helpers shared by the parsers -------------------------------------------------


#: The C scanner behind ``json.loads``, called directly for text frames (see ``load_object``).
_scan_once = json.JSONDecoder().scan_once


def load_object(frame: str | bytes) -> dict[str, Any]:
    """``json.loads`` once; the top level must be an object.

    A text frame goes straight to the C scanner ``json.loads`` ends up in: its Python layers
    (type checks, BOM check, two whitespace regex matches) cost about a third of the whole
    parse on a Coinbase ticker. The result is the same object; anything the scanner does
    not consume exactly from the first character to the last (leading or trailing
    whitespace, a BOM, extra data, nothing at all) goes through ``json.loads`` itself, so
    every error is still the one ``json.loads`` raises."""
    try:
        if type(frame) is str:
            try:
                obj, end = _scan_once(frame, 0)
            except StopIteration:
                end = -1
            if end != len(frame):
                obj = json.loads(frame)
        else:
            obj = json.loads(frame)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadFrame(f"not JSON: {exc}") from None
    if type(obj) is not dict:
        raise BadFrame(f"top level is {type(obj).__name__}, not an object")
    return obj


def as_price(value: object, what: str = "price") -> float:
    """A positive finite price from a JSON string or number (bools are not numbers)."""
    t = type(value)
    if t is str or t is float or t is int:
        try:
            price = float(value)  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            raise BadFrame(f"{what} {value!r:.40} is not a number") from None
        if math.isfinite(price) and price > 0.0:
            return price
        raise BadFrame(f"{what} {value!r:.40} is not a positive finite number")
    raise BadFrame(f"{what} has type {t.__name__}")


def rfc3339_to_epoch(value: object, what: str = "time") -> float:
    """Epoch seconds from an RFC 3339 string (``Z`` or offset; naive means UTC)."""
    if type(value) is not str:
        raise BadFrame(f"{what} has type {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadFrame(f"{what} {value!r:.40} is not RFC 3339") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        raise BadFrame(f"{what} {value!r:.40} out of range") from None


# --- reconnect policy -------------------------------------------------------------------------


def default_reconnect_delays(
    initial: float = 1.0, cap: float = 60.0, factor: float = 2.0
) -> Iterator[float]:
    """Capped exponential backoff with jitter in [d/2, d] (so many clients never sync up)."""
    delay = initial
    while True:
        yield random.uniform(delay / 2.0, delay)
        delay = min(cap, delay * factor)


def classify_connect_error(exc: Exception) -> FatalFeedError | None:
    """None if retrying may help, else the fatal error to report."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status >= 500 or status in _RETRYABLE_STATUSES:
            return None
        return FatalFeedError(f"handshake refused: HTTP {status}")
    if isinstance(exc, InvalidURI):
        return FatalFeedError(f"bad websocket URL: {exc}")
    if isinstance(exc, (OSError, TimeoutError, InvalidMessage, InvalidHandshake)):
        # Network trouble, EOF during the handshake, proxies answering nonsense: transient.
        return None
    return FatalFeedError(f"unexpected connect error: {type(exc).__name__}: {exc}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} at handshake"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


# --- the loop -----------------------------------------------------------------------------------


async def run_ws(
    adapter: WsAdapter,
    bus: Bus,
    *,
    clock: Callable[[], float] = time.time,
    reconnect_delays: Callable[[], Iterator[float]] | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 2.0,
    clock_offset_warn_s: float = 10.0,
) -> None:
    """Run ``adapter`` until cancelled (or until a fatal error, after publishing DOWN)."""
    await _Runner(
        adapter,
        bus,
        clock=clock,
        reconnect_delays=reconnect_delays or default_reconnect_delays,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        clock_offset_warn_s=clock_offset_warn_s,
    ).run()


class _Runner:
    def __init__(
        self,
        adapter: WsAdapter,
        bus: Bus,
        *,
        clock: Callable[[], float],
        reconnect_delays: Callable[[], Iterator[float]],
        open_timeout: float,
        close_timeout: float,
        clock_offset_warn_s: float,
    ) -> None:
        self.adapter = adapter
        self.bus = bus
        self.clock = clock
        self.reconnect_delays = reconnect_delays
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.clock_offset_warn_s = clock_offset_warn_s
        self.stats = adapter.stats
        self.log = logging.getLogger(f"{__name__}.{adapter.name}")
        # published status
        self.state: FeedState | None = None
        self.since = 0.0
        self.last_error: str | None = None
        self.last_message_at: float | None = None
        self.detail: str | None = None
        self._published_message_at: float | None = None
        # per-connection bookkeeping (monotonic loop time)
        self.last_frame_mono = 0.0
        self.last_data_mono = 0.0
        #: ``stats.events`` when the current connection opened (events of this session: the
        #: difference; one counter less to bump per frame)
        self.session_started_events = 0
        self.offsets: deque[float] = deque(maxlen=CLOCK_SAMPLES)
        self._bad_logged_at = -math.inf
        self._bad_suppressed = 0
        self._post_delays: Iterator[float] | None = None

    @property
    def session_events(self) -> int:
        """Events published on the current (or last) connection."""
        return self.stats.events - self.session_started_events

    # -- status --

    def _publish(self) -> None:
        assert self.state is not None
        now = self.clock()
        self._published_message_at = self.last_message_at
        self.bus.publish(
            FeedStatus(
                source=self.adapter.name,
                state=self.state,
                since=self.since,
                received_at=now,
                last_message_at=self.last_message_at,
                reconnects=self.stats.reconnects,
                last_error=self.last_error,
                detail=self.detail,
            )
        )

    def _set(self, state: FeedState, error: str | None = None, *, force: bool = False) -> None:
        changed = force or state is not self.state
        if state is not self.state:
            self.log.info("%s: %s -> %s", self.adapter.name, self.state, state)
            self.state = state
            self.since = self.clock()
        if error is not None and error != self.last_error:
            self.last_error = error
            changed = True
        if changed:
            self._publish()

    # -- connect loop --

    def _process_exception(self, exc: Exception) -> Exception | None:
        fatal = classify_connect_error(exc)
        if fatal is not None:
            return fatal
        self.stats.reconnects += 1
        self.log.info("%s: connect failed, retrying: %s", self.adapter.name, _describe(exc))
        # force: the reconnect count changed even when the state did not
        self._set(FeedState.BACKING_OFF, _describe(exc), force=True)
        return None

    async def run(self) -> None:
        self._set(FeedState.CONNECTING)
        connector = connect(
            self.adapter.ws_url,
            process_exception=self._process_exception,
            reconnect_delays=self.reconnect_delays,  # type: ignore[arg-type]
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            # Oversized-but-sane frames are counted by us without dropping the connection;
            # websockets only closes (1009) on truly absurd ones.
            max_size=max(4 * self.adapter.max_frame_bytes, 1 << 20),
            # No permessage-deflate: the feeds send a few small frames a second, so it saves
            # a few KB/s of bandwidth and costs a zlib call plus an extension layer on every
            # frame (a sixth of an idle collector's per-frame CPU).
            compression=None,
            user_agent_header="hashwatch (websockets)",
        )
        try:
            async with contextlib.aclosing(connector.__aiter__()) as connections:
                async for ws in connections:
                    reason, prompt = await self._session(ws)
                    # Leaving the loop body closes this connection; websockets then connects
                    # again immediately (it resets its own backoff after a successful
                    # handshake), so the pause after a dropped connection is ours.
                    self.stats.reconnects += 1
                    self._set(FeedState.BACKING_OFF, reason, force=True)
                    if self.session_events or self._post_delays is None:
                        self._post_delays = self.reconnect_delays()
                    delay = 0.0 if prompt else next(self._post_delays)
                    self.log.info(
                        "%s: connection ended (%s); reconnecting in %.3f s",
                        self.adapter.name,
                        reason,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    self._set(FeedState.CONNECTING)
        except FatalFeedError as exc:
            self.log.error("%s: giving up: %s", self.adapter.name, exc)
            self._set(FeedState.DOWN, str(exc))

    async def _session(self, ws: ClientConnection) -> tuple[str, bool]:
        """Serve one open connection; return (why it ended, reconnect without delay?)."""
        loop = asyncio.get_running_loop()
        self.stats.connects += 1
        self.last_frame_mono = self.last_data_mono = loop.time()
        self.session_started_events = self.stats.events
        self._set(FeedState.CONNECTING)
        end: list[str] = []
        watchdog = asyncio.create_task(self._watchdog(ws, end), name=f"{self.adapter.name}-wd")
        try:
            for frame in self.adapter.subscribe_frames():
                await ws.send(frame)
            outcome = await self._read(ws)
            if outcome is not None:
                return outcome, True
            if end:
                return end[0], False
            rcvd = ws.close_code
            return f"connection closed by upstream (code {rcvd})", False
        except ConnectionClosed as exc:
            return end[0] if end else f"connection lost: {_describe(exc)}", False
        finally:
            watchdog.cancel()
            # The watchdog may also have died of the same closed connection.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watchdog
            if ws.close_code is None:
                # Do not let the close handshake of a sick peer delay the reconnect long.
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _read(self, ws: ClientConnection) -> str | None:
        """The hot loop. Returns a reason only when the upstream asked for a reconnect."""
        adapter = self.adapter
        parse = adapter.parse
        publish = self.bus.publish
        clock = self.clock
        loop = asyncio.get_running_loop()
        # The loop's clock (what the watchdog compares with); asyncio's default loop reads
        # time.monotonic through a Python method, so call the C function directly.
        mono = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        stats = self.stats
        max_bytes = adapter.max_frame_bytes
        upstream_time = adapter.upstream_time
        offsets = self.offsets
        # The clock offset is a median of recent samples: one every OFFSET_SAMPLE_S is plenty,
        # and a flood of frames then costs no bookkeeping per frame.
        next_offset_at = -math.inf
        LIVE, STALE = FeedState.LIVE, FeedState.STALE  # hot-path locals
        async for frame in ws:
            received_at = clock()
            self.last_frame_mono = now = mono()
            self.last_message_at = received_at
            stats.frames += 1
            if len(frame) > max_bytes:
                self._bad("oversized", f"{len(frame)} > {max_bytes} bytes")
                continue
            try:
                events = parse(frame, received_at)
            except BadFrame as exc:
                self._bad("malformed", str(exc))
                continue
            except ReconnectRequested as exc:
                stats.reconnects_requested += 1
                return f"upstream requested reconnect{': ' + str(exc) if str(exc) else ''}"
            except UpstreamError as exc:
                stats.upstream_errors += 1
                self.log.warning("%s: upstream error: %s", adapter.name, exc)
                self.last_error = f"upstream error: {exc}"[:200]
                self._publish()
                continue
            except Exception as exc:  # a parser bug must not kill the feed
                self._bad("parser error", f"{type(exc).__name__}: {exc}", exc_info=True)
                continue
            if events:
                self.last_data_mono = now
                stats.events += len(events)
                for event in events:
                    publish(event)
                if now >= next_offset_at:
                    t = upstream_time(events[-1])
                    if t is not None:
                        offsets.append(received_at - t)
                        next_offset_at = now + OFFSET_SAMPLE_S
                if self.state is not LIVE:
                    self._set(LIVE)
            elif self.state is not LIVE and self.state is not STALE:
                # first well-formed frame on this connection: it is up (data may follow)
                self._set(LIVE)
        return None

    def _bad(self, reason: str, what: str, *, exc_info: bool = False) -> None:
        stats = self.stats
        stats.bad_frames += 1
        stats.bad_by_reason[reason] = stats.bad_by_reason.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._bad_logged_at >= BAD_FRAME_LOG_INTERVAL_S:
            self.log.warning(
                "%s: dropped %s frame (%s); %d similar suppressed since last report, %d total",
                self.adapter.name,
                reason,
                what,
                self._bad_suppressed,
                stats.bad_frames,
                exc_info=exc_info,
            )
            self._bad_logged_at = now
            self._bad_suppressed = 0
        else:
            self._bad_suppressed += 1

    # -- deadlines --

    async def _watchdog(self, ws: ClientConnection, end: list[str]) -> None:
        adapter = self.adapter
        loop = asyncio.get_running_loop()
        idle = adapter.idle_ping_after_s
        pong_timeout = adapter.pong_timeout_s
        stale_after = adapter.stale_after_s
        ping_sent_at: float | None = None
        next_refresh = loop.time() + STATUS_REFRESH_S
        while True:
            now = loop.time()
            wake = [next_refresh]
            # liveness
            if ping_sent_at is not None and self.last_frame_mono >= ping_sent_at:
                ping_sent_at = None
            if ping_sent_at is not None:
                if now - ping_sent_at >= pong_timeout:
                    end.append(f"no frame within {pong_timeout:g} s after ping")
                    self.log.warning("%s: %s; reconnecting", adapter.name, end[0])
                    await ws.close(code=1001, reason="ping timeout")
                    return
                wake.append(ping_sent_at + pong_timeout)
            elif idle is not None:
                if now - self.last_frame_mono >= idle:
                    frame = adapter.ping_frame()
                    if frame is not None:
                        self.stats.pings_sent += 1
                        await ws.send(frame)
                    ping_sent_at = now
                    wake.append(now + pong_timeout)
                else:
                    wake.append(self.last_frame_mono + idle)
            # freshness
            data_age = now - self.last_data_mono
            if data_age >= stale_after:
                if self.state is FeedState.LIVE or self.state is FeedState.CONNECTING:
                    self.log.warning(
                        "%s: no data for %.1f s; marking stale", adapter.name, data_age
                    )
                    self._set(FeedState.STALE)
            else:
                wake.append(self.last_data_mono + stale_after)
            # clock offset and periodic refresh of last_message_at
            self._check_clock_offset()
            if now >= next_refresh:
                next_refresh = now + STATUS_REFRESH_S
                if self.last_message_at != self._published_message_at:
                    self._publish()
            await asyncio.sleep(max(0.0, min(wake) - loop.time()) + 0.0005)

    def _check_clock_offset(self) -> None:
        if not self.offsets:
            return
        offset = statistics.median(self.offsets)
        detail = None
        if abs(offset) > self.clock_offset_warn_s:
            ahead = "ahead of" if offset > 0 else "behind"
            detail = f"clock offset {abs(offset):.1f} s {ahead} upstream timestamps"
        if detail != self.detail:
            if detail:
                self.log.warning("%s: %s", self.adapter.name, detail)
            self.detail = detail
            self._publish()


__all__ = [
    "BadFrame",
    "FatalFeedError",
    "ReconnectRequested",
    "UpstreamError",
    "WsAdapter",
    "WsStats",
    "as_price",
    "classify_connect_error",
    "default_reconnect_delays",
    "load_object",
    "rfc3339_to_epoch",
    "run_ws",
]
