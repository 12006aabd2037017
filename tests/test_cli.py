"""The ``hashwatch`` command line as an operator uses it: the real console script of this
venv in a subprocess, real SQLite files in tmp_path, a real json:// receiver on 127.0.0.1.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error; never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from support_cli import BLOCKS_CSV, arun, assert_no_traceback, db_rows, run
from support_receivers import HttpReceiver, free_port

from feeds import __version__
from feeds.metrics import METRIC_NAMES
from feeds.store import Store

SUBCOMMANDS = [
    ["run"],
    ["demo"],
    ["status"],
    ["check-config"],
    ["import"],
    ["alerts"],
    ["silence"],
    ["unsilence"],
    ["test-alert"],
    ["rules"],
    ["rules", "backtest"],
]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def no_nan(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name} in output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def imported_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real blocks CSV imported once through the CLI (a read-only fixture)."""
    home = tmp_path_factory.mktemp("imported")
    db = home / "blocks.db"
    r = run(["import", "blocks", BLOCKS_CSV, "--db", db], home)
    assert r.code == 0, r.err
    assert "4760 new" in r.out
    return db


# --------------------------------------------------------------------------- basics
def test_version(tmp_path: Path) -> None:
    r = run(["--version"], tmp_path)
    assert r.code == 0
    assert r.out.strip() == f"hashwatch {__version__}"


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_help_on_every_subcommand(tmp_path: Path, cmd: list[str]) -> None:
    r = run([*cmd, "--help"], tmp_path)
    assert r.code == 0, r.err
    assert r.out.startswith("usage: hashwatch " + " ".join(cmd))
    # the shared options are offered after the subcommand too
    assert "--config" in r.out and "--db" in r.out


def test_top_level_help_lists_subcommands(tmp_path: Path) -> None:
    r = run(["--help"], tmp_path)
    assert r.code == 0
    for cmd in ("run", "demo", "status", "check-config", "import", "alerts", "test-alert"):
        assert cmd in r.out


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = run(["frobnicate"], tmp_path)
    assert r.code == 2
    assert "invalid choice" in r.err
    r = run(["silence", "hashprice-floor"], tmp_path)  # --for is required
    assert r.code == 2
    assert "--for" in r.err
    r = run(["silence", "hashprice-floor", "--for", "4 hours", "--db", tmp_path / "x.db"], tmp_path)
    assert r.code == 2
    assert "--for" in r.err and "not a duration" in r.err
    assert_no_traceback(r)
    r = run(["rules", "backtest", "--since", "30x", "--db", tmp_path / "x.db"], tmp_path)
    assert r.code == 2
    assert "--since" in r.err and "not a duration" in r.err
    assert_no_traceback(r)


# --------------------------------------------------------------------------- status
def test_status_missing_db_says_so(tmp_path: Path) -> None:
    db = tmp_path / "nothing.db"
    r = run(["status", "--db", db], tmp_path)
    assert r.code == 0, r.err
    assert f"no database at {db}" in r.out
    assert not db.exists(), "status must not create the database"
    r = run(["status", "--json", "--db", db], tmp_path)
    assert r.code == 0
    data = no_nan(r.out)
    assert isinstance(data, dict)
    assert data["tip"] is None and data["empty"] is True
    assert set(data["metrics"]) == set(METRIC_NAMES)
    assert all(v is None for v in data["metrics"].values())


def test_status_empty_db_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Store.open(db).close()
    before = md5(db)
    r = run(["status", "--db", db], tmp_path)
    assert r.code == 0, r.err
    assert "holds no data yet" in r.out
    assert md5(db) == before


def test_status_json_after_import(tmp_path: Path, imported_db: Path) -> None:
    r = run(["status", "--json", "--db", imported_db], tmp_path)
    assert r.code == 0, r.err
    data = no_nan(r.out)
    assert isinstance(data, dict)
    for key in ("tip", "metrics", "stale", "feeds", "alerts"):
        assert key in data
    assert data["tip"]["height"] == 942199
    assert list(data["metrics"]) == list(METRIC_NAMES), "every metric name, in table order"
    for name, value in data["metrics"].items():
        assert value is None or (isinstance(value, int | float) and not isinstance(value, bool)), (
            name
        )
    m = data["metrics"]
    # Computable from blocks alone ...
    assert m["tip_height"] == 942199
    assert m["difficulty"] == pytest.approx(133793147307542.75, rel=1e-9)
    assert m["hashrate_7d"] is not None and 5e20 < m["hashrate_7d"] < 2e21
    assert m["subsidy_sats"] == 312_500_000
    # ... and not made up where there is no price yet
    assert m["price_usd"] is None and m["hashprice"] is None
    assert isinstance(data["stale"], list)
    assert all(name in METRIC_NAMES for name in data["stale"])
    assert data["feeds"] == {} and data["alerts"] == []


def test_status_text_after_import(tmp_path: Path, imported_db: Path) -> None:
    r = run(["status", "--db", imported_db], tmp_path)
    assert r.code == 0, r.err
    assert "tip: 942199" in r.out
    for name in METRIC_NAMES:
        assert name in r.out
    assert "alerts: none active" in r.out


def test_config_and_db_before_and_after_subcommand(tmp_path: Path, imported_db: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\npath = "{imported_db}"\n')
    after = run(["status", "--json", "--config", cfg], tmp_path)
    before = run(["--config", cfg, "status", "--json"], tmp_path)
    assert after.code == before.code == 0, after.err + before.err
    for r in (after, before):
        assert no_nan(r.out)["tip"]["height"] == 942199  # type: ignore[index]
    other = tmp_path / "other.db"
    for args in (["--db", other, "status"], ["status", "--db", other]):
        r = run(["--config", cfg, *args], tmp_path)
        assert r.code == 0
        assert f"no database at {other}" in r.out, "--db overrides [database] path"
    # A broken --config is reported whichever side it is on.
    bad = tmp_path / "bad.toml"
    bad.write_text("[feeds]\nbackfil_blocks = 5\n")
    for args in (["--config", bad, "status"], ["status", "--config", bad]):
        r = run(args, tmp_path)
        assert r.code == 2
        assert "backfil_blocks" in r.err


# --------------------------------------------------------------------------- config
def test_check_config_summary_and_path_wins(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[database]\npath = "g.db"\n\n[feeds.kraken]\nenabled = false\n\n'
        "[economics.fleet]\nefficiency_j_per_th = 17.5\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[ui]\nthem = 'dark'\n")
    r = run(["--config", bad, "check-config", good], tmp_path)
    assert r.code == 0, r.err
    assert f"config ok: {good}" in r.out
    assert str(tmp_path / "g.db") in r.out
    assert "feeds enabled: mempool, coinbase, bitstamp" in r.out
    assert "17.5 J/TH" in r.out
    assert "rules:" in r.out
    # without PATH the --config file is the one checked
    r = run(["check-config", "--config", bad], tmp_path)
    assert r.code == 2 and "them" in r.err


def test_check_config_shipped_default(tmp_path: Path) -> None:
    r = run(["check-config", Path(__file__).resolve().parent.parent / "config.toml"], tmp_path)
    assert r.code == 0, r.err
    assert "config ok" in r.out
    assert_no_traceback(r)


BAD_CONFIGS = {
    "unknown-key": (
        "[feeds]\nbackfil_blocks = 5\n",
        ["line 2", "feeds.backfil_blocks", "did you mean 'backfill_blocks'"],
    ),
    "bad-duration": (
        '[alerts]\neval_interval = "15 minutes"\n',
        ["line 2", "alerts.eval_interval", "'15 minutes' is not a duration", "15m"],
    ),
    "invalid-toml": ('[alerts\neval_interval = "15m"\n', ["line 1", "invalid TOML"]),
    "unset-env": (
        '[[notify.targets]]\nurl = "json://127.0.0.1:9/x?token=${HW_TEST_UNSET_VAR}"\n',
        ["notify.targets[1].url", "HW_TEST_UNSET_VAR", "not set"],
    ),
    "wrong-type": ("[feeds]\nbackfill_blocks = 'many'\n", ["feeds.backfill_blocks", "line 2"]),
    "out-of-range": (
        "[economics.fleet]\nuptime_pct = 140\n",
        ["economics.fleet.uptime_pct", "line 2"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_message(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    cfg = tmp_path / f"{case}.toml"
    cfg.write_text(text)
    for args in (["check-config", cfg], ["status", "--config", cfg]):
        r = run(args, tmp_path)
        assert r.code == 2, (case, r.out, r.err)
        assert_no_traceback(r)
        assert r.err.startswith("hashwatch: configuration error: ")
        assert str(cfg.name) in r.err
        for fragment in expected:
            assert fragment in r.err, (fragment, r.err)


def test_missing_named_config_is_an_error(tmp_path: Path) -> None:
    r = run(["status", "--config", tmp_path / "nope.toml"], tmp_path)
    assert r.code == 2
    assert "not found" in r.err
    assert_no_traceback(r)


def test_hashwatch_config_env_is_used(tmp_path: Path) -> None:
    cfg = tmp_path / "env.toml"
    cfg.write_text('[database]\npath = "from-env.db"\n')
    r = run(["check-config"], tmp_path, env={"HASHWATCH_CONFIG": str(cfg)})
    assert r.code == 0, r.err
    assert str(tmp_path / "from-env.db") in r.out


# --------------------------------------------------------------------------- import
def test_import_blocks_bad_rows_commit_nothing(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    csv = tmp_path / "b.csv"
    csv.write_text(
        "height,time,bits,colour\n"
        "100,1771527275,1701f303,red\n"
        "101,1771527375,zz,blue\n"
        "102,not-a-time,0x1701f303,green\n"
    )
    r = run(["import", "blocks", csv, "--db", db], tmp_path)
    assert r.code == 2
    assert_no_traceback(r)
    assert "line 3" in r.err and "bits 'zz'" in r.err
    assert "line 4" in r.err
    assert "no blocks were imported" in r.err
    assert db_rows(db, "SELECT count(*) FROM blocks") in ([(0,)], [])


def test_import_blocks_good_rows(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    csv = tmp_path / "b.csv"
    csv.write_text(
        "height,time,bits,hash,colour\n"
        "100,1771527275,1701f303,,red\n"
        "101,2026-02-19T19:00:00Z,0x1701f303,,blue\n"
        "102,1771527975,386003715,,green\n"
    )
    r = run(["import", "blocks", csv, "--db", db], tmp_path)
    assert r.code == 0, r.err
    assert "3 new" in r.out
    assert "colour" in r.out, "unknown columns are named"
    rows = db_rows(db, "SELECT height, bits FROM blocks ORDER BY height")
    assert rows == [(100, 0x1701F303), (101, 0x1701F303), (102, 0x1701F303)]
    # idempotent: a second import adds nothing
    r = run(["import", "blocks", csv, "--db", db], tmp_path)
    assert r.code == 0
    assert db_rows(db, "SELECT count(*) FROM blocks") == [(3,)]


def test_import_prices_good_and_bad(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    bad = tmp_path / "bad.csv"
    bad.write_text("time,price_usd\n1771527275,65000\n1771527335,abc\n")
    r = run(["import", "prices", bad, "--db", db], tmp_path)
    assert r.code == 2
    assert "line 3" in r.err and "abc" in r.err
    assert "no prices were imported" in r.err
    assert_no_traceback(r)
    assert db_rows(db, "SELECT count(*) FROM candles") in ([(0,)], [])
    good = tmp_path / "good.csv"
    good.write_text("time,price_usd\n1771527275,65000\n2026-02-19T19:00:00Z,65100.5\n")
    r = run(["import", "prices", good, "--db", db], tmp_path)
    assert r.code == 0, r.err
    closes = [row[0] for row in db_rows(db, "SELECT close FROM candles ORDER BY minute")]
    assert 65000 in closes and 65100.5 in closes


def test_import_missing_file(tmp_path: Path) -> None:
    r = run(["import", "blocks", tmp_path / "nope.csv", "--db", tmp_path / "x.db"], tmp_path)
    assert r.code == 2
    assert "nope.csv" in r.err
    assert_no_traceback(r)


# --------------------------------------------------------------------- bad databases
def _newer_schema_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


BAD_DB_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["alerts"],
    ["silence", "hashprice-floor", "--for", "4h"],
    ["unsilence", "hashprice-floor"],
    ["import", "blocks", str(BLOCKS_CSV)],
    ["rules", "backtest"],
]


@pytest.mark.parametrize("kind", ["not-sqlite", "newer-schema"])
def test_bad_database_is_refused_and_untouched(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "db.sqlite"
    if kind == "not-sqlite":
        db.write_bytes(b"my tax notes, not a database\n" * 50)
        expected = "not SQLite"
    else:
        _newer_schema_db(db)
        expected = "newer hashwatch"
    before = md5(db)
    for cmd in BAD_DB_COMMANDS:
        r = run([*cmd, "--db", db], tmp_path)
        assert r.code == 1, (cmd, r.out, r.err)
        assert_no_traceback(r)
        assert "database error" in r.err and expected in r.err, (cmd, r.err)
        assert md5(db) == before, cmd
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db.sqlite")) == [
        "db.sqlite"
    ], "no -wal/-journal files were created next to it"


# ------------------------------------------------------------------ operator actions
def test_silence_and_unsilence_write_operator_actions(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    t0 = time.time()
    r = run(["silence", "hashprice-floor", "--for", "4h", "--db", db], tmp_path)
    assert r.code == 0, r.err
    assert "silenced hashprice-floor for 4h" in r.out
    r = run(["--db", db, "unsilence", "hashprice-floor"], tmp_path)
    assert r.code == 0, r.err
    rows = db_rows(db, "SELECT action, args, created_at, done_at FROM operator_actions ORDER BY id")
    assert [(a, json.loads(b)) for a, b, _, _ in rows] == [
        ("silence", {"rule": "hashprice-floor", "seconds": 14400.0}),
        ("unsilence", {"rule": "hashprice-floor"}),
    ]
    assert all(t0 - 1 <= c <= time.time() + 1 and d is None for _, _, c, d in rows)


def test_alerts_json(tmp_path: Path) -> None:
    # "?" and "#" in the path: SQLite URIs must not cut the path there
    (tmp_path / "odd?dir#1").mkdir()
    db = tmp_path / "odd?dir#1" / "a.db"
    r = run(["alerts", "--json", "--db", db], tmp_path)
    assert r.code == 0
    assert json.loads(r.out)["active"] == []
    Store.open(db).close()
    now = time.time()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO alert_state (rule, state, since, fired_at, last_value) "
            "VALUES ('hashprice-floor', 'firing', ?, ?, 38.7)",
            (now - 600, now - 600),
        )
        conn.execute(
            "INSERT INTO alert_history (rule, severity, previous, state, at, value, threshold, "
            "message, fired_at) VALUES ('hashprice-floor', 'critical', 'pending', 'firing', ?, "
            "38.7, 40, 'hashprice $38.7/PH/day below $40', ?)",
            (now - 600, now - 600),
        )
    conn.close()
    r = run(["alerts", "--json", "--db", db], tmp_path)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [(a["rule"], a["state"]) for a in data["active"]] == [("hashprice-floor", "firing")]
    assert data["recent"][0]["message"] == "hashprice $38.7/PH/day below $40"
    r = run(["alerts", "--db", db], tmp_path)
    assert "FIRING" in r.out and "hashprice-floor" in r.out
    r = run(["status", "--json", "--db", db], tmp_path)
    assert r.code == 0, r.err
    alerts = no_nan(r.out)["alerts"]  # type: ignore[index]
    assert [(a["rule"], a["state"], a["severity"], a["value"]) for a in alerts] == [
        ("hashprice-floor", "firing", "critical", 38.7)
    ]


# ------------------------------------------------------------------------ test-alert
async def test_test_alert_ok_and_refused(tmp_path: Path) -> None:
    receiver = await HttpReceiver().start()
    dead = free_port()
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            "[[notify.targets]]\n"
            'name = "ops"\n'
            f'url = "{receiver.json_url("hook")}"\n\n'
            "[[notify.targets]]\n"
            f'url = "json://127.0.0.1:{dead}/hook"\n'
        )
        db = ["--db", tmp_path / "t.db"]
        r = await arun(["test-alert", "--target", "ops", "--config", cfg, *db], tmp_path)
        assert r.code == 0, r.both
        assert "target ops: ok" in r.out
        assert len(receiver.requests) == 1
        assert "test" in json.dumps(receiver.requests[0].body).lower()

        r = await arun(["test-alert", "--config", cfg, *db], tmp_path)
        assert r.code == 1, r.both
        assert "target ops: ok" in r.out
        assert "target 2: FAILED" in r.out
        assert len(receiver.requests) == 2
        assert_no_traceback(r)

        r = await arun(["test-alert", "--target", "nope", "--config", cfg, *db], tmp_path)
        assert r.code == 2
        assert "nope" in r.err and "ops" in r.err
    finally:
        await receiver.stop()


def test_test_alert_without_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    r = run(["test-alert", "--config", cfg, "--db", tmp_path / "t.db"], tmp_path)
    assert r.code == 1
    assert "no [[notify.targets]]" in r.out


# -------------------------------------------------------------------------- backtest
async def test_rules_backtest_reports_and_sends_nothing(tmp_path: Path) -> None:
    receiver = await HttpReceiver().start()
    try:
        db = tmp_path / "bt.db"
        Store.open(db).close()
        now = time.time()
        start = (int(now) // 60) * 60 - 3 * 3600
        # hashprice above, then under the $40 floor for an hour, then back above the clear
        values = [45.0] * 60 + [38.0] * 60 + [44.0] * 60
        conn = sqlite3.connect(db)
        with conn:
            conn.executemany(
                "INSERT INTO metric_samples (name, minute, value) VALUES ('hashprice', ?, ?)",
                [(start + 60 * i, v) for i, v in enumerate(values)],
            )
        conn.close()
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            "[[notify.targets]]\n"
            f'url = "{receiver.json_url("hook")}"\n\n'
            "[[rules]]\n"
            'name = "floor"\nmetric = "hashprice"\nseverity = "critical"\n'
            'below = 40.0\nclear = 42.0\nfor = "5m"\n'
        )
        before_outbox = db_rows(db, "SELECT count(*) FROM outbox")
        r = await arun(
            ["rules", "backtest", "--since", "1d", "--config", cfg, "--db", db], tmp_path
        )
        assert r.code == 0, r.both
        assert "floor" in r.out
        assert "FIRING" in r.out.upper() and "RESOLVED" in r.out.upper()
        assert "nothing was sent" in r.out
        assert receiver.attempts == 0
        assert db_rows(db, "SELECT count(*) FROM outbox") == before_outbox
        assert db_rows(db, "SELECT count(*) FROM alert_history") == [(0,)]
    finally:
        await receiver.stop()


def test_rules_backtest_missing_db(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    r = run(["rules", "backtest", "--db", db], tmp_path)
    assert r.code == 0
    assert "no database" in r.out
    assert not db.exists()
