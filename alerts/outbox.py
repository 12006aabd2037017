"""The durable outbox: alert messages are rows first, deliveries second.

``enqueue`` writes one row per target inside the caller's transaction (the one that records
the transition), so a transition is never stored without its messages nor sent without being
stored. ``OutboxSender`` delivers the rows:

* **per target, in order.** One task per target; the oldest undelivered row of a target
  blocks the newer ones (a RESOLVED never overtakes its FIRING), and a slow or dead target
  only ever delays itself.
* **at least once, across restarts.** A row is pending until ``delivered_at`` is set, which
  happens only after the notifier reports success. A crash between the two re-sends it: the
  stable ``key`` (``["alert", rule, state, stamp, reminder, target]``) makes duplicates rare
  and countable, never silent.
* **capped exponential backoff with jitter** on the failing row (``next_attempt_at``),
  ``attempts`` and a redacted ``last_error`` recorded for ``hashwatch status`` and the UI.
* **storm control.** At most ``max_per_target_per_10m`` sends per target per 10 minutes. When
  more rows are pending than sends are left, the last allowed send is a digest that folds all
  of them into one message (their rows are marked delivered with it).
* **heartbeat.** Optionally a "still watching" row per target each ``heartbeat_s`` period.

Writes go through the store's single writer thread when a ``writer`` (feeds/writer.py,
``await writer.call(fn, *args)`` runs ``fn(store, *args)``) is given; otherwise the sender
opens its own short-lived write connection with a busy timeout (the CLI, tests), which SQLite
serialises against the writer. Reads use the sender's own read-only connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alerts.messages import DigestItem, format_digest, format_heartbeat, format_transition
from alerts.notify import (
    AppriseNotifier,
    Notifier,
    labelled,
    send_all,
)
from alerts.redact import redact_url, scrub, secret_fragments
from feeds.errors import UsageError
from feeds.events import AlertState, AlertTransition

if TYPE_CHECKING:
    import sqlite_utils

    from alerts.settings import NotifyTarget

log = logging.getLogger(__name__)

STORM_WINDOW_S = 600.0
#: Capped exponential backoff: 2 s doubling to 5 min (jitter applied on top, never above).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = tuple(min(300.0, 2.0 * 2**i) for i in range(9))
DEFAULT_BUSY_TIMEOUT_S = 10.0
#: Pending rows read per target per round; more than this are delivered in later rounds.
_BATCH = 500

# ------------------------------------------------------------------------------ enqueue


def message_key(kind: str, *parts: Any) -> str:
    """Stable, parseable key: a compact JSON array (``["alert","rule","firing",...]``)."""
    return json.dumps([kind, *parts], separators=(",", ":"), ensure_ascii=False)


def transition_key(t: AlertTransition, target_label: str) -> str:
    # A reminder is identified by its own time; FIRING and RESOLVED by the incident start,
    # which the engine persists, so a replay after a restart produces the same key.
    stamp = t.at if t.reminder else (t.fired_at if t.fired_at is not None else t.at)
    return message_key(
        "alert", t.rule, str(t.state), round(stamp, 3), int(t.reminder), target_label
    )


def _send_severity(key: str, severity: str) -> str:
    """``ok`` for RESOLVED messages (apprise shows success colours), else the row's severity."""
    try:
        parts = json.loads(key)
    except ValueError:
        return severity
    resolved = isinstance(parts, list) and parts[:1] == ["alert"] and len(parts) > 2
    if resolved and parts[2] == str(AlertState.RESOLVED):
        return "ok"
    return severity


def _insert(
    conn: sqlite3.Connection,
    key: str,
    label: str,
    created_at: float,
    severity: str,
    title: str,
    body: str,
) -> bool:
    cur = conn.execute(
        # next_attempt_at NULL: due at once, whatever the sender's clock says.
        "INSERT OR IGNORE INTO outbox (key, target, created_at, severity, title, body, "
        "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
        (key, label, created_at, severity, title, body),
    )
    return cur.rowcount == 1


def enqueue(
    db: sqlite_utils.Database,
    transition: AlertTransition,
    context: Mapping[str, Any],
    targets: Sequence[NotifyTarget],
) -> int:
    """Add one outbox row per target whose ``severities`` include the transition's.

    Runs inside the caller's transaction and never commits: the transition and its rows are
    stored together or not at all. Returns the number of rows added; a key already present
    (the same message replayed after a restart) is skipped and logged, not duplicated.
    """
    title, body = format_transition(transition, context)
    added = dupes = 0
    for label, target in labelled(targets):
        if transition.severity not in target.severities:
            continue
        key = transition_key(transition, label)
        if _insert(db.conn, key, label, transition.at, transition.severity, title, body):
            added += 1
        else:
            dupes += 1
    if dupes:
        log.info("outbox: %d duplicate message(s) for rule %s skipped", dupes, transition.rule)
    return added


# ------------------------------------------------------------------------------ rows


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    key: str
    created_at: float
    severity: str
    title: str
    body: str
    attempts: int
    next_attempt_at: float | None


_ROW_COLUMNS = "id, key, created_at, severity, title, body, attempts, next_attempt_at"


def _mark_delivered(
    conn: sqlite3.Connection, head_id: int, folded: Sequence[int], now: float
) -> None:
    # Only the row actually sent counts an attempt; rows folded into a digest keep
    # attempts = 0, so "delivered rows with attempts > 0" counts sends (storm window seed).
    conn.execute(
        "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
        (now, head_id),
    )
    conn.executemany(
        "UPDATE outbox SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
        [(now, i) for i in folded],
    )


def _mark_failed(conn: sqlite3.Connection, row_id: int, error: str, next_at: float) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
        "WHERE id = ?",
        (error, next_at, row_id),
    )


def _insert_many(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    return sum(_insert(conn, *r) for r in rows)


# ------------------------------------------------------------------------------ sender


class OutboxSender:
    """Delivers outbox rows; see the module docstring. Run ``await sender.run()`` in a task."""

    def __init__(
        self,
        store_path: str | Path,
        notifier: Notifier,
        targets: Sequence[NotifyTarget],
        *,
        clock: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        max_per_target_per_10m: int = 20,
        writer: Any = None,
        heartbeat_s: float | None = None,
        heartbeat_summary: Callable[[], Mapping[str, Any]] | None = None,
        poll_interval_s: float = 1.0,
        jitter: float = 0.25,
        rng: Callable[[], float] = random.random,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        if max_per_target_per_10m < 1:
            raise ValueError("max_per_target_per_10m must be at least 1")
        self.path = Path(store_path)
        self.notifier = notifier
        self.targets = labelled(targets)
        self.clock = clock
        self.retry_delays = tuple(retry_delays) or DEFAULT_RETRY_DELAYS
        self.max_per_window = max_per_target_per_10m
        self.writer = writer
        self.heartbeat_s = heartbeat_s or None
        self.heartbeat_summary = heartbeat_summary
        self.poll_interval_s = poll_interval_s
        self.jitter = jitter
        self.rng = rng
        self.busy_timeout_s = busy_timeout_s
        self._fragments = secret_fragments([t.url for _, t in self.targets])
        self._sent: dict[str, collections.deque[float]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        #: deliveries and failures since start, per target label (for status and tests)
        self.delivered: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()

    # -------------------------------------------------------------- public

    def wake(self) -> None:
        """Tell the target tasks new rows were committed (else they find them within a poll)."""
        for ev in self._wake.values():
            ev.set()

    async def run(self) -> None:
        """Deliver until cancelled: one task per target, plus the heartbeat when configured."""
        if not self.targets:
            log.info("outbox: no notify targets configured; nothing to deliver")
            return
        now = self.clock()
        try:
            await self._read(self._load_recent_sends, now)
            await self._read(self._report_orphans)
            async with asyncio.TaskGroup() as tg:
                for label, target in self.targets:
                    self._wake[label] = asyncio.Event()
                    tg.create_task(self._target_loop(label, target), name=f"outbox-{label}")
                if self.heartbeat_s:
                    tg.create_task(self._heartbeat_loop(now), name="outbox-heartbeat")
        finally:
            self._close_reader()

    async def send_test(
        self, targets: Sequence[NotifyTarget] | None = None, target_name: str | None = None
    ) -> list[tuple[str, bool, str | None]]:
        """Send a test message now (bypassing the outbox) with this sender's notifier."""
        return await send_test(
            targets if targets is not None else [t for _, t in self.targets],
            target_name,
            notifier=self.notifier,
            clock=self.clock,
        )

    # -------------------------------------------------------------- db access

    def _reader_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout_s, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._reader = conn
        return self._reader

    def _close_reader(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self._reader_lock:
                conn = self._reader_conn()
                try:
                    return fn(conn, *args)
                finally:
                    # End the implicit read transaction so the next read sees new commits.
                    if conn.in_transaction:
                        conn.rollback()

        return await asyncio.to_thread(run)

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one write transaction (writer thread or own connection)."""
        if self.writer is not None:

            def on_writer(store: Any, *a: Any) -> Any:
                with store.transaction() as db:
                    return fn(db.conn, *a)

            result = self.writer.call(on_writer, *args)
            if inspect.isawaitable(result):
                result = await result
            return result

        def own() -> Any:
            conn = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout_s, isolation_level=None
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, *args)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            finally:
                conn.close()

        return await asyncio.to_thread(own)

    def _load_recent_sends(self, conn: sqlite3.Connection, now: float) -> None:
        # A digest marks many rows delivered but counts an attempt only on the one it was
        # sent for (see _mark_delivered). Seeding survives a restart in the middle of a storm.
        for label, _ in self.targets:
            rows = conn.execute(
                "SELECT delivered_at FROM outbox WHERE target = ? AND attempts > 0 "
                "AND delivered_at > ? ORDER BY delivered_at",
                (label, now - STORM_WINDOW_S),
            ).fetchall()
            self._sent[label] = collections.deque(r[0] for r in rows)

    def _report_orphans(self, conn: sqlite3.Connection) -> None:
        labels = [label for label, _ in self.targets]
        marks = ",".join("?" * len(labels))
        for target, n in conn.execute(
            f"SELECT target, COUNT(*) FROM outbox WHERE delivered_at IS NULL "
            f"AND target NOT IN ({marks}) GROUP BY target",
            labels,
        ):
            log.warning(
                "outbox: %d undelivered message(s) for target %s, which is no longer "
                "configured; they stay in the database",
                n,
                target,
            )

    @staticmethod
    def _pending(conn: sqlite3.Connection, label: str) -> list[_Row]:
        cur = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM outbox WHERE target = ? AND delivered_at IS NULL "
            f"ORDER BY id LIMIT {_BATCH}",
            (label,),
        )
        return [_Row(*r) for r in cur.fetchall()]

    # -------------------------------------------------------------- delivery

    def _free_slots(self, label: str, now: float) -> tuple[int, float]:
        """Sends left in the storm window, and when the next slot frees up."""
        sent = self._sent.setdefault(label, collections.deque())
        while sent and sent[0] <= now - STORM_WINDOW_S:
            sent.popleft()
        free = self.max_per_window - len(sent)
        next_free = sent[0] + STORM_WINDOW_S if sent else now
        return free, next_free

    def _delay(self, attempts: int) -> float:
        base = self.retry_delays[min(max(attempts, 1), len(self.retry_delays)) - 1]
        # Jitter only shortens: the cap stays a cap, and restarts don't retry in lockstep.
        return base * (1.0 - self.jitter * self.rng())

    async def _sleep(self, label: str, seconds: float) -> None:
        """Wait for a wake-up or ``seconds`` of clock time; polls so an injected clock works."""
        ev = self._wake[label]
        timeout = max(0.0, min(seconds, self.poll_interval_s))
        # asyncio.timeout, not wait_for: 3.11's wait_for can leave a cancelled waiter hanging.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await ev.wait()

    async def _target_loop(self, label: str, target: NotifyTarget) -> None:
        while True:
            try:
                await self._step(label, target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A locked or vanished database must not end delivery for good.
                log.warning("outbox: target %s: %s", label, scrub(f"{exc!r}", self._fragments))
                await self._sleep(label, self.poll_interval_s)

    async def _step(self, label: str, target: NotifyTarget) -> None:
        # Cleared before reading: a wake() after the read ends the coming wait at once.
        self._wake[label].clear()
        rows = await self._read(self._pending, label)
        now = self.clock()
        if not rows:
            await self._sleep(label, math.inf)
            return
        head = rows[0]
        if head.next_attempt_at is not None and head.next_attempt_at > now:
            await self._sleep(label, head.next_attempt_at - now)
            return
        free, next_free = self._free_slots(label, now)
        if free <= 0:
            await self._sleep(label, next_free - now)
            return
        if free == 1 and len(rows) > 1:
            await self._deliver_digest(label, target, rows, now)
        else:
            await self._deliver(label, target, head, [head.id], head.title, head.body)

    async def _deliver_digest(
        self, label: str, target: NotifyTarget, rows: list[_Row], now: float
    ) -> None:
        items = [DigestItem(r.created_at, r.severity, r.title) for r in rows]
        title, body = format_digest(items, now, window_s=STORM_WINDOW_S)
        log.info("outbox: target %s: folding %d messages into one digest", label, len(rows))
        severity = "critical" if any(r.severity == "critical" for r in rows) else rows[0].severity
        await self._deliver(label, target, rows[0], [r.id for r in rows], title, body, severity)

    async def _deliver(
        self,
        label: str,
        target: NotifyTarget,
        head: _Row,
        ids: list[int],
        title: str,
        body: str,
        severity: str | None = None,
    ) -> None:
        sev = severity or _send_severity(head.key, head.severity)
        result = await self.notifier.send(target, title, body, sev)
        now = self.clock()
        if result.ok:
            await self._write(_mark_delivered, head.id, ids[1:], now)
            self._sent.setdefault(label, collections.deque()).append(now)
            self.delivered[label] += len(ids)
            if head.attempts:
                log.info(
                    "outbox: target %s delivered message %d after %d failed attempt(s)",
                    label,
                    head.id,
                    head.attempts,
                )
            return
        error = scrub(result.error or "delivery failed", self._fragments)
        attempts = head.attempts + 1
        delay = self._delay(attempts)
        await self._write(_mark_failed, head.id, error, now + delay)
        self.failures[label] += 1
        log.warning(
            "outbox: target %s (%s) failed (attempt %d, retry in %.1f s): %s",
            label,
            redact_url(target.url),
            attempts,
            delay,
            error,
        )

    # -------------------------------------------------------------- heartbeat

    async def _heartbeat_loop(self, started: float) -> None:
        assert self.heartbeat_s
        # Periods are aligned to the epoch (a "24h" heartbeat goes out at 00:00 UTC); the
        # first goes out at the first boundary after start, so restarts never add one.
        start_period = math.floor(started / self.heartbeat_s)
        while True:
            now = self.clock()
            period = math.floor(now / self.heartbeat_s)
            if period > start_period:
                try:
                    added = await self._write(_insert_many, self._heartbeat_rows(period, now))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox: heartbeat not queued: %r", exc)
                else:
                    start_period = period
                    if added:
                        self.wake()
            await asyncio.sleep(self.poll_interval_s)

    def _heartbeat_rows(self, period: int, now: float) -> list[tuple[Any, ...]]:
        summary: Mapping[str, Any] = {}
        if self.heartbeat_summary is not None:
            try:
                summary = self.heartbeat_summary()
            except Exception:
                log.exception("outbox: heartbeat summary failed; sending a bare heartbeat")
        title, body = format_heartbeat(summary, now)
        return [
            (message_key("heartbeat", period, label), label, now, "info", title, body)
            for label, _ in self.targets
        ]


# ------------------------------------------------------------------------------ test-alert


def select_targets(
    targets: Iterable[NotifyTarget], target_name: str | None
) -> list[tuple[str, NotifyTarget]]:
    """All targets, or the one whose name (or 1-based position) is ``target_name``."""
    pairs = labelled(targets)
    if target_name is None:
        return pairs
    chosen = [(label, t) for label, t in pairs if label == target_name]
    if not chosen:
        known = ", ".join(label for label, _ in pairs) or "none"
        raise UsageError(f"no notify target {target_name!r} (targets: {known})")
    return chosen


async def send_test(
    targets: Sequence[NotifyTarget],
    target_name: str | None = None,
    *,
    notifier: Notifier | None = None,
    clock: Callable[[], float] = time.time,
    timeout_s: float = 20.0,
) -> list[tuple[str, bool, str | None]]:
    """``hashwatch test-alert``: a test message to each target now; (label, ok, error) each.

    Bypasses the outbox on purpose: the operator wants to know whether delivery works *now*,
    not to queue a message that might arrive after they gave up waiting.
    """
    from alerts.messages import format_test

    chosen = select_targets(targets, target_name)
    notifier = notifier or AppriseNotifier(timeout_s=timeout_s)
    now = clock()
    return await send_all(notifier, chosen, lambda label: format_test(label, now), "info")
