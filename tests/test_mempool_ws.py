"""mempool.space websocket adapter: pure parsers on real fixtures, then the real transport
against the local demo server (live pushes, reorg re-send, faults, keepalive)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from feeds.bus import Bus
from feeds.demo.mempool_server import MempoolDemoServer
from feeds.events import Block, DifficultyAdjustment, FeedState, FeedStatus, PriceTick
from feeds.sources.mempool_ws import MempoolWs, parse_block, parse_da
from feeds.transport import BadFrame, run_ws
from tests.support_mempool import BlockStore, fixture, fixture_text, ms_delays, wait_until

T = 1_750_000_000.0

# --- parsers on real payloads ---------------------------------------------------------------


def test_block_push_fixture() -> None:
    (ev,) = MempoolWs().parse(fixture_text("ws_push_block.recorded_890448.json"), T)
    assert isinstance(ev, Block)
    assert ev.height == 890448
    assert ev.hash == "000000000000000000019bfe551da67e0d93dda4b355d16f1fdb4031ba7e5d61"
    assert ev.prev_hash == "0000000000000000000004cc6260ec7065ee8f65591864fb4c720ec110e3e2ab"
    assert ev.time == 1743541850
    assert ev.bits == 386038124
    assert ev.difficulty == 113757508810854.0
    assert ev.tx_count == 2229
    assert ev.fees_sats == 2998786
    assert ev.reward_sats == 315498786
    assert ev.pool == "Braiins Pool"
    assert ev.received_at == T
    assert ev.source == "mempool"
    assert ev.backfill is False


def test_init_blob_gives_blocks_da_and_price() -> None:
    evs = MempoolWs().parse(fixture_text("ws_response_init.recorded_2024-03-31.json"), T)
    blocks = [e for e in evs if isinstance(e, Block)]
    assert [b.height for b in blocks] == list(range(837043, 837051))
    assert all(b.backfill for b in blocks)  # catch-up list, not seen arriving
    (da,) = [e for e in evs if isinstance(e, DifficultyAdjustment)]
    # ms upstream -> s; percent stays percent
    assert da.estimated_retarget_time == pytest.approx(1712766704.114)
    assert da.remaining_blocks == 1606
    assert da.next_retarget_height == 838656
    assert da.previous_retarget_pct == pytest.approx(-0.9778871328980188)
    assert da.difficulty_change_pct == pytest.approx(5.914788959658535)
    (tick,) = [e for e in evs if isinstance(e, PriceTick)]
    assert (tick.price_usd, tick.time, tick.source) == (69880.0, 1711854906.0, "mempool")


def test_multi_key_frame_dispatches_every_known_key() -> None:
    frame = fixture("ws_push_block.recorded_890448.json")  # block + mempool-blocks + txConfirmed
    frame["da"] = fixture("ws_da.recorded_2024-03-31.extracted.json")
    frame["conversions"] = fixture("ws_push_conversions.extracted.json")["conversions"]
    frame["someFutureKey"] = {"x": 1}
    evs = MempoolWs().parse(json.dumps(frame), T)
    assert [type(e) for e in evs] == [Block, DifficultyAdjustment, PriceTick]


def test_reorg_resend_lists_every_block() -> None:
    evs = MempoolWs().parse(fixture_text("ws_response_want_blocks.recorded_2025-04-01.json"), T)
    assert [e.height for e in evs if isinstance(e, Block)] == list(range(890440, 890448))


def test_conversions_unavailable_gives_nothing() -> None:
    assert MempoolWs().parse('{"conversions": {"time": 1711854906, "USD": -1}}', T) == []
    assert MempoolWs().parse('{"conversions": {"time": 1711854906, "EUR": 5}}', T) == []


def test_pong_and_unknown_keys_are_liveness_only() -> None:
    a = MempoolWs()
    assert a.parse(fixture_text("ws_response_pong.json"), T) == []
    assert a.parse('{"mempool-blocks": [], "loadingIndicators": {}}', T) == []


def test_da_previous_time_is_seconds_rest_ms() -> None:
    da_obj = fixture("ws_da.docs.extracted.json")
    da = parse_da(da_obj, T)
    assert da.estimated_retarget_time == pytest.approx(da_obj["estimatedRetargetDate"] / 1000)
    # mempool's own "now" when it computed da, used for the clock-offset check
    from feeds.sources.mempool_ws import da_server_time

    server_now = da_server_time(da_obj)
    assert server_now is not None
    assert da_obj["previousTime"] < server_now < da_obj["previousTime"] + 14 * 86400


def test_da_is_throttled_unless_epoch_position_changes() -> None:
    a = MempoolWs()
    da = json.dumps({"da": fixture("ws_da.docs.extracted.json")})
    assert len(a.parse(da, T)) == 1
    assert a.parse(da, T + 2) == []  # same epoch position, 2 s later: throttled
    assert len(a.parse(da, T + 61)) == 1
    moved = fixture("ws_da.docs.extracted.json")
    moved["remainingBlocks"] -= 1
    assert len(a.parse(json.dumps({"da": moved}), T + 62)) == 1


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"block": ',  # truncated
        "[1, 2]",
        '{"block": []}',
        '{"block": {"height": "890448"}}',
        '{"blocks": {"height": 1}}',
        '{"da": {"progressPercent": "x"}}',
        '{"conversions": {"time": "yesterday", "USD": 5}}',
        '{"conversions": {"time": 1, "USD": true}}',
    ],
)
def test_bad_frames_raise_badframe(frame: str) -> None:
    with pytest.raises(BadFrame):
        MempoolWs().parse(frame, T)


def test_wrong_typed_required_block_fields_are_rejected() -> None:
    good = fixture("ws_push_block.recorded_890448.json")["block"]
    for key, bad in [
        ("height", True),
        ("height", -1),
        ("id", "xyz"),
        ("bits", 0),
        ("timestamp", 1.5),
        ("previousblockhash", None),
    ]:
        with pytest.raises(BadFrame):
            parse_block({**good, key: bad}, T)
    # null extras (mempool sends them for some blocks) mean "unknown", not an error
    b = parse_block({**good, "extras": {"pool": None, "totalFees": None}}, T)
    assert (b.pool, b.fees_sats, b.reward_sats) == (None, None, None)


def test_subscribe_and_ping_frames() -> None:
    a = MempoolWs()
    assert [json.loads(f) for f in a.subscribe_frames()] == [
        {"action": "init"},
        {"action": "want", "data": ["blocks", "stats"]},
    ]
    assert json.loads(a.ping_frame() or "") == {"action": "ping"}
    assert (a.idle_ping_after_s, a.pong_timeout_s) == (30.0, 5.0)


# --- against the local demo server ------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[MempoolDemoServer]:
    async with MempoolDemoServer() as srv:
        for _ in range(20):
            await srv.add_block(push=False)
        yield srv


class Harness:
    def __init__(self, srv: MempoolDemoServer, adapter: MempoolWs) -> None:
        self.bus = Bus()
        self.store = BlockStore(self.bus)
        self.adapter = adapter
        self.srv = srv
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(
            run_ws(self.adapter, self.bus, reconnect_delays=ms_delays, close_timeout=0.2)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.store.close()

    def blocks(self) -> list[Block]:
        self.store.drain()
        return self.store.block_events

    def of(self, kind: type) -> list:
        self.store.drain()
        return [e for e in self.store.events if isinstance(e, kind)]


async def test_live_block_push_reaches_bus(server: MempoolDemoServer) -> None:
    async with Harness(server, MempoolWs(server.ws_url)) as h:
        await wait_until(lambda: len(h.blocks()) >= 8)  # the want reply: 8 newest
        assert server.client_frames[:2] == MempoolWs().subscribe_frames()
        new = await server.add_block()
        await wait_until(lambda: any(b.hash == new.hash for b in h.blocks()))
        pushed = [b for b in h.blocks() if b.hash == new.hash][-1]
        assert pushed.backfill is False
        assert pushed.height == new.height
        assert pushed.fees_sats == new.fees_sats
        assert pushed.pool == new.pool
        # the same frame carried stats keys (da) too: multi-key in the wild
        assert h.of(DifficultyAdjustment)
        status = h.of(FeedStatus)
        assert status[-1].state is FeedState.LIVE


async def test_reorg_resend_publishes_both_branches(server: MempoolDemoServer) -> None:
    async with Harness(server, MempoolWs(server.ws_url)) as h:
        await wait_until(lambda: len(h.blocks()) >= 8)
        old = [server.chain.blocks[hh] for hh in sorted(server.chain.blocks)[-2:]]
        made = await server.reorg(depth=2)  # 3 new blocks replace the top 2
        await wait_until(lambda: {b.hash for b in made} <= {b.hash for b in h.blocks()})
        published = {b.hash for b in h.blocks()}
        assert {b.hash for b in old} <= published
        # the store, fed only what upstream said, ends with upstream's chain and the orphans
        assert h.store.orphaned == {b.hash for b in old}
        tip = max(server.chain.blocks)
        for height in range(tip - 7, tip + 1):
            assert h.store.active[height] == server.chain.blocks[height].hash


async def test_duplicate_and_out_of_order_blocks_are_published_as_sent(
    server: MempoolDemoServer,
) -> None:
    async with Harness(server, MempoolWs(server.ws_url)) as h:
        await wait_until(lambda: len(h.blocks()) >= 8)
        n = len(h.blocks())
        tip = server.chain.tip
        older = server.chain.blocks[tip.height - 3]
        await server.push_block(tip)  # duplicate
        await server.push_block(older)  # out of order
        await wait_until(lambda: len(h.blocks()) >= n + 2)
        later = h.blocks()[n:]
        assert [(b.height, b.hash) for b in later] == [
            (tip.height, tip.hash),
            (older.height, older.hash),
        ]
        # nothing invented: every published hash is one the server has
        assert {b.hash for b in h.blocks()} <= set(server.chain.by_hash)
        assert len(h.store.active) == 8


async def test_conversions_push_becomes_price_tick(server: MempoolDemoServer) -> None:
    async with Harness(server, MempoolWs(server.ws_url)) as h:
        await wait_until(lambda: server.clients == 1 and len(h.blocks()) >= 8)
        await server.set_price(101_234, at=T)
        await wait_until(lambda: bool(h.of(PriceTick)))
        (tick,) = h.of(PriceTick)
        assert (tick.price_usd, tick.time, tick.source) == (101_234.0, T, "mempool")


async def test_bad_frames_are_counted_and_dropped_feed_survives(
    server: MempoolDemoServer,
) -> None:
    adapter = MempoolWs(server.ws_url)
    async with Harness(server, adapter) as h:
        await wait_until(lambda: len(h.blocks()) >= 8)
        n = len(h.blocks())
        good = server.chain.tip.to_json()
        await server.send_raw("garbage")
        await server.send_raw(json.dumps({"block": good})[:60])  # truncated
        await server.send_raw(json.dumps({"block": {**good, "height": "x"}}))  # wrong type
        await server.send_raw(json.dumps({"blocks": [good], "pad": "x" * (2 << 20)}))  # oversized
        new = await server.add_block()
        await wait_until(lambda: any(b.hash == new.hash for b in h.blocks()))
        assert adapter.stats.bad_frames == 4
        assert [b.hash for b in h.blocks()[n:]] == [new.hash]  # nothing from the bad frames
        assert server.ws_connections == 1  # no reconnect needed


async def test_dropped_connection_reconnects_and_resubscribes(server: MempoolDemoServer) -> None:
    async with Harness(server, MempoolWs(server.ws_url)) as h:
        await wait_until(lambda: server.clients == 1 and len(h.blocks()) >= 8)
        await server.drop_connections()
        missed = await server.add_block(push=False)
        await wait_until(lambda: server.ws_connections == 2 and server.clients == 1)
        # the want reply after reconnect carries the block pushed while we were away
        await wait_until(lambda: any(b.hash == missed.hash for b in h.blocks()))
        inits = [f for f in server.client_frames if json.loads(f).get("action") == "init"]
        assert len(inits) == 2
        assert h.adapter.stats.reconnects >= 1


async def test_ping_after_silence_and_pong_keeps_connection(server: MempoolDemoServer) -> None:
    adapter = MempoolWs(server.ws_url)
    adapter.idle_ping_after_s = 0.03  # type: ignore[misc]
    adapter.pong_timeout_s = 0.2  # type: ignore[misc]
    async with Harness(server, adapter):
        await wait_until(lambda: adapter.stats.pings_sent >= 3)
        assert '{"action": "ping"}' in server.client_frames
        assert server.ws_connections == 1


async def test_unanswered_ping_reconnects(server: MempoolDemoServer) -> None:
    server.answer_pings = False
    adapter = MempoolWs(server.ws_url)
    adapter.idle_ping_after_s = 0.03  # type: ignore[misc]
    adapter.pong_timeout_s = 0.03  # type: ignore[misc]
    async with Harness(server, adapter) as h:
        await wait_until(lambda: server.ws_connections >= 2)
        statuses = h.of(FeedStatus)
        assert any("after ping" in (s.last_error or "") for s in statuses)
