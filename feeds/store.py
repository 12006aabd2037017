"""The SQLite store: schema, migrations, batched idempotent writes and read queries.

Contract (docs/DESIGN.md "Store"): WAL, ``synchronous=NORMAL``, schema version in ``PRAGMA
user_version``, migrations applied at open. A file that is not SQLite, an SQLite file of
another application, or a database written by a newer hashwatch raises ``StoreError`` and the
file is left byte-for-byte untouched (nothing is written before those checks pass).

Threading: exactly one thread writes (``feeds.writer.Writer`` owns it); the write methods
(``write_events``, ``prune``, ``transaction``, ``db``) must only be used there. Read methods
may be called from any thread: each thread gets its own read connection.

Storage conventions (what other modules may rely on):

* ``blocks.work`` is the exact work ``floor(2**256 / (target + 1))`` as 64 lowercase hex
  digits (``int(work, 16)`` reads it). ``first_seen`` is the local receipt time, or the
  header time for blocks known only from backfill or import.
* Blocks imported without a hash get the placeholder hash ``import:<height>``. A placeholder
  never displaces a real block, and a real block at its height replaces it without being
  treated as a reorg.
* ``candles.minute`` and ``metric_samples.minute`` are epoch seconds floored to the minute.
  Candles are maintained by ``write_events`` from the ticks a batch *actually inserted*: a
  tick that is already stored is ignored by the insert and never reaches its candle, which
  makes replays harmless (``n`` counts distinct ticks). ``open``/``close`` are the prices of
  the earliest/latest tick *by time* within the minute, so out-of-order ticks are handled.
  (Not a trigger: one trigger run per tick row, plus a row-at-a-time insert, made the writer
  the bottleneck of the ingest path; see ``_write_ticks``.)
* The reference price (``MetricsSnapshot.values['price_usd']``) is stored as ticks of source
  ``'ref'`` (time = snapshot time), so the ``'ref'`` candles get the same idempotence.
  ``latest_prices()`` leaves ``'ref'`` out.
* ``metric_samples`` keeps the last non-``None`` value of each metric per minute (``None``
  means "not computable", which is not history).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlite_utils

from feeds.derive import bits_to_target, block_work, difficulty_from_bits
from feeds.errors import StoreError
from feeds.events import (
    Block,
    DailyPoint,
    Event,
    FeedState,
    FeedStatus,
    MetricsSnapshot,
    PriceTick,
)

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
PLACEHOLDER_PREFIX = "import:"
REF_SOURCE = "ref"
DEFAULT_BUSY_TIMEOUT_S = 10.0

# Exact compact-bits math lives in feeds.derive; re-exported for the importer.
target_from_bits = bits_to_target
work_from_bits = block_work


def work_hex(work: int) -> str:
    return f"{work:064x}"


# --------------------------------------------------------------------------------------
# Schema and migrations

Migration = Callable[[sqlite_utils.Database], None]


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``script`` statement by statement. Not ``executescript``: that COMMITs first,
    which would split a migration out of its transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement: {statement.strip()[:60]}")


def _v1_initial(db: sqlite_utils.Database) -> None:
    """Every table of docs/DESIGN.md. Raw DDL: partial indexes and WITHOUT ROWID are beyond
    sqlite-utils' ``create()``."""
    _execute_script(
        db.conn,
        """
        CREATE TABLE blocks (
            hash TEXT PRIMARY KEY,
            height INTEGER NOT NULL,
            prev_hash TEXT,
            time INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            bits INTEGER NOT NULL,
            difficulty REAL,
            work TEXT NOT NULL,
            -- Absolute chainwork (64 hex digits) when the source reports it (Bitcoin Core);
            -- NULL otherwise: the metrics count chainwork from the oldest stored block
            -- (relative), as DOMAIN.md allows, by summing ``work``.
            chainwork TEXT,
            tx_count INTEGER,
            fees_sats INTEGER,
            reward_sats INTEGER,
            pool TEXT,
            orphaned INTEGER NOT NULL DEFAULT 0,
            source TEXT
        );
        -- At most one active block per height: the reorg invariant, enforced by SQLite.
        CREATE UNIQUE INDEX idx_blocks_active_height ON blocks(height) WHERE orphaned = 0;

        CREATE TABLE price_ticks (
            source TEXT NOT NULL,
            time REAL NOT NULL,
            price_usd REAL NOT NULL,
            received_at REAL,
            PRIMARY KEY (source, time)
        ) WITHOUT ROWID;

        CREATE TABLE candles (
            source TEXT NOT NULL,
            minute INTEGER NOT NULL,
            open REAL NOT NULL,
            high REAL NOT NULL,
            low REAL NOT NULL,
            close REAL NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (source, minute)
        ) WITHOUT ROWID;

        CREATE TABLE metric_samples (
            name TEXT NOT NULL,
            minute INTEGER NOT NULL,
            value REAL,
            PRIMARY KEY (name, minute)
        ) WITHOUT ROWID;

        CREATE TABLE daily_history (
            day INTEGER NOT NULL,
            source TEXT NOT NULL,
            hashrate_hs REAL,
            difficulty REAL,
            price_usd REAL,
            PRIMARY KEY (day, source)
        ) WITHOUT ROWID;

        CREATE TABLE feed_status (
            source TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            since REAL,
            last_message_at REAL,
            reconnects INTEGER,
            last_error TEXT,
            detail TEXT,
            updated_at REAL
        );

        CREATE TABLE alert_state (
            rule TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            since REAL,
            active_at REAL,
            fired_at REAL,
            resolved_at REAL,
            last_value REAL,
            last_eval_at REAL,
            last_sent_at REAL,
            silenced_until REAL,
            fingerprint TEXT,
            -- when the condition cleared while keep_firing_for holds the rule firing
            keep_firing_since REAL
        );

        CREATE TABLE alert_history (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            severity TEXT,
            previous TEXT,
            state TEXT NOT NULL,
            at REAL NOT NULL,
            value REAL,
            threshold REAL,
            message TEXT,
            fired_at REAL
        );
        CREATE INDEX idx_alert_history_at ON alert_history(at);

        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            target TEXT,
            created_at REAL NOT NULL,
            severity TEXT,
            title TEXT,
            body TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            delivered_at REAL,
            last_error TEXT
        );
        CREATE INDEX idx_outbox_pending ON outbox(next_attempt_at) WHERE delivered_at IS NULL;

        CREATE TABLE operator_actions (
            id INTEGER PRIMARY KEY,
            action TEXT NOT NULL,
            args TEXT,
            created_at REAL NOT NULL,
            done_at REAL,
            result TEXT
        );
        """,
    )


#: ``MIGRATIONS[i]`` upgrades a database from version ``i`` to ``i + 1``. Append only.
MIGRATIONS: tuple[Migration, ...] = (_v1_initial,)
SCHEMA_VERSION = len(MIGRATIONS)
_OUR_TABLES = frozenset(
    {
        "blocks",
        "price_ticks",
        "candles",
        "metric_samples",
        "daily_history",
        "feed_status",
        "alert_state",
        "alert_history",
        "outbox",
        "operator_actions",
    }
)


# --------------------------------------------------------------------------------------
# Price ticks and their candles (the ingest hot path)

#: Largest multi-row tick ``INSERT`` (4 parameters a row, far below SQLite's limit of 32,766).
#: A writer batch (<= 1,000 events) is one statement: every statement is a ``sqlite3_step``
#: that releases the GIL, and taking it back from a busy event loop can take the whole
#: switch interval (5 ms), so the writer's throughput is set by its statements per batch.
TICK_CHUNK_MAX = 2048
#: SQL texts kept for reuse (the connection caches the compiled statements themselves).
_TICK_SQL_CACHE = 64
_TICK_SQL: dict[tuple[int, bool], str] = {}


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """(start, size) covering ``range(n)``: full ``TICK_CHUNK_MAX`` chunks, then the rest."""
    for start in range(0, n, TICK_CHUNK_MAX):
        yield start, min(TICK_CHUNK_MAX, n - start)


def _tick_insert_sql(rows: int, *, returning: bool) -> str:
    sql = _TICK_SQL.get((rows, returning))
    if sql is None:
        sql = (
            f"INSERT {'OR IGNORE ' if returning else ''}INTO price_ticks "
            "(source, time, price_usd, received_at) VALUES "
            + ",".join(["(?,?,?,?)"] * rows)
            + (" RETURNING source, time, price_usd" if returning else "")
        )
        if len(_TICK_SQL) >= _TICK_SQL_CACHE:
            _TICK_SQL.clear()
        _TICK_SQL[(rows, returning)] = sql
    return sql


#: One row per (source, minute) a batch touched, with the batch's first and last tick time
#: in that minute (?8, ?9). ``open`` moves only if no stored tick of the minute is earlier
#: than the batch's first, ``close`` only if none is later than its last: the same result
#: whatever order the ticks arrive in. ``n`` adds only newly inserted ticks.
_CANDLE_UPSERT = """
INSERT INTO candles (source, minute, open, high, low, close, n)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (source, minute) DO UPDATE SET
    high = max(high, excluded.high),
    low = min(low, excluded.low),
    n = n + excluded.n,
    open = CASE WHEN EXISTS (
        SELECT 1 FROM price_ticks WHERE source = ?1 AND time >= ?2 AND time < ?8
    ) THEN open ELSE excluded.open END,
    close = CASE WHEN EXISTS (
        SELECT 1 FROM price_ticks WHERE source = ?1 AND time > ?9 AND time < ?2 + 60
    ) THEN close ELSE excluded.close END
"""

_tick_row = operator.attrgetter("source", "time", "price_usd", "received_at")
_source_of = operator.itemgetter(0)
_time_of = operator.itemgetter(1)
_price_of = operator.itemgetter(2)


def _candle_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Aggregate newly inserted ``(source, time, price, ...)`` rows into ``_CANDLE_UPSERT``
    parameters. A source whose rows all fall in one minute (every busy batch) is reduced
    with C-level builtins; otherwise row by row."""
    out: list[tuple[Any, ...]] = []
    sources = set(map(_source_of, rows))
    for source in sources:
        sub = rows if len(sources) == 1 else [r for r in rows if r[0] == source]
        times = list(map(_time_of, sub))
        first, last = min(times), max(times)
        minute = int(first // 60) * 60
        if int(last // 60) * 60 == minute:
            prices = list(map(_price_of, sub))
            out.append(
                (
                    source,
                    minute,
                    prices[times.index(first)],
                    max(prices),
                    min(prices),
                    prices[times.index(last)],
                    len(sub),
                    first,
                    last,
                )
            )
            continue
        # minute -> [open, high, low, close, n, first time, last time]
        acc: dict[int, list[Any]] = {}
        for row in sub:
            t, p = row[1], row[2]
            m = int(t // 60) * 60
            c = acc.get(m)
            if c is None:
                acc[m] = [p, p, p, p, 1, t, t]
                continue
            c[4] += 1
            if p > c[1]:
                c[1] = p
            elif p < c[2]:
                c[2] = p
            if t < c[5]:
                c[5], c[0] = t, p
            elif t > c[6]:
                c[6], c[3] = t, p
        out.extend((source, m, *c) for m, c in acc.items())
    return out


class StoreMissingError(StoreError):
    """A read-only open found no database (or one never initialised): "no data yet"."""


class Candle(NamedTuple):
    minute: int
    open: float
    high: float
    low: float
    close: float
    n: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``write_events`` call did (for logs, stats and the benchmark)."""

    blocks: int = 0
    ticks: int = 0
    samples: int = 0
    daily: int = 0
    statuses: int = 0
    ignored: int = 0


#: Stores open in this process, by resolved database path. Opening and closing a second file
#: descriptor on a database drops every POSIX lock this process holds on that file, SQLite's
#: included (fcntl semantics). Another process's last connection may then checkpoint and
#: delete the WAL under our open connections, and every later write goes to the deleted
#: file: lost at the next crash (found by bench/soak.py: another process's BEGIN IMMEDIATE,
#: then a SIGKILL, lost minutes of data). So the raw header is read only while no Store of
#: this process has the file open; when one has, its checks already passed.
_OPEN_HERE: dict[str, int] = {}
_OPEN_HERE_LOCK = threading.Lock()


def _register_open(key: str, delta: int) -> None:
    with _OPEN_HERE_LOCK:
        n = _OPEN_HERE.get(key, 0) + delta
        if n > 0:
            _OPEN_HERE[key] = n
        else:
            _OPEN_HERE.pop(key, None)


def _header(path: Path) -> bytes | None:
    """The first 100 bytes (SQLite's header) or None for a missing/empty file.

    With a Store of this process already open on ``path``, returns just the magic (the
    version is then checked through SQLite): see ``_OPEN_HERE``."""
    with _OPEN_HERE_LOCK:
        if _OPEN_HERE.get(str(path.resolve()), 0) > 0:
            return SQLITE_MAGIC
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror or exc}") from exc
    return head or None


def _connect(path: Path, *, readonly: bool, busy_timeout_s: float) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; every transaction is explicit (BEGIN IMMEDIATE
    # for writes, so a write never fails half-way on a lock upgrade). check_same_thread is
    # off only so close() may run from another thread; each connection is used by one.
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(
            str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    if readonly:
        # Read connections are per thread, so a long-running collector can hold several; at
        # SQLite's default 2 MiB page cache each, their caches filling up as the database
        # grows showed in the month-long soak as steady memory growth. Reads here are small
        # recent-range queries that the OS page cache serves well: 512 KiB each is plenty.
        conn.execute("PRAGMA cache_size = -512")
    return conn


class Store:
    """One hashwatch database. Build with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        db: sqlite_utils.Database | None,
        *,
        busy_timeout_s: float,
        register: bool = False,
    ) -> None:
        self.path = path
        self._open_key = str(path.resolve()) if register else None
        if self._open_key is not None:
            _register_open(self._open_key, +1)
        self._db = db
        self.readonly = db is None
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # Ticks older than the last prune horizon are dropped on write: their minute's
        # raw ticks are gone, so re-inserting one would miscount that candle.
        self._tick_floor = -math.inf

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Store:
        """Open (creating and migrating unless ``readonly``) the database at ``path``.

        ``migrations`` exists for tests of the upgrade path; production uses the default.
        """
        path = Path(path).expanduser()
        target_version = len(migrations)
        head = _header(path)
        if head is not None:
            if not head.startswith(SQLITE_MAGIC):
                raise StoreError(
                    f"{path} is not a hashwatch database (not SQLite); refusing to touch it. "
                    "Check [database] path or --db."
                )
            if len(head) >= 64:
                # user_version lives at header offset 60: checked before SQLite opens the
                # file at all, so a newer database is not even checkpointed.
                cls._check_version(path, int.from_bytes(head[60:64], "big"), target_version)
        if readonly:
            if head is None:
                raise StoreMissingError(f"no hashwatch database at {path} yet")
            conn = _connect(path, readonly=True, busy_timeout_s=busy_timeout_s)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise StoreError(f"cannot read database {path}: {exc}") from exc
            conn.close()
            cls._check_version(path, version, target_version)
            if version == 0:
                raise StoreMissingError(f"the database at {path} holds no hashwatch data yet")
            if version < target_version:
                raise StoreError(
                    f"{path} has schema version {version}, this hashwatch expects "
                    f"{target_version}: run the collector once to upgrade it"
                )
            return cls(path, None, busy_timeout_s=busy_timeout_s, register=True)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for {path}: {exc}") from exc
        try:
            conn = _connect(path, readonly=False, busy_timeout_s=busy_timeout_s)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            cls._check_foreign(path, db, target_version)
            # Each PRAGMA here writes; they run only after every refusal check passed.
            db.conn.execute("PRAGMA journal_mode = WAL")
            db.conn.execute("PRAGMA synchronous = NORMAL")
            cls._migrate(path, db, migrations)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(
                    f"{path} is not a hashwatch database (not SQLite, or corrupt): {exc}"
                ) from exc
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        log.debug("opened store %s (schema version %s)", path, target_version)
        return cls(path, db, busy_timeout_s=busy_timeout_s, register=True)

    @staticmethod
    def _check_version(path: Path, version: int, target: int) -> None:
        if version > target:
            raise StoreError(
                f"{path} was written by a newer hashwatch (schema version {version}; this "
                f"version understands up to {target}). Upgrade hashwatch or use another "
                "database; the file was not modified."
            )

    @classmethod
    def _check_foreign(cls, path: Path, db: sqlite_utils.Database, target: int) -> None:
        version = db.conn.execute("PRAGMA user_version").fetchone()[0]
        cls._check_version(path, version, target)
        if version == 0:
            tables = [
                t for t in db.table_names() if not t.startswith("sqlite_") and t not in _OUR_TABLES
            ]
            if tables:
                shown = ", ".join(sorted(tables)[:5])
                raise StoreError(
                    f"{path} is an SQLite database of another application (tables: {shown}), "
                    "not a hashwatch database; refusing to modify it"
                )

    @staticmethod
    def _migrate(path: Path, db: sqlite_utils.Database, migrations: Sequence[Migration]) -> None:
        conn = db.conn
        for index, migration in enumerate(migrations):
            new_version = index + 1
            if conn.execute("PRAGMA user_version").fetchone()[0] >= new_version:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have just migrated.
                if conn.execute("PRAGMA user_version").fetchone()[0] >= new_version:
                    conn.execute("ROLLBACK")
                    continue
                migration(db)
                conn.execute(f"PRAGMA user_version = {new_version}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            log.info("migrated %s to schema version %s (%s)", path, new_version, migration.__name__)

    # ---------------------------------------------------------------- lifecycle

    @property
    def db(self) -> sqlite_utils.Database:
        """The write connection (writer thread only)."""
        if self._db is None:
            raise StoreError(f"{self.path} was opened read-only")
        return self._db

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._open_key is not None:
            _register_open(self._open_key, -1)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self._db is not None:
            self._db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the write connection; rolls back on error.
        Nested use becomes a savepoint, so ``write_events`` composes inside ``Writer.call``."""
        conn = self.db.conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT hw_nested")
            try:
                yield self.db
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO SAVEPOINT hw_nested")
                    conn.execute("RELEASE SAVEPOINT hw_nested")
                raise
            conn.execute("RELEASE SAVEPOINT hw_nested")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ---------------------------------------------------------------- writes

    def write_events(self, events: Iterable[Event]) -> WriteResult:
        """Store a batch in one transaction. Idempotent: writing it twice changes nothing."""
        blocks: list[Block] = []
        ticks: list[tuple[str, float, float, float]] = []
        samples: dict[tuple[str, int], float] = {}
        daily: list[tuple[Any, ...]] = []
        statuses: dict[str, tuple[Any, ...]] = {}
        ignored = 0
        floor = self._tick_floor
        # Price ticks are nearly every event of a busy batch: their rows are taken with
        # C-level map/attrgetter instead of a Python loop (the writer thread holds the GIL
        # for this part, and the event loop waits for it).
        events = events if isinstance(events, list) else list(events)
        if set(map(type, events)) == {PriceTick}:
            exact_ticks, rest = events, []
        else:
            exact_ticks = [e for e in events if type(e) is PriceTick]
            rest = [e for e in events if type(e) is not PriceTick]
        if exact_ticks:
            ticks = list(map(_tick_row, exact_ticks))
            if floor > -math.inf and min(map(_time_of, ticks)) < floor:
                ticks = [t for t in ticks if t[1] >= floor]
        append_tick = ticks.append
        for event in rest:
            if isinstance(event, PriceTick):  # a subclass
                if event.time >= floor:
                    append_tick((event.source, event.time, event.price_usd, event.received_at))
            elif isinstance(event, Block):
                blocks.append(event)
            elif isinstance(event, MetricsSnapshot):
                minute = int(event.at // 60) * 60
                for name, value in event.values.items():
                    if value is not None:
                        samples[(name, minute)] = value  # later snapshot of a minute wins
                ref = event.values.get("price_usd")
                if ref is not None and "price_usd" not in event.stale and event.at >= floor:
                    ticks.append((REF_SOURCE, event.at, ref, event.at))
            elif isinstance(event, DailyPoint):
                daily.append(
                    (event.day, event.source, event.hashrate_hs, event.difficulty, event.price_usd)
                )
            elif isinstance(event, FeedStatus):
                statuses[event.source] = (
                    event.source,
                    str(event.state),
                    event.since,
                    event.last_message_at,
                    event.reconnects,
                    event.last_error,
                    event.detail,
                    event.received_at,
                )
            else:
                ignored += 1
        conn = self.db.conn
        with self.transaction():
            if ticks:
                self._write_ticks(conn, ticks)
            for block in blocks:
                self._write_block(conn, block)
            if samples:
                conn.executemany(
                    "INSERT INTO metric_samples (name, minute, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, minute) DO UPDATE SET value = excluded.value",
                    [(n, m, v) for (n, m), v in samples.items()],
                )
            if daily:
                # COALESCE: one day's hashrate and price may arrive from different endpoints.
                conn.executemany(
                    "INSERT INTO daily_history (day, source, hashrate_hs, difficulty, price_usd) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, source) DO UPDATE SET "
                    "hashrate_hs = COALESCE(excluded.hashrate_hs, hashrate_hs), "
                    "difficulty = COALESCE(excluded.difficulty, difficulty), "
                    "price_usd = COALESCE(excluded.price_usd, price_usd)",
                    daily,
                )
            if statuses:
                conn.executemany(
                    "INSERT OR REPLACE INTO feed_status (source, state, since, last_message_at, "
                    "reconnects, last_error, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    list(statuses.values()),
                )
        return WriteResult(
            blocks=len(blocks),
            ticks=len(ticks),
            samples=len(samples),
            daily=len(daily),
            statuses=len(statuses),
            ignored=ignored,
        )

    @staticmethod
    def _write_ticks(conn: sqlite3.Connection, ticks: list[tuple[str, float, float, float]]) -> int:
        """Insert ``(source, time, price_usd, received_at)`` rows and fold the ones that were
        new into their candles. Returns how many were new.

        Why not ``executemany`` and a trigger: every row was its own ``sqlite3_step`` (each
        one releases and re-takes the GIL, so a busy event loop stalls the writer thread)
        and its own trigger run. A multi-row ``INSERT`` is one step per chunk. It fails as a
        whole (the statement is undone, the transaction is not) when a tick is already
        stored or repeats within the batch; only then does ``INSERT OR IGNORE ... RETURNING``
        say which rows SQLite really inserted."""
        inserted: list[tuple[Any, ...]] = []
        for start, size in _chunks(len(ticks)):
            chunk = ticks[start : start + size]
            params = list(itertools.chain.from_iterable(chunk))
            try:
                conn.execute(_tick_insert_sql(size, returning=False), params)
            except sqlite3.IntegrityError:
                rows = conn.execute(_tick_insert_sql(size, returning=True), params).fetchall()
                inserted.extend(rows)
            else:
                inserted.extend(chunk)
        if inserted:
            conn.executemany(_CANDLE_UPSERT, _candle_rows(inserted))
        return len(inserted)

    def _write_block(self, conn: sqlite3.Connection, b: Block) -> None:
        """Insert one block and keep the active chain consistent (DESIGN.md reorg rule).

        A new hash at a height held by another active (real) hash orphans that block and
        every active block above it. Following ``prev_hash`` down through stored blocks finds
        the real fork point: ancestors that were orphaned are re-activated (the chain
        switched back) and their active competitors, with everything above, orphaned.
        """
        existing = conn.execute("SELECT orphaned FROM blocks WHERE hash = ?", (b.hash,)).fetchone()
        if existing is not None and existing[0] == 0:
            # Replay of an active block: only fill in what an earlier source did not know.
            conn.execute(
                "UPDATE blocks SET tx_count = COALESCE(tx_count, ?), "
                "fees_sats = COALESCE(fees_sats, ?), reward_sats = COALESCE(reward_sats, ?), "
                "pool = COALESCE(pool, ?), prev_hash = COALESCE(prev_hash, ?) WHERE hash = ?",
                (b.tx_count, b.fees_sats, b.reward_sats, b.pool, b.prev_hash, b.hash),
            )
            return
        placeholder = b.hash.startswith(PLACEHOLDER_PREFIX)
        cur = self._active_at(conn, b.height)
        orphan_from: int | None = None
        if cur is not None:
            if cur.startswith(PLACEHOLDER_PREFIX):
                if placeholder:
                    return
                # A stand-in from an import: the real block replaces it, nothing above moves.
                conn.execute("DELETE FROM blocks WHERE hash = ?", (cur,))
            elif placeholder:
                return  # an import never displaces a real block
            else:
                orphan_from = b.height
        # Walk prev_hash down to the fork point.
        reactivate: list[str] = []
        height, prev = b.height - 1, b.prev_hash
        while prev is not None and not prev.startswith(PLACEHOLDER_PREFIX):
            below = self._active_at(conn, height)
            if below == prev or (below is not None and below.startswith(PLACEHOLDER_PREFIX)):
                break
            row = conn.execute(
                "SELECT height, prev_hash FROM blocks WHERE hash = ?", (prev,)
            ).fetchone()
            if below is not None:
                orphan_from = height  # the active block there is on the losing branch
            if row is None or row[0] != height:
                break  # fork point below what we hold: gap fill brings the rest
            reactivate.append(prev)
            height, prev = height - 1, row[1]
        if orphan_from is not None:
            n = conn.execute(
                "UPDATE blocks SET orphaned = 1 WHERE orphaned = 0 AND height >= ?",
                (orphan_from,),
            ).rowcount
            log.warning(
                "reorg at height %s: %s block(s) orphaned, new block %s from %s",
                orphan_from,
                n,
                b.hash,
                b.source,
            )
        if reactivate:
            conn.executemany(
                "UPDATE blocks SET orphaned = 0 WHERE hash = ?", [(h,) for h in reactivate]
            )
        # Above: a block we already hold at H+1 that does not build on this one is on the
        # losing branch now (the newest block wins), and so is everything above it.
        above = conn.execute(
            "SELECT prev_hash FROM blocks WHERE height = ? AND orphaned = 0", (b.height + 1,)
        ).fetchone()
        if (
            above is not None
            and above[0] is not None
            and above[0] != b.hash
            and not above[0].startswith(PLACEHOLDER_PREFIX)
            and not placeholder
        ):
            conn.execute(
                "UPDATE blocks SET orphaned = 1 WHERE orphaned = 0 AND height > ?", (b.height,)
            )
        if existing is not None:
            conn.execute(
                "UPDATE blocks SET orphaned = 0, tx_count = COALESCE(tx_count, ?), "
                "fees_sats = COALESCE(fees_sats, ?), reward_sats = COALESCE(reward_sats, ?), "
                "pool = COALESCE(pool, ?) WHERE hash = ?",
                (b.tx_count, b.fees_sats, b.reward_sats, b.pool, b.hash),
            )
            return
        difficulty = b.difficulty if b.difficulty is not None else difficulty_from_bits(b.bits)
        conn.execute(
            "INSERT INTO blocks (hash, height, prev_hash, time, first_seen, bits, difficulty, "
            "work, chainwork, tx_count, fees_sats, reward_sats, pool, orphaned, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                b.hash,
                b.height,
                b.prev_hash,
                b.time,
                float(b.time) if b.backfill else b.received_at,
                b.bits,
                difficulty,
                work_hex(work_from_bits(b.bits)),
                None if b.chainwork is None else work_hex(b.chainwork),
                b.tx_count,
                b.fees_sats,
                b.reward_sats,
                b.pool,
                b.source,
            ),
        )

    @staticmethod
    def _active_at(conn: sqlite3.Connection, height: int) -> str | None:
        row = conn.execute(
            "SELECT hash FROM blocks WHERE height = ? AND orphaned = 0", (height,)
        ).fetchone()
        return None if row is None else row[0]

    def prune(self, now: float, retention_s: float) -> int:
        """Delete raw price ticks older than ``now - retention_s`` (candles are kept).
        Returns the number of ticks deleted."""
        cutoff = now - retention_s
        conn = self.db.conn
        deleted = 0
        with self.transaction():
            # Per source through the primary key: no extra index on time for the hot path.
            for source in self._tick_sources(conn):
                deleted += conn.execute(
                    "DELETE FROM price_ticks WHERE source = ? AND time < ?", (source, cutoff)
                ).rowcount
        self._tick_floor = max(self._tick_floor, cutoff)
        if deleted:
            log.info("pruned %s price ticks older than %.0f", deleted, cutoff)
        return deleted

    @staticmethod
    def _tick_sources(conn: sqlite3.Connection) -> list[str]:
        # A "loose index scan": one index seek per distinct source instead of a full scan.
        rows = conn.execute(
            "WITH RECURSIVE s(src) AS ("
            " SELECT min(source) FROM price_ticks"
            " UNION ALL SELECT (SELECT min(source) FROM price_ticks WHERE source > s.src)"
            " FROM s WHERE s.src IS NOT NULL)"
            " SELECT src FROM s WHERE src IS NOT NULL"
        ).fetchall()
        return [r[0] for r in rows]

    # ---------------------------------------------------------------- reads

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = _connect(self.path, readonly=True, busy_timeout_s=self._busy_timeout_s)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (for bulk reads the methods here do not cover).
        Do not close it; ``Store.close()`` does."""
        return self._reader()

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Run a read-only query on this thread's read connection; rows as dicts."""
        cursor = self._reader().execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    _BLOCK_COLUMNS = (
        "height, hash, prev_hash, time, bits, source, first_seen, difficulty, tx_count, "
        "fees_sats, reward_sats, pool"
    )

    @staticmethod
    def _block(row: tuple[Any, ...]) -> Block:
        height, hash_, prev, time_, bits, source, first_seen, diff, tx, fees, reward, pool = row
        return Block(
            height=height,
            hash=hash_,
            prev_hash=prev,
            time=time_,
            bits=bits,
            source=source or "",
            received_at=first_seen,
            difficulty=diff,
            tx_count=tx,
            fees_sats=fees,
            reward_sats=reward,
            pool=pool,
            # first_seen == header time is how backfilled/imported blocks are stored.
            backfill=first_seen == float(time_),
        )

    def tip(self) -> Block | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {self._BLOCK_COLUMNS} FROM blocks WHERE orphaned = 0 "
                "ORDER BY height DESC LIMIT 1"
            )
            .fetchone()
        )
        return None if row is None else self._block(row)

    def active_blocks(
        self, limit: int | None = None, since_height: int | None = None
    ) -> list[Block]:
        """Active blocks in ascending height: those at ``since_height`` or above, and of
        those the newest ``limit``. ``Block.received_at`` is the stored ``first_seen``."""
        where = "orphaned = 0"
        params: list[Any] = []
        if since_height is not None:
            where += " AND height >= ?"
            params.append(since_height)
        sql = f"SELECT {self._BLOCK_COLUMNS} FROM blocks WHERE {where} ORDER BY height DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._reader().execute(sql, params).fetchall()
        rows.reverse()
        return [self._block(r) for r in rows]

    def block_work(self, limit: int | None = None) -> list[tuple[int, int, int]]:
        """(height, time, work) of the newest ``limit`` active blocks, ascending: what the
        hashrate windows need, without building events."""
        sql = "SELECT height, time, work FROM blocks WHERE orphaned = 0 ORDER BY height DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._reader().execute(sql, params).fetchall()
        rows.reverse()
        return [(h, t, int(w, 16)) for h, t, w in rows]

    def missing_heights(self, lo: int, hi: int) -> list[int]:
        """Heights in ``[lo, hi]`` with no active block (what a gap fill must fetch)."""
        if hi < lo:
            return []
        held = {
            r[0]
            for r in self._reader().execute(
                "SELECT height FROM blocks WHERE orphaned = 0 AND height BETWEEN ? AND ?",
                (lo, hi),
            )
        }
        return [h for h in range(lo, hi + 1) if h not in held]

    def block_count(self, *, include_orphaned: bool = False) -> int:
        sql = "SELECT count(*) FROM blocks" + ("" if include_orphaned else " WHERE orphaned = 0")
        return int(self._reader().execute(sql).fetchone()[0])

    def orphaned_hashes(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT hash FROM blocks WHERE orphaned = 1")]

    def candles(self, source: str, since_minute: float = 0) -> list[Candle]:
        rows = self._reader().execute(
            "SELECT minute, open, high, low, close, n FROM candles "
            "WHERE source = ? AND minute >= ? ORDER BY minute",
            (source, since_minute),
        )
        return [Candle(*r) for r in rows]

    def latest_prices(self) -> list[PriceTick]:
        """The newest stored tick of each exchange source (not the ``'ref'`` series),
        ordered by source."""
        conn = self._reader()
        out: list[PriceTick] = []
        for source in self._tick_sources(conn):
            if source == REF_SOURCE:
                continue
            row = conn.execute(
                "SELECT time, price_usd, received_at FROM price_ticks WHERE source = ? "
                "ORDER BY time DESC LIMIT 1",
                (source,),
            ).fetchone()
            if row is not None:
                out.append(
                    PriceTick(
                        source=source, price_usd=row[1], time=row[0], received_at=row[2] or row[0]
                    )
                )
        return out

    def tick_count(self, source: str | None = None) -> int:
        if source is None:
            return int(self._reader().execute("SELECT count(*) FROM price_ticks").fetchone()[0])
        return int(
            self._reader()
            .execute("SELECT count(*) FROM price_ticks WHERE source = ?", (source,))
            .fetchone()[0]
        )

    def metric_series(
        self, name: str, since: float = 0, until: float | None = None
    ) -> list[tuple[int, float]]:
        """(minute, value) of one metric with ``since <= minute <= until``, ascending."""
        sql = "SELECT minute, value FROM metric_samples WHERE name = ? AND minute >= ?"
        params: list[Any] = [name, since]
        if until is not None:
            sql += " AND minute <= ?"
            params.append(until)
        return [(m, v) for m, v in self._reader().execute(sql + " ORDER BY minute", params)]

    def daily_history(self, since_day: float = 0, source: str | None = None) -> list[DailyPoint]:
        """Stored days from ``since_day`` on, ascending by (day, source). ``received_at`` is
        not stored and is set to the day itself."""
        sql = (
            "SELECT day, source, hashrate_hs, difficulty, price_usd FROM daily_history "
            "WHERE day >= ?"
        )
        params: list[Any] = [since_day]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY day, source"
        return [
            DailyPoint(
                source=src,
                day=day,
                received_at=float(day),
                hashrate_hs=hr,
                difficulty=diff,
                price_usd=price,
            )
            for day, src, hr, diff, price in self._reader().execute(sql, params)
        ]

    def feed_statuses(self) -> list[FeedStatus]:
        out = []
        for row in self._reader().execute(
            "SELECT source, state, since, last_message_at, reconnects, last_error, detail, "
            "updated_at FROM feed_status ORDER BY source"
        ):
            source, state, since, last_msg, reconnects, err, detail, updated = row
            try:
                fs = FeedState(state)
            except ValueError:
                fs = FeedState.DOWN
            out.append(
                FeedStatus(
                    source=source,
                    state=fs,
                    since=since,
                    received_at=updated if updated is not None else since,
                    last_message_at=last_msg,
                    reconnects=reconnects or 0,
                    last_error=err,
                    detail=detail,
                )
            )
        return out

    def data_version(self) -> int:
        """Changes whenever another connection commits (for the UI's attach mode).
        Compare values from the same thread only: each thread has its own connection."""
        return int(self._reader().execute("PRAGMA data_version").fetchone()[0])

    def is_empty(self) -> bool:
        """True when there is nothing to show: no block, price, sample or daily point."""
        conn = self._reader()
        for table in ("blocks", "candles", "price_ticks", "metric_samples", "daily_history"):
            if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                return False
        return True
