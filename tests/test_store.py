"""feeds.store on real SQLite files: opening, refusal of foreign/newer files, migrations,
idempotent writes, reorgs, candles, pruning and reads."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support_store import BITS, T0, active_hashes, block, chain, dump, h, tick

from feeds.derive import block_work, difficulty_from_bits
from feeds.errors import StoreError
from feeds.events import (
    AlertState,
    AlertTransition,
    DailyPoint,
    FeedState,
    FeedStatus,
    MetricsSnapshot,
)
from feeds.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreMissingError

MINUTE = 1_771_527_240  # a minute boundary near T0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "dir" / "hashwatch.db"


@pytest.fixture
def store(path: Path):
    s = Store.open(path)
    yield s
    s.close()


def columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


# ------------------------------------------------------------------------ opening


def test_open_creates_parent_dir_wal_normal_busy_timeout_and_version(path: Path) -> None:
    with Store.open(path) as s:
        assert path.exists()
        conn = s.db.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # Reopening an up-to-date database is a no-op.
    before = dump(path)
    Store.open(path).close()
    assert dump(path) == before


def test_tables_and_columns_are_exactly_the_design_contract(path: Path) -> None:
    Store.open(path).close()
    expected = {
        "blocks": "hash height prev_hash time first_seen bits difficulty work chainwork tx_count "
        "fees_sats reward_sats pool orphaned source",
        "price_ticks": "source time price_usd received_at",
        "candles": "source minute open high low close n",
        "metric_samples": "name minute value",
        "daily_history": "day source hashrate_hs difficulty price_usd",
        "feed_status": "source state since last_message_at reconnects last_error detail updated_at",
        "alert_state": "rule state since active_at fired_at resolved_at last_value "
        "last_eval_at last_sent_at silenced_until fingerprint keep_firing_since",
        "alert_history": "id rule severity previous state at value threshold message fired_at",
        "outbox": "id key target created_at severity title body attempts next_attempt_at "
        "delivered_at last_error",
        "operator_actions": "id action args created_at done_at result",
    }
    for table, cols in expected.items():
        assert set(columns(path, table)) == set(cols.split()), table


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        ("SELECT hash FROM blocks WHERE orphaned = 0 AND height = 5", "idx_blocks_active_height"),
        ("SELECT * FROM candles WHERE source = 'x' AND minute >= 5", "PRIMARY KEY"),
        ("SELECT * FROM metric_samples WHERE name = 'x' AND minute >= 5", "PRIMARY KEY"),
    ],
)
def test_queries_use_indexes(path: Path, sql: str, index: str) -> None:
    Store.open(path).close()
    conn = sqlite3.connect(path)
    plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    conn.close()
    assert index in plan


def test_outbox_key_is_unique(store: Store) -> None:
    with store.transaction() as db:
        db["outbox"].insert({"key": "k1", "target": "t", "created_at": 1.0})
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.conn.execute("INSERT INTO outbox (key, target, created_at) VALUES ('k1', 't', 2)")
    assert store.query("SELECT count(*) AS n FROM outbox") == [{"n": 1}]


def test_random_bytes_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    data = os.urandom(4096)
    path.write_bytes(data)
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert "is not a hashwatch database (not SQLite)" in str(err.value)
    assert str(path) in str(err.value)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
    with pytest.raises(StoreError, match="not SQLite"):
        Store.open(path, readonly=True)


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[database]\npath = 'x'\n")
    with pytest.raises(StoreError, match="not a hashwatch database"):
        Store.open(path)
    assert path.read_text() == "[database]\npath = 'x'\n"


def _sqlite_file(path: Path, version: int, table: str = "future_table") -> bytes:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (x)")
    conn.execute("INSERT INTO " + table + " VALUES (1)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    data = _sqlite_file(path, SCHEMA_VERSION + 41)
    for readonly in (False, True):
        with pytest.raises(StoreError) as err:
            Store.open(path, readonly=readonly)
        msg = str(err.value)
        assert f"schema version {SCHEMA_VERSION + 41}" in msg
        assert f"up to {SCHEMA_VERSION}" in msg
        assert "newer hashwatch" in msg
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]


def test_other_applications_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    data = _sqlite_file(path, 0, table="customers")
    with pytest.raises(StoreError, match=r"another application \(tables: customers\)"):
        Store.open(path)
    assert path.read_bytes() == data


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "touched.db"
    path.write_bytes(b"")
    with Store.open(path) as s:
        assert s.is_empty()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")


def test_readonly_missing_and_uninitialised(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError, match="no hashwatch database"):
        Store.open(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()
    empty = tmp_path / "empty.db"
    conn = sqlite3.connect(empty)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.close()
    with pytest.raises(StoreMissingError, match="no hashwatch data yet"):
        Store.open(empty, readonly=True)


def test_readonly_reads_but_cannot_write(path: Path) -> None:
    with Store.open(path) as s:
        s.write_events(chain(100, 102))
    with Store.open(path, readonly=True) as r:
        assert r.tip().height == 102
        with pytest.raises(StoreError, match="read-only"):
            r.write_events(chain(103, 103))


# ------------------------------------------------------------------------ migrations


def _v2_add_notes(db) -> None:
    db.conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.conn.execute("ALTER TABLE blocks ADD COLUMN note TEXT")
    db.conn.execute("UPDATE blocks SET note = 'migrated'")


def test_upgrade_from_version_1_to_2(path: Path) -> None:
    with Store.open(path, migrations=MIGRATIONS[:1]) as s:
        s.write_events(chain(100, 101))
        assert s.db.conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with Store.open(path, migrations=(*MIGRATIONS[:1], _v2_add_notes)) as s:
        assert s.db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert s.query("SELECT note FROM blocks") == [{"note": "migrated"}] * 2
        assert s.block_count() == 2
    # A version-1 hashwatch now refuses the upgraded file, untouched.
    data = path.read_bytes()
    with pytest.raises(StoreError, match="schema version 2"):
        Store.open(path, migrations=MIGRATIONS[:1])
    assert path.read_bytes() == data


def test_failed_migration_rolls_back_completely(path: Path) -> None:
    Store.open(path, migrations=MIGRATIONS[:1]).close()

    def broken(db) -> None:
        db.conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Store.open(path, migrations=(*MIGRATIONS[:1], broken))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "half_done" not in names


# ------------------------------------------------------------------------ blocks


def test_block_row_work_difficulty_and_first_seen(store: Store, path: Path) -> None:
    live = block(100, received_at=T0 + 60_000.5)
    back = block(101, backfill=True)
    store.write_events([live, back])
    rows = {r["height"]: r for r in store.query("SELECT * FROM blocks")}
    assert int(rows[100]["work"], 16) == block_work(BITS)
    assert len(rows[100]["work"]) == 64
    assert rows[100]["difficulty"] == difficulty_from_bits(BITS)
    assert rows[100]["first_seen"] == T0 + 60_000.5
    assert rows[101]["first_seen"] == back.time  # backfill: header time
    assert rows[100]["orphaned"] == 0
    blocks = store.active_blocks()
    assert [b.height for b in blocks] == [100, 101]
    assert blocks[0].received_at == T0 + 60_000.5 and not blocks[0].backfill
    assert blocks[1].backfill
    assert store.block_work() == [
        (100, live.time, block_work(BITS)),
        (101, back.time, block_work(BITS)),
    ]


def test_replay_is_idempotent_for_every_event_kind(store: Store, path: Path) -> None:
    events = [
        *chain(100, 103),
        tick(70_000, MINUTE + 1),
        tick(70_100, MINUTE + 2),
        tick(69_900, MINUTE + 3, "kraken"),
        MetricsSnapshot(at=MINUTE + 5, values={"price_usd": 70_000.0, "hashrate_7d": 1e21}),
        DailyPoint(source="mempool", day=1_771_459_200, received_at=1.0, hashrate_hs=9e20),
        FeedStatus(source="coinbase", state=FeedState.LIVE, since=5.0, received_at=6.0),
    ]
    first = store.write_events(events)
    assert first.blocks == 4 and first.ticks == 4  # 3 exchange ticks + 1 reference
    once = dump(path)
    store.write_events(events)
    store.write_events(list(reversed(events)))
    assert dump(path) == once
    assert store.candles("coinbase")[0].n == 2


def test_reorg_orphans_the_block_and_its_descendants(store: Store, path: Path) -> None:
    store.write_events(chain(99, 102))
    store.write_events([block(100, "B", prev_branch="A")])
    assert store.tip().hash == h("B100")
    assert set(store.orphaned_hashes()) == {h("A100"), h("A101"), h("A102")}
    assert active_hashes(path) == {99: h("A99"), 100: h("B100")}
    assert store.missing_heights(99, 102) == [101, 102]
    # The new chain fills back in.
    store.write_events([block(101, "B"), block(102, "B")])
    assert store.tip().hash == h("B102")
    assert store.block_count() == 4
    assert store.block_count(include_orphaned=True) == 7


def test_chain_switching_back_via_descendant(store: Store, path: Path) -> None:
    store.write_events(chain(99, 102))
    store.write_events([block(100, "B", prev_branch="A"), block(101, "B")])
    # The A branch wins after all: its next block arrives.
    store.write_events([block(103, "A")])
    assert active_hashes(path) == {n: h(f"A{n}") for n in range(99, 104)}
    assert set(store.orphaned_hashes()) == {h("B100"), h("B101")}


def test_orphaned_block_arriving_again_is_reactivated(store: Store, path: Path) -> None:
    store.write_events(chain(99, 101))
    store.write_events([block(100, "B", prev_branch="A")])
    store.write_events([block(100, "A")])  # chain switched back
    assert active_hashes(path)[100] == h("A100")
    assert h("B100") in store.orphaned_hashes()
    assert 101 not in active_hashes(path)  # A101 returns when it is re-sent
    store.write_events([block(101, "A")])
    assert active_hashes(path) == {99: h("A99"), 100: h("A100"), 101: h("A101")}
    assert store.block_count(include_orphaned=True) == 4


def test_new_height_with_unknown_parent_orphans_the_stale_predecessor(store: Store) -> None:
    store.write_events(chain(99, 100))
    # B101 builds on B100, which we never saw: A100 is on the losing branch.
    store.write_events([block(101, "B")])
    assert h("A100") in store.orphaned_hashes()
    assert store.missing_heights(99, 101) == [100]
    store.write_events([block(100, "B", prev_branch="A")])
    assert store.missing_heights(99, 101) == []
    assert store.tip().hash == h("B101")


def test_backfill_in_descending_order_is_not_a_reorg(store: Store) -> None:
    store.write_events(list(reversed(chain(100, 120, backfill=True))))
    assert store.block_count() == 21
    assert store.orphaned_hashes() == []


def test_replay_fills_unknown_fields_without_changing_first_seen(store: Store) -> None:
    store.write_events([block(100, received_at=T0 + 1.0)])
    store.write_events([block(100, received_at=T0 + 99.0, fees_sats=123, pool="Foundry")])
    (row,) = store.query("SELECT first_seen, fees_sats, pool FROM blocks")
    assert row == {"first_seen": T0 + 1.0, "fees_sats": 123, "pool": "Foundry"}


def test_placeholder_is_replaced_by_the_real_block_without_a_reorg(store: Store) -> None:
    store.write_events([_placeholder(n) for n in range(100, 104)])
    store.write_events([block(101)])
    assert store.block_count() == 4
    assert store.orphaned_hashes() == []
    assert {b.hash for b in store.active_blocks()} == {
        "import:100",
        h("A101"),
        "import:102",
        "import:103",
    }
    # A placeholder never displaces a real block.
    store.write_events([_placeholder(101)])
    assert store.active_blocks(since_height=101, limit=1)[0].hash == "import:103"
    assert h("A101") in {b.hash for b in store.active_blocks()}


def _placeholder(n: int):
    from dataclasses import replace

    return replace(block(n, backfill=True), hash=f"import:{n}", prev_hash=f"import:{n - 1}")


def test_active_blocks_limit_and_since_height(store: Store) -> None:
    store.write_events(chain(100, 110))
    assert [b.height for b in store.active_blocks(limit=3)] == [108, 109, 110]
    assert [b.height for b in store.active_blocks(since_height=105, limit=2)] == [109, 110]
    assert [b.height for b in store.active_blocks(since_height=109)] == [109, 110]
    assert store.missing_heights(108, 112) == [111, 112]
    assert store.missing_heights(5, 4) == []


# ------------------------------------------------------------------------ prices


def test_candle_open_close_follow_tick_time_not_arrival(store: Store) -> None:
    store.write_events([tick(100, MINUTE + 30), tick(90, MINUTE + 10)])
    store.write_events([tick(120, MINUTE + 50), tick(80, MINUTE + 20), tick(95, MINUTE + 61)])
    c0, c1 = store.candles("coinbase")
    assert (c0.minute, c0.open, c0.high, c0.low, c0.close, c0.n) == (
        MINUTE,
        90,
        120,
        80,
        120,
        4,
    )
    assert (c1.minute, c1.open, c1.close, c1.n) == (MINUTE + 60, 95, 95, 1)
    # Replaying any of them changes nothing.
    store.write_events([tick(80, MINUTE + 20), tick(100, MINUTE + 30)])
    assert store.candles("coinbase")[0] == c0
    assert store.candles("coinbase", since_minute=MINUTE + 1) == [c1]


def test_latest_prices_per_source_without_ref(store: Store) -> None:
    store.write_events(
        [
            tick(1, MINUTE + 1),
            tick(2, MINUTE + 9),
            tick(3, MINUTE + 5, "kraken"),
            MetricsSnapshot(at=MINUTE + 20, values={"price_usd": 2.5}),
        ]
    )
    latest = store.latest_prices()
    assert [(t.source, t.price_usd, t.time) for t in latest] == [
        ("coinbase", 2, MINUTE + 9),
        ("kraken", 3, MINUTE + 5),
    ]
    assert store.candles("ref")[0].close == 2.5


def test_snapshot_samples_last_value_per_minute_and_stale_ref_skipped(store: Store) -> None:
    store.write_events(
        [
            MetricsSnapshot(at=MINUTE + 1, values={"hashprice": 40.0, "margin": None}),
            MetricsSnapshot(at=MINUTE + 30, values={"hashprice": 41.0, "price_usd": 7.0}),
            MetricsSnapshot(
                at=MINUTE + 70,
                values={"hashprice": 42.0, "price_usd": 8.0},
                stale=frozenset({"price_usd"}),
            ),
        ]
    )
    assert store.metric_series("hashprice") == [(MINUTE, 41.0), (MINUTE + 60, 42.0)]
    assert store.metric_series("hashprice", since=MINUTE + 1) == [(MINUTE + 60, 42.0)]
    assert store.metric_series("margin") == []
    assert [(c.minute, c.close) for c in store.candles("ref")] == [(MINUTE, 7.0)]


def test_prune_deletes_old_ticks_keeps_candles_and_ignores_late_replays(store: Store) -> None:
    old = [tick(100 + i, MINUTE + i) for i in range(10)]
    new = [tick(200, MINUTE + 7200, "kraken"), tick(201, MINUTE + 7200)]
    store.write_events(old + new)
    assert store.prune(now=MINUTE + 7200 + 10, retention_s=3600) == 10
    assert store.tick_count() == 2
    assert store.candles("coinbase")[0].n == 10
    # A late replay of a pruned tick would otherwise be counted twice in its candle.
    store.write_events(old[:3])
    assert store.tick_count() == 2
    assert store.candles("coinbase")[0].n == 10


# ------------------------------------------------------------------------ other kinds


def test_daily_history_merges_partial_points(store: Store) -> None:
    day = 1_771_459_200
    store.write_events(
        [
            DailyPoint(source="mempool", day=day, received_at=1.0, hashrate_hs=9e20),
            DailyPoint(source="mempool", day=day, received_at=2.0, price_usd=70_000.0),
            DailyPoint(source="mempool", day=day - 86400, received_at=2.0, difficulty=1e14),
        ]
    )
    points = store.daily_history()
    assert [(p.day, p.hashrate_hs, p.difficulty, p.price_usd) for p in points] == [
        (day - 86400, None, 1e14, None),
        (day, 9e20, None, 70_000.0),
    ]
    assert [p.day for p in store.daily_history(since_day=day)] == [day]


def test_feed_status_upsert_and_read(store: Store) -> None:
    store.write_events(
        [
            FeedStatus(source="kraken", state=FeedState.CONNECTING, since=1.0, received_at=1.0),
            FeedStatus(
                source="kraken",
                state=FeedState.BACKING_OFF,
                since=5.0,
                received_at=6.0,
                reconnects=3,
                last_error="503",
                detail="clock offset 12 s",
            ),
        ]
    )
    (status,) = store.feed_statuses()
    assert status.state is FeedState.BACKING_OFF
    assert (status.since, status.received_at, status.reconnects) == (5.0, 6.0, 3)
    assert (status.last_error, status.detail) == ("503", "clock offset 12 s")


def test_alert_events_are_ignored_by_write_events(store: Store) -> None:
    t = AlertTransition(
        rule="r",
        severity="warning",
        previous=AlertState.INACTIVE,
        state=AlertState.FIRING,
        at=1.0,
        value=1.0,
        threshold=0.5,
        message="m",
    )
    assert store.write_events([t]).ignored == 1
    assert store.is_empty()


def test_bad_block_rolls_back_the_whole_batch(store: Store) -> None:
    from dataclasses import replace

    with pytest.raises(ValueError):
        store.write_events([tick(1, MINUTE), replace(block(100), bits=0)])
    assert store.is_empty()


def test_data_version_changes_when_another_connection_commits(path: Path) -> None:
    writer = Store.open(path)
    reader = Store.open(path, readonly=True)
    try:
        v0 = reader.data_version()
        assert reader.data_version() == v0
        writer.write_events([tick(1, MINUTE)])
        assert reader.data_version() != v0
        assert not reader.is_empty()
    finally:
        reader.close()
        writer.close()


def test_reads_from_another_thread_use_their_own_connection(store: Store) -> None:
    import threading

    store.write_events(chain(100, 101))
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(store.tip().height))
    thread.start()
    thread.join()
    assert seen == [101]
    assert len(store._readers) == 1  # the main thread has not read yet


def test_metric_series_upper_bound_and_reader(store: Store) -> None:
    store.write_events(
        [MetricsSnapshot(at=MINUTE + 60 * i, values={"hashprice": float(i)}) for i in range(5)]
    )
    assert store.metric_series("hashprice", MINUTE + 60, MINUTE + 180) == [
        (MINUTE + 60, 1.0),
        (MINUTE + 120, 2.0),
        (MINUTE + 180, 3.0),
    ]
    assert store.reader().execute("SELECT count(*) FROM metric_samples").fetchone() == (5,)


# Three branches: A; B forks off A after height 3; C forks off B after height 5.
_FORKS = {"A": ("A", 0), "B": ("A", 3), "C": ("B", 5)}


def _branch_block(branch: str, height: int):
    parent_branch, fork = _FORKS[branch]
    prev = branch if height - 1 > fork else parent_branch
    while height - 1 <= _FORKS[prev][1] and prev != "A":  # walk to the branch holding h-1
        prev = _FORKS[prev][0]
    return block(height, branch, prev_branch=prev)


@given(
    st.lists(
        st.tuples(st.sampled_from("ABC"), st.integers(min_value=1, max_value=9)),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=60, deadline=None)
def test_any_arrival_order_keeps_one_linked_active_chain(
    tmp_path_factory: pytest.TempPathFactory, arrivals: list[tuple[str, int]]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "hw.db"
    with Store.open(path) as s:
        for branch, height in arrivals:
            b = _branch_block(branch, height)
            s.write_events([b])
            active = {x.height: x for x in s.active_blocks()}
            # The newest block always wins ...
            assert active[height].hash == b.hash
            # ... and the active blocks form one chain: each builds on the one below it.
            for hgt, x in active.items():
                if hgt - 1 in active:
                    assert x.prev_hash == active[hgt - 1].hash, (hgt, arrivals)
        # Nothing is ever lost: every distinct block is stored exactly once.
        assert s.block_count(include_orphaned=True) == len(set(arrivals))


def test_absolute_chainwork_is_kept_when_the_source_reports_it(path: Path) -> None:
    # Bitcoin Core reports chainwork; mempool.space does not (the metrics then sum ``work``).
    core_chainwork = 0x000000000000000000000000000000000000000052B2559353DF4117B7348B64
    with Store.open(path) as s:
        s.write_events([block(100, chainwork=core_chainwork), block(101)])
        rows = {
            r["height"]: r["chainwork"] for r in s.query("SELECT height, chainwork FROM blocks")
        }
    assert int(rows[100], 16) == core_chainwork
    assert len(rows[100]) == 64
    assert rows[101] is None


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["coinbase", "kraken"]),
                st.integers(min_value=0, max_value=150),  # tenths of a second: 3 minutes
                st.integers(min_value=1, max_value=50),
            ),
            max_size=30,
        ),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_candles_equal_the_distinct_ticks_whatever_the_batching(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[str, int, int]]]
) -> None:
    """Batches with replays, in-batch duplicates and ticks out of order: every candle is what
    the distinct stored ticks say (the first arrival of a (source, time) wins)."""
    path = tmp_path_factory.mktemp("candles") / "hw.db"
    first: dict[tuple[str, float], float] = {}
    with Store.open(path) as s:
        for batch in batches:
            s.write_events([tick(float(p), MINUTE + t * 0.4, src) for src, t, p in batch])
            for src, t, p in batch:
                first.setdefault((src, MINUTE + t * 0.4), float(p))
        for source in ("coinbase", "kraken"):
            expect: dict[int, list[tuple[float, float]]] = {}
            for (src, t), p in first.items():
                if src == source:
                    expect.setdefault(int(t // 60) * 60, []).append((t, p))
            got = {c.minute: c for c in s.candles(source)}
            assert set(got) == set(expect)
            for minute, rows in expect.items():
                rows.sort()
                prices = [p for _, p in rows]
                c = got[minute]
                assert (c.open, c.high, c.low, c.close, c.n) == (
                    rows[0][1],
                    max(prices),
                    min(prices),
                    rows[-1][1],
                    len(rows),
                ), minute
            assert s.tick_count(source) == sum(len(r) for r in expect.values())


def test_large_batch_with_a_replayed_tick_inside_one_chunk(store: Store) -> None:
    """A multi-row insert that meets one stored tick stores every other one, once."""
    store.write_events([tick(7.0, MINUTE + 10.0)])
    batch = [tick(1.0 + i % 5, MINUTE + i * 0.01) for i in range(1500)]
    batch.append(tick(99.0, MINUTE + 10.0))  # replay at the same time, other price: ignored
    store.write_events(batch)
    (c,) = store.candles("coinbase")
    # i == 1000 is time MINUTE + 10.0 again: 1 stored before + 1499 new, price 7.0 kept
    assert c.n == 1500
    assert store.tick_count("coinbase") == 1500
    assert (c.open, c.close, c.high, c.low) == (1.0, 1.0 + 1499 % 5, 7.0, 1.0)
