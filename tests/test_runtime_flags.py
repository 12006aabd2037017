"""The runtime flags a price source that strays from the others in its own FeedStatus."""

from __future__ import annotations

from pathlib import Path

from feeds.bus import Bus
from feeds.events import FeedState, FeedStatus, PriceTick
from feeds.runtime import Runtime
from tui.config import load_config

NOW = 1_780_000_000.0


def _runtime(tmp_path: Path) -> tuple[Runtime, Bus]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[database]\npath = '{tmp_path / 'hw.db'}'\n")
    bus = Bus()
    runtime = Runtime(load_config(cfg), bus=bus)
    runtime.engine = runtime._make_engine()
    return runtime, bus


def _status(source: str, detail: str | None = None) -> FeedStatus:
    return FeedStatus(
        source=source, state=FeedState.LIVE, since=NOW - 100, received_at=NOW, detail=detail
    )


def test_divergent_source_is_flagged_then_cleared(tmp_path: Path) -> None:
    runtime, bus = _runtime(tmp_path)
    sub = bus.subscribe([FeedStatus])
    statuses = [_status("coinbase"), _status("kraken", "clock offset 12 s"), _status("bitstamp")]
    for source, price in (("coinbase", 70_000.0), ("kraken", 72_100.0), ("bitstamp", 70_050.0)):
        runtime.engine.on_price(
            PriceTick(source=source, price_usd=price, time=NOW, received_at=NOW)
        )
    runtime._flag_divergent_prices(NOW, statuses)
    published = {s.source: s for s in sub.get_nowait()}
    assert set(published) == {"kraken"}  # 3.0% above the others' median; the rest agree
    assert published["kraken"].detail.startswith("clock offset 12 s; price +3.0% off")
    assert published["kraken"].state is FeedState.LIVE

    # The republished status coming back through the bus does not trigger another round.
    runtime._flag_divergent_prices(NOW + 1, [published["kraken"]])
    assert sub.get_nowait() == []

    # Kraken comes back in line: the flag is lifted, the adapter's own detail kept.
    runtime.engine.on_price(
        PriceTick(source="kraken", price_usd=70_020.0, time=NOW + 2, received_at=NOW + 2)
    )
    runtime._flag_divergent_prices(NOW + 2, [])
    (cleared,) = sub.get_nowait()
    assert cleared.source == "kraken"
    assert cleared.detail == "clock offset 12 s"
