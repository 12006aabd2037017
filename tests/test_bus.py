from __future__ import annotations

import asyncio

from feeds.bus import Bus
from feeds.events import Block, FeedState, FeedStatus, PriceTick


def _tick(source: str, price: float, t: float = 0.0) -> PriceTick:
    return PriceTick(source=source, price_usd=price, time=t, received_at=t)


def _block(h: int) -> Block:
    return Block(
        height=h,
        hash=f"{h:064x}",
        prev_hash=None,
        time=h,
        bits=0x1701F303,
        source="t",
        received_at=0.0,
    )


async def test_fan_out_filters_by_kind() -> None:
    bus = Bus()
    prices = bus.subscribe([PriceTick])
    everything = bus.subscribe()
    bus.publish(_tick("a", 1.0))
    bus.publish(_block(1))
    assert [type(e) for e in prices.get_nowait()] == [PriceTick]
    assert [type(e) for e in everything.get_nowait()] == [PriceTick, Block]


async def test_slow_consumer_coalesces_prices_but_never_drops_blocks() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=2)
    for i in range(100):
        bus.publish(_tick("coinbase", float(i)))
        bus.publish(_tick("kraken", float(i) + 0.5))
    for h in range(10):
        bus.publish(_block(h))
    events = sub.get_nowait()
    blocks = [e.height for e in events if isinstance(e, Block)]
    assert blocks == list(range(10))
    ticks = [e for e in events if isinstance(e, PriceTick)]
    # two queued before the bound, then the newest per source
    assert len(ticks) == 4
    latest = {t.source: t.price_usd for t in ticks[2:]}
    assert latest == {"coinbase": 99.0, "kraken": 99.5}
    assert sub.coalesced == 2 * 99 - 2


async def test_get_batch_waits_and_times_out() -> None:
    bus = Bus()
    sub = bus.subscribe()
    assert await sub.get_batch(timeout=0.01) == []
    loop = asyncio.get_running_loop()
    loop.call_later(0.005, bus.publish, _tick("a", 2.0))
    batch = await sub.get_batch(timeout=1.0)
    assert [e.price_usd for e in batch] == [2.0]


async def test_replay_latest_gives_late_subscriber_current_state() -> None:
    bus = Bus()
    bus.publish(FeedStatus(source="kraken", state=FeedState.LIVE, since=1.0, received_at=1.0))
    bus.publish(FeedStatus(source="kraken", state=FeedState.STALE, since=2.0, received_at=2.0))
    late = bus.subscribe([FeedStatus], replay_latest=True)
    (status,) = late.get_nowait()
    assert status.state is FeedState.STALE


async def test_closed_subscription_ends_iteration() -> None:
    bus = Bus()
    sub = bus.subscribe()
    bus.publish(_tick("a", 1.0))
    seen = []

    async def consume() -> None:
        async for e in sub:
            seen.append(e)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1.0)
    assert len(seen) == 1
    bus.publish(_tick("a", 2.0))
    assert sub.pending() == 0


async def test_waiting_consumer_is_woken_by_publish_and_by_wake() -> None:
    bus = Bus()
    sub = bus.subscribe([PriceTick])
    waiting = asyncio.create_task(sub.get_batch(timeout=5))
    await asyncio.sleep(0)  # now waiting
    bus.publish(_tick("a", 1.0))
    assert [e.price_usd for e in await asyncio.wait_for(waiting, 1)] == [1.0]
    # wake(): returns at once with nothing, and the next wait waits again.
    waiting = asyncio.create_task(sub.get_batch(timeout=5))
    await asyncio.sleep(0)
    sub.wake()
    assert await asyncio.wait_for(waiting, 1) == []
    assert await sub.get_batch(timeout=0.01) == []
    # Published while nobody waits: pending, returned without waiting.
    bus.publish(_tick("a", 2.0))
    bus.publish(_tick("a", 3.0))
    assert [e.price_usd for e in await sub.get_batch(limit=1, timeout=0)] == [2.0]
    assert [e.price_usd for e in await sub.get_batch(timeout=0)] == [3.0]


async def test_cancelled_wait_takes_nothing_off_the_bus() -> None:
    bus = Bus()
    sub = bus.subscribe()
    waiting = asyncio.create_task(sub.get_batch(timeout=5))
    await asyncio.sleep(0)
    bus.publish(_tick("a", 1.0))
    waiting.cancel()  # in the same loop iteration as the wake-up
    try:
        await waiting
    except asyncio.CancelledError:
        assert sub.pending() == 1  # still there for the next read
    else:
        assert sub.pending() == 0


def test_fast_price_tick_keeps_frozen_dataclass_semantics() -> None:
    # PriceTick fills its slots directly on the hot path; it must still be a frozen dataclass.
    import copy
    import dataclasses
    import pickle

    import pytest

    a = PriceTick("coinbase", 70_000.5, 1.0, 2.0)
    b = PriceTick(source="coinbase", price_usd=70_000.5, time=1.0, received_at=2.0)
    assert a == b and hash(a) == hash(b)
    assert repr(a) == repr(b) and "70000.5" in repr(a)
    assert a.to_dict() == {
        "source": "coinbase",
        "price_usd": 70_000.5,
        "time": 1.0,
        "received_at": 2.0,
        "kind": "price",
    }
    assert dataclasses.replace(a, price_usd=1.0).price_usd == 1.0
    assert pickle.loads(pickle.dumps(a)) == a == copy.deepcopy(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.price_usd = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PriceTick("coinbase", 1.0, 1.0)  # type: ignore[call-arg]
