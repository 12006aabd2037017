"""mempool.space websocket: new blocks, the reorg re-send, ``da`` and ``conversions``.

Protocol (``../shared/fixtures/PROTOCOLS.md`` §1.1): send ``{"action":"init"}`` and
``{"action":"want","data":["blocks","stats"]}``; the server answers with a ``blocks`` list
(8 newest, ascending) and then pushes frames that carry **several keys at once**: ``block``
(one BlockExtended), ``blocks`` (re-sent whole on a reorg), ``da``, ``conversions``, plus many
keys we ignore (``mempool-blocks``, ``mempoolInfo``, ``fees`` ...). ``{"action":"ping"}`` is
answered with ``{"pong": true}``; mempool's own client pings after 30 s of silence and
reconnects if nothing arrives within 5 s, and so do we.

The parsers are pure functions of the decoded JSON; they raise only ``BadFrame``. A frame with
one malformed known key is rejected whole: a half-wrong frame is suspect, and nothing from it
may reach the store.

Freshness: blocks can be an hour apart, so silence between blocks says nothing. ``stats``
subscribers get ``da`` with every mempool update (every few seconds); we publish it at most
once per ``DA_MIN_INTERVAL_S`` (or when the epoch position changes) and that keeps the feed
fresh. Whether the block feed is *complete* is checked over REST (tip height, gap fill).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar

from feeds.events import Block, DifficultyAdjustment, Event, PriceTick
from feeds.transport import BadFrame, WsAdapter, load_object

SOURCE = "mempool"
#: At most one DifficultyAdjustment per this many seconds unless the epoch position changes.
DA_MIN_INTERVAL_S = 60.0
#: ``estimatedRetargetDate`` above this is milliseconds (the 2021 docs example used seconds).
_MS_THRESHOLD = 1e11
_HASH_RE = re.compile(r"[0-9a-f]{64}")


# --- typed field readers ------------------------------------------------------------------


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    v = obj.get(key)
    if type(v) is int:
        return v
    # JSON has one number type; mempool serialises integral values without a fraction, but
    # accept 5.0 for robustness (never bools, never 5.5).
    if type(v) is float and v.is_integer() and math.isfinite(v):
        return int(v)
    raise BadFrame(f"{what}.{key} is {type(v).__name__}, not an integer")


def _num(obj: dict[str, Any], key: str, what: str) -> float:
    v = obj.get(key)
    if (type(v) is int or type(v) is float) and math.isfinite(v):
        return float(v)
    raise BadFrame(f"{what}.{key} is {type(v).__name__}, not a finite number")


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    """Optional extras are often ``null`` upstream; a wrong type there means unknown."""
    v = obj.get(key)
    if type(v) is int:
        return v
    if type(v) is float and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _hash(v: object, what: str) -> str:
    if type(v) is str and _HASH_RE.fullmatch(v):
        return v
    raise BadFrame(f"{what} is not a 64-hex-digit block hash")


# --- parsers --------------------------------------------------------------------------------


def parse_block(obj: object, received_at: float, *, backfill: bool = False) -> Block:
    """One BlockExtended (websocket push or REST ``/v1/blocks``) -> ``Block``.

    Sample (fixture ``ws_push_block.recorded_890448.json``, trimmed)::

        {"id": "0000...5d61", "height": 890448, "timestamp": 1743541850, "bits": 386038124,
         "difficulty": 113757508810854, "tx_count": 2229,
         "previousblockhash": "0000...e2ab",
         "extras": {"reward": 315498786, "totalFees": 2998786,
                    "pool": {"id": 43, "name": "Braiins Pool", "slug": "braiinspool"}}}
    """
    if type(obj) is not dict:
        raise BadFrame(f"block is {type(obj).__name__}, not an object")
    height = _int(obj, "height", "block")
    if height < 0:
        raise BadFrame(f"block.height {height} is negative")
    block_hash = _hash(obj.get("id"), "block.id")
    prev = obj.get("previousblockhash")
    # Only genesis has no parent; mempool sends null/"" there.
    prev_hash = None if (height == 0 and not prev) else _hash(prev, "block.previousblockhash")
    timestamp = _int(obj, "timestamp", "block")
    bits = _int(obj, "bits", "block")
    if not 0 < bits < 1 << 32:
        raise BadFrame(f"block.bits {bits} out of range")
    difficulty = obj.get("difficulty")
    if not ((type(difficulty) is int or type(difficulty) is float) and difficulty > 0):
        difficulty = None
    tx_count = _opt_int(obj, "tx_count")
    extras = obj.get("extras")
    fees = reward = None
    pool = None
    if type(extras) is dict:
        fees = _opt_int(extras, "totalFees")
        reward = _opt_int(extras, "reward")
        p = extras.get("pool")
        if type(p) is dict and type(p.get("name")) is str and p["name"]:
            pool = p["name"][:100]
    elif extras is not None:
        raise BadFrame(f"block.extras is {type(extras).__name__}, not an object")
    if fees is not None and fees < 0:
        fees = None
    if reward is not None and reward < 0:
        reward = None
    return Block(
        height=height,
        hash=block_hash,
        prev_hash=prev_hash,
        time=timestamp,
        bits=bits,
        source=SOURCE,
        received_at=received_at,
        difficulty=float(difficulty) if difficulty is not None else None,
        tx_count=tx_count if tx_count is None or tx_count >= 0 else None,
        fees_sats=fees,
        reward_sats=reward,
        pool=pool,
        backfill=backfill,
    )


def parse_blocks(obj: object, received_at: float, *, backfill: bool = True) -> list[Block]:
    """A list of BlockExtended (the ``blocks`` re-send, or a REST ``/v1/blocks`` page)."""
    if type(obj) is not list:
        raise BadFrame(f"blocks is {type(obj).__name__}, not a list")
    return [parse_block(b, received_at, backfill=backfill) for b in obj]


def da_server_time(obj: dict[str, Any]) -> float | None:
    """mempool's own ``now`` (s) when it computed ``da``: estimatedRetargetDate - remainingTime."""
    est, rem = obj.get("estimatedRetargetDate"), obj.get("remainingTime")
    if type(est) in (int, float) and type(rem) in (int, float) and est > _MS_THRESHOLD:
        t = (est - rem) / 1000.0
        return t if math.isfinite(t) else None
    return None


def parse_da(obj: object, received_at: float) -> DifficultyAdjustment:
    """The ``da`` object (also ``GET /v1/difficulty-adjustment``) -> ``DifficultyAdjustment``.

    Units (PROTOCOLS.md §1.4): percentages are percent; ``estimatedRetargetDate``,
    ``remainingTime``, ``timeAvg`` are **milliseconds**, but ``previousTime`` is **seconds**.
    Sample (``ws_da.recorded_2024-03-31.extracted.json``)::

        {"progressPercent": 20.337, "difficultyChange": 5.9148,
         "estimatedRetargetDate": 1712766704114, "remainingBlocks": 1606,
         "previousRetarget": -0.9779, "previousTime": 1711619463,
         "nextRetargetHeight": 838656, "timeAvg": 574743, ...}
    """
    if type(obj) is not dict:
        raise BadFrame(f"da is {type(obj).__name__}, not an object")
    est = _num(obj, "estimatedRetargetDate", "da")
    est_s = est / 1000.0 if est > _MS_THRESHOLD else est
    remaining = _int(obj, "remainingBlocks", "da")
    next_height = _int(obj, "nextRetargetHeight", "da")
    if remaining < 0 or next_height < 0:
        raise BadFrame("da: negative block count")
    return DifficultyAdjustment(
        source=SOURCE,
        progress_pct=_num(obj, "progressPercent", "da"),
        difficulty_change_pct=_num(obj, "difficultyChange", "da"),
        estimated_retarget_time=est_s,
        remaining_blocks=remaining,
        next_retarget_height=next_height,
        previous_retarget_pct=_num(obj, "previousRetarget", "da"),
        received_at=received_at,
    )


def parse_conversions(obj: object, received_at: float) -> PriceTick | None:
    """``conversions`` ``{"time": s, "USD": 69880, ...}`` -> a USD tick; -1 (none) -> None."""
    if type(obj) is not dict:
        raise BadFrame(f"conversions is {type(obj).__name__}, not an object")
    usd = obj.get("USD")
    if usd is None:
        return None
    if not (type(usd) is int or type(usd) is float) or not math.isfinite(usd):
        raise BadFrame(f"conversions.USD is {type(usd).__name__}, not a number")
    if usd <= 0:  # mempool uses -1 for "no price from any exchange"
        return None
    t = _num(obj, "time", "conversions")
    return PriceTick(source=SOURCE, price_usd=float(usd), time=t, received_at=received_at)


class MempoolWs(WsAdapter):
    """mempool.space ``/api/v1/ws``: blocks, reorg re-sends, ``da``, ``conversions``."""

    name: ClassVar[str] = SOURCE
    default_ws_url: ClassVar[str] = "wss://mempool.space/api/v1/ws"
    # mempool.space's own client: ping after 30 s of silence, reconnect 5 s later.
    idle_ping_after_s: ClassVar[float | None] = 30.0
    pong_timeout_s: ClassVar[float] = 5.0
    # Data freshness rides on the throttled ``da`` of the ``stats`` stream (see module doc).
    default_stale_after_s: ClassVar[float] = 3 * DA_MIN_INTERVAL_S
    # The init blob with ``blocks``, ``mempool-blocks`` and ``transactions`` is tens of kB.
    max_frame_bytes: ClassVar[int] = 1 << 20

    #: The frames we send (each far below mempool's 50,000-byte client limit).
    INIT = json.dumps({"action": "init"})
    WANT = json.dumps({"action": "want", "data": ["blocks", "stats"]})
    PING = json.dumps({"action": "ping"})

    def __init__(self, ws_url: str | None = None, *, stale_after_s: float | None = None) -> None:
        super().__init__(ws_url, stale_after_s=stale_after_s)
        self._last_da: DifficultyAdjustment | None = None
        self._last_da_server_time: float | None = None

    def subscribe_frames(self) -> list[str]:
        return [self.INIT, self.WANT]

    def ping_frame(self) -> str | None:
        return self.PING

    def parse(self, frame: str | bytes, received_at: float) -> list[Event]:
        obj = load_object(frame)
        events: list[Event] = []
        # Order inside a frame: the catch-up list first, then the new block, then the rest,
        # so a reorg frame carrying both leaves the new tip last.
        if "blocks" in obj:
            events.extend(parse_blocks(obj["blocks"], received_at, backfill=True))
        if "block" in obj:
            events.append(parse_block(obj["block"], received_at))
        da_event: DifficultyAdjustment | None = None
        if "da" in obj:
            da_event = parse_da(obj["da"], received_at)
            if self._keep_da(da_event):
                da_obj = obj["da"]
                self._last_da = da_event
                self._last_da_server_time = da_server_time(da_obj)
                events.append(da_event)
            else:
                da_event = None
        if "conversions" in obj:
            tick = parse_conversions(obj["conversions"], received_at)
            if tick is not None:
                events.append(tick)
        # "pong" and every other key: liveness only (the transport counts the frame).
        return events

    def _keep_da(self, da: DifficultyAdjustment) -> bool:
        last = self._last_da
        if last is None:
            return True
        if (
            da.next_retarget_height != last.next_retarget_height
            or da.remaining_blocks != last.remaining_blocks
            or da.previous_retarget_pct != last.previous_retarget_pct
        ):
            return True
        return da.received_at - last.received_at >= DA_MIN_INTERVAL_S

    def upstream_time(self, event: Event) -> float | None:
        # ``conversions.time`` is when mempool's hourly price updater ran, and block header
        # times may be hours off: neither measures our clock. ``da`` is computed from
        # mempool's wall clock, so (estimatedRetargetDate - remainingTime) does.
        if event is self._last_da:
            return self._last_da_server_time
        return None
