"""Hypothesis: arbitrary JSON and text into every mempool parser; only BadFrame may escape,
and whatever is accepted is well-formed (finite numbers, real hashes, non-negative heights)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.events import Block, DailyPoint, DifficultyAdjustment, Event, PriceTick
from feeds.sources.mempool_rest import (
    parse_hashrate,
    parse_historical_prices,
    parse_tip_height,
)
from feeds.sources.mempool_ws import MempoolWs, parse_block, parse_conversions, parse_da
from feeds.transport import BadFrame
from tests.support_mempool import fixture

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HASH = re.compile(r"[0-9a-f]{64}")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=15,
)
KEYS = ["block", "blocks", "da", "conversions", "pong", "mempool-blocks", "fees"]
frames = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4)

BLOCK = fixture("ws_push_block.recorded_890448.json")["block"]
DA = fixture("ws_da.recorded_2024-03-31.extracted.json")
CONV = fixture("ws_push_conversions.extracted.json")["conversions"]


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The real payload with some of its fields replaced by arbitrary JSON or removed."""
    keys = st.sampled_from(sorted(base))
    return st.lists(st.tuples(keys, json_values | st.just(...)), max_size=3).map(
        lambda changes: _apply(base, changes)
    )


def _apply(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes:
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def check_events(events: list[Event]) -> None:
    for e in events:
        if isinstance(e, Block):
            assert type(e.height) is int and e.height >= 0
            assert HASH.fullmatch(e.hash)
            assert e.prev_hash is None or HASH.fullmatch(e.prev_hash)
            assert type(e.time) is int and type(e.bits) is int and e.bits > 0
            for v in (e.fees_sats, e.reward_sats, e.tx_count):
                assert v is None or (type(v) is int and v >= 0)
            assert e.difficulty is None or (math.isfinite(e.difficulty) and e.difficulty > 0)
        elif isinstance(e, PriceTick):
            assert math.isfinite(e.price_usd) and e.price_usd > 0 and math.isfinite(e.time)
        elif isinstance(e, DifficultyAdjustment):
            for v in (e.progress_pct, e.difficulty_change_pct, e.estimated_retarget_time):
                assert math.isfinite(v)
            assert e.remaining_blocks >= 0 and e.next_retarget_height >= 0
        else:
            raise AssertionError(f"unexpected event {e!r}")


def run_parse(frame: str | bytes) -> None:
    try:
        events = MempoolWs().parse(frame, 1.0)
    except BadFrame:
        return
    check_events(events)


@SETTINGS
@given(json_values)
def test_ws_parse_any_json(value: Any) -> None:
    run_parse(json.dumps(value))


@SETTINGS
@given(frames)
def test_ws_parse_frames_with_known_keys(frame: dict[str, Any]) -> None:
    run_parse(json.dumps(frame))


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_ws_parse_any_text_or_bytes(frame: str | bytes) -> None:
    run_parse(frame)


@SETTINGS
@given(
    mutated(BLOCK),
    mutated(DA),
    mutated(CONV),
    st.lists(mutated(BLOCK), max_size=3),
)
def test_ws_parse_mutated_real_payloads(
    block: dict[str, Any], da: dict[str, Any], conv: dict[str, Any], blocks: list[Any]
) -> None:
    run_parse(json.dumps({"block": block}))
    run_parse(json.dumps({"da": da}))
    run_parse(json.dumps({"conversions": conv}))
    run_parse(json.dumps({"blocks": blocks, "block": block, "da": da, "conversions": conv}))


@SETTINGS
@given(json_values)
def test_single_object_parsers(value: Any) -> None:
    for fn in (parse_block, parse_da, parse_conversions):
        try:
            ev = fn(value, 1.0)
        except BadFrame:
            continue
        check_events([ev] if ev is not None else [])


@SETTINGS
@given(json_values | mutated({"hashrates": [], "difficulty": []}))
def test_rest_history_parsers(value: Any) -> None:
    for doc in (value, {"hashrates": value, "difficulty": value}, {"prices": value}):
        try:
            points = parse_hashrate(doc, 1.0)
        except BadFrame:
            points = []
        for p in points:
            assert isinstance(p, DailyPoint) and p.day % 86400 == 0
            assert p.hashrate_hs is not None and math.isfinite(p.hashrate_hs)
        try:
            prices = parse_historical_prices(doc)
        except BadFrame:
            prices = {}
        assert all(d % 86400 == 0 and math.isfinite(v) and v > 0 for d, v in prices.items())


@SETTINGS
@given(st.text(max_size=30) | json_values)
def test_tip_height_parser(value: Any) -> None:
    try:
        h = parse_tip_height(value)
    except BadFrame:
        return
    assert type(h) is int and h >= 0
