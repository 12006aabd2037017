"""Backtest: known crossings on synthetic series, equivalence with minute-by-minute live
evaluation (windows included), and the one-year speed budget."""

from __future__ import annotations

import csv
import itertools
import random
import sqlite3
from pathlib import Path

import pytest

from alerts.backtest import backtest, backtest_block_rule, backtest_rule, render_backtest
from alerts.engine import RuleState, evaluate
from alerts.rules import Rule
from alerts.windows import MetricWindow
from feeds.events import AlertState, Block
from feeds.importer import import_blocks_csv
from feeds.store import Store
from tests.support_alerts import rule
from tests.support_cli import run as run_cli

S = AlertState
T0 = 1_700_000_000 - 1_700_000_000 % 86400  # a UTC midnight


def write_samples(path: Path, series: dict[str, list[tuple[float, float]]]) -> None:
    store = Store.open(path)
    try:
        with store.transaction() as db:
            for name, points in series.items():
                db.conn.executemany(
                    "INSERT INTO metric_samples (name, minute, value) VALUES (?, ?, ?)",
                    [(name, int(t), v) for t, v in points],
                )
    finally:
        store.close()


def minutes(values: list[float], start: float = T0) -> list[tuple[float, float]]:
    return [(start + 60 * i, v) for i, v in enumerate(values)]


def test_known_crossings_with_hold_and_hysteresis(tmp_path: Path) -> None:
    # 100 min at 45, 30 min at 38 (fires after a 5-min hold), 10 min at 41 (hysteresis:
    # still firing), 20 min at 43 (resolved), then a 3-min dip (too short to fire).
    values = [45.0] * 100 + [38.0] * 30 + [41.0] * 10 + [43.0] * 20 + [39.0] * 3 + [45.0] * 10
    write_samples(tmp_path / "hw.db", {"hashprice": minutes(values)})
    r = rule(name="hashprice-floor", below=40.0, clear=42.0, for_s=300, severity="critical")
    store = Store.open(tmp_path / "hw.db", readonly=True)
    try:
        now = T0 + 60 * len(values) + 60
        events = backtest(store, [r], since_s=now - T0, now=now)
    finally:
        store.close()
    assert [(e.state, (e.at - T0) / 60) for e in events] == [(S.FIRING, 105), (S.RESOLVED, 140)]
    resolved = events[1]
    assert resolved.fired_at == T0 + 105 * 60 and resolved.duration_s == 35 * 60
    text = render_backtest(events)
    assert "FIRING   [CRITICAL] hashprice-floor" in text and "(lasted 35m)" in text


def test_drop_and_change_windows_and_warmup(tmp_path: Path) -> None:
    # hashrate flat at 100 for 2 h, falls 1%/min to 80, stays there.
    values = [100.0] * 120 + [100.0 - k for k in range(1, 21)] + [80.0] * 200
    write_samples(tmp_path / "hw.db", {"hashrate_7d": minutes(values)})
    drop = rule(name="drop", metric="hashrate_7d", drop_pct=10.0, window=3600.0)
    fall = rule(name="fall", metric="hashrate_7d", change_pct=-15.0, window=3600.0)
    now = T0 + 60 * len(values) + 60
    # Replay only the last part: the window warms up on the samples before `since`.
    since = now - (T0 + 110 * 60)
    events = backtest(tmp_path / "hw.db", [drop, fall], since_s=since, now=now)
    got = [(e.rule, e.state, (e.at - T0) / 60) for e in events]
    # drop: 90 is 10% below the 100 peak at minute 129; the peak leaves the hour window at
    # minute 140 + 60 = 200 (80 vs 81 ... vs 80): resolves when the drop is under 10%.
    assert ("drop", S.FIRING, 129) in got
    assert ("fall", S.FIRING, 134) in got  # 85 vs 100 an hour earlier: -15%
    assert all(e.at >= T0 + 110 * 60 for e in events)
    drop_resolved = [g for g in got if g[0] == "drop" and g[1] is S.RESOLVED]
    assert drop_resolved and drop_resolved[0][2] > 180


def test_only_closed_minutes_and_since(tmp_path: Path) -> None:
    values = [45.0] * 10 + [30.0] * 2
    write_samples(tmp_path / "hw.db", {"hashprice": minutes(values)})
    r = rule(below=40.0)
    last = T0 + 60 * 11  # the minute with the second 30 is still open at `now`
    assert [e.at for e in backtest(tmp_path / "hw.db", [r], 3600, now=last + 30)] == [T0 + 600]
    assert backtest(tmp_path / "hw.db", [r], 60, now=T0 + 600 + 30) == []  # 30 not closed


def naive(r: Rule, times: list[float], values: list[float]) -> list[tuple]:
    """The live path, minute by minute: MetricWindow + engine.evaluate at every sample."""
    w = MetricWindow(r.window_s or 60.0)
    state = RuleState()
    out = []
    for t, v in zip(times, values, strict=True):
        w.push(t, v)
        stats = w.stats(t) if r.needs_window else None
        res = evaluate(r, state, v, stats, t)
        state = res.state
        tr = res.transition
        if tr is not None:
            out.append((tr.at, str(tr.previous), str(tr.state), tr.reminder))
    return out


RULES = [
    {"below": 40.0, "clear": 42.0, "for_s": 300, "keep_firing_for_s": 120, "repeat_s": 3600},
    {"above": 45.0, "below": 35.0, "for_s": 120},
    {"drop_pct": 8.0, "window": 1800.0, "clear": 4.0, "repeat_s": 1200},
    {"change_pct": -6.0, "window": 3600.0, "keep_firing_for_s": 600},
    {"change_pct": 5.0, "window": 900.0, "for_s": 180},
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kw", RULES, ids=[str(sorted(k)) for k in RULES])
def test_event_driven_backtest_equals_minute_by_minute(kw: dict, seed: int) -> None:
    rnd = random.Random(seed)
    n = 3000
    times, values = [], []
    t, v = float(T0), 40.0
    for _ in range(n):
        t += 60 * (1 if rnd.random() > 0.02 else rnd.randint(2, 90))  # some gaps
        v = max(1.0, v + rnd.gauss(0, 0.8))
        times.append(t)
        values.append(round(v, 2))
    r = rule(**kw)
    fast = [
        (e.at, str(e.previous), str(e.state), e.reminder)
        for e in backtest_rule(r, times, values, times[0])
    ]
    assert fast == naive(r, times, values)
    assert fast  # the walk does cross the thresholds


@pytest.mark.parametrize("seed", range(4))
def test_metric_window_matches_brute_force_with_sub_minute_updates(seed: int) -> None:
    """Live snapshots update the open minute in place; max/first/full stay exact."""
    rnd = random.Random(seed)
    span = 600.0
    w = MetricWindow(span)
    per_minute: dict[float, float] = {}  # what metric_samples would hold
    t = now = float(T0)
    for _ in range(800):
        t += rnd.choice((1.0, 5.0, 20.0, 60.0, 61.0, 300.0))
        v = rnd.uniform(0, 100)
        w.push(t, v)
        m = t - t % 60
        per_minute[m] = v
        now = max(now, t + rnd.choice((0.0, 10.0)))  # the clock never goes back
        cutoff = (now - now % 60) - span
        inside = sorted((k, x) for k, x in per_minute.items() if k >= cutoff)
        st = w.stats(now)
        assert st.max == max(x for _, x in inside)
        assert st.first == inside[0][1]
        assert st.full == (inside[0][0] <= cutoff + 120.0)
    assert len(w) <= span / 60 + 2


# ----------------------------------------------------------------------------- per block
BITS = 0x1701F303
BLOCKS_CSV = Path(__file__).resolve().parent / "data" / "blocks_937440_942199.csv"


def _hash(height: int) -> str:
    return f"{height:064x}"


def write_blocks(path: Path, arrivals: list[tuple[int, float]], *, backfill: bool = False) -> None:
    """Active blocks (height, first_seen) through the store's own write path; a live block's
    header time is a little before its arrival, a backfilled one's first_seen is its time."""
    store = Store.open(path)
    try:
        store.write_events(
            Block(
                height=h,
                hash=_hash(h),
                prev_hash=_hash(h - 1),
                time=int(seen) if backfill else int(seen) - 40,
                bits=BITS,
                source="test",
                received_at=seen,
                backfill=backfill,
            )
            for h, seen in arrivals
        )
    finally:
        store.close()


def chain_at(offsets: list[float], height0: int = 100) -> list[tuple[int, float]]:
    """Consecutive heights arriving at ``T0 + offset``."""
    return [(height0 + k, T0 + off) for k, off in enumerate(offsets)]


def replay(path: Path, rules: list[Rule], until: float) -> list:
    store = Store.open(path, readonly=True)
    try:
        now = until + 120  # the minute holding `until` is closed
        return backtest(store, rules, since_s=now - T0, now=now)
    finally:
        store.close()


def brief(events: list) -> list[tuple[str, float, bool]]:
    return [(str(e.state), round(e.at - T0, 6), e.reminder) for e in events]


A = 607.25  # a block arriving between minute samples
GAP_CASES = [
    # (id, rule, arrival offsets, expected (state, offset, reminder))
    (
        "fires-at-first_seen+5400-resolves-at-next-block",
        {"above": 5400.0},
        [7.25, A, A + 7200, A + 7800],
        [("firing", A + 5400, False), ("resolved", A + 7200, False)],
    ),
    ("gap-of-exactly-5400-never-exceeds-it", {"above": 5400.0}, [0.0, 5400.0, 6000.0], []),
    (
        "reminders-on-the-second",
        {"above": 5400.0, "repeat_s": 1800},
        [7.25, A, A + 9500],
        [
            ("firing", A + 5400, False),
            ("firing", A + 7200, True),
            ("firing", A + 9000, True),
            ("resolved", A + 9500, False),
        ],
    ),
    ("hold-not-reached-before-the-block", {"above": 5400.0, "for_s": 600}, [A, A + 5990], []),
    (
        "hold-reached-exactly",
        {"above": 5400.0, "for_s": 600},
        [A, A + 6100],
        [("firing", A + 6000, False), ("resolved", A + 6100, False)],
    ),
    (
        "keep-firing-after-the-block",
        {"above": 5400.0, "keep_firing_for_s": 300},
        [A, A + 6000, A + 9000],
        [("firing", A + 5400, False), ("resolved", A + 6300, False)],
    ),
    (
        "hysteresis-on-the-rising-age",
        {"below": 60.0, "clear": 120.0},
        [A, A + 100, A + 600],
        # age 0 at each arrival fires; only back at or above 120 s (not 60) it resolves
        [
            ("firing", A, False),
            ("resolved", A + 220, False),
            ("firing", A + 600, False),
            ("resolved", A + 720, False),
        ],
    ),
]


@pytest.mark.parametrize(
    ("kw", "offsets", "want"), [c[1:] for c in GAP_CASES], ids=[c[0] for c in GAP_CASES]
)
def test_tip_age_rules_change_state_at_the_exact_instant(
    tmp_path: Path, kw: dict, offsets: list[float], want: list
) -> None:
    db = tmp_path / "hw.db"
    write_blocks(db, chain_at(offsets))
    # Minute samples of tip_age_s as a collector stores them (each minute's last value):
    # present, but the replay reads the blocks, so they cannot shift the instants.
    write_samples(db, {"tip_age_s": minutes([0.0] * int(offsets[-1] // 60 + 1))})
    r = rule(name="block-gap", metric="tip_age_s", **kw)
    events = replay(db, [r], until=T0 + offsets[-1] + 600)
    assert brief(events) == want
    for e in events:
        if e.state is S.FIRING and not e.reminder and "above" in kw:
            assert e.value == kw["above"] + kw.get("for_s", 0.0)  # the age at that instant


def test_block_driven_rules_move_at_the_block_between_minute_samples(tmp_path: Path) -> None:
    db = tmp_path / "hw.db"
    write_blocks(db, chain_at([0.0, 90.5, 165.25, 800.0]))  # heights 100..103
    # Samples every minute for 20 min, tip_height as the collector labels it (minute 60's
    # sample already holds 101, the minute's last value): the block's instant must win.
    write_samples(
        db,
        {
            "tip_height": minutes([100.0] + [101.0] + [102.0] * 11 + [103.0] * 7),
            "hashprice": minutes([45.0] + [38.0] * 19),
        },
    )
    # Orphaned blocks are not history: a higher block seen at 45 s, orphaned since.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO blocks (hash, height, prev_hash, time, first_seen, bits, work, orphaned)"
            " VALUES (?, 104, ?, ?, ?, ?, ?, 1)",
            ("ff" * 32, _hash(103), T0 + 5, T0 + 45.0, BITS, "00" * 32),
        )
    conn.close()
    rules = [
        rule(name="height", metric="tip_height", above=100.0),
        rule(name="fresh", metric="tip_age_s", below=30.0),
        rule(name="header", metric="tip_time", above=T0 + 700.0),
        # Not block-driven: pending from minute 60, its 90 s hold comes due at 150; the
        # block at 165.25 is a step inside the sampled minute 120, so it fires there rather
        # than at minute 180.
        rule(name="floor", metric="hashprice", below=40.0, for_s=90),
    ]
    events = replay(db, rules, until=T0 + 19 * 60)
    got = [(e.rule, str(e.state), round(e.at - T0, 6), e.value) for e in events]
    assert got == [
        ("fresh", "firing", 0.0, 0.0),
        ("fresh", "resolved", 30.0, 30.0),
        ("fresh", "firing", 90.5, 0.0),
        ("height", "firing", 90.5, 101.0),
        ("fresh", "resolved", 120.5, 30.0),
        ("floor", "firing", 165.25, 38.0),
        ("fresh", "firing", 165.25, 0.0),
        ("fresh", "resolved", 195.25, 30.0),
        ("fresh", "firing", 800.0, 0.0),
        ("header", "firing", 800.0, float(T0 + 760)),
        ("fresh", "resolved", 830.0, 30.0),
    ]


def _csv_tips() -> list[tuple[int, int]]:
    """(header time, height) each time the tip moved up, straight from the CSV."""
    with BLOCKS_CSV.open(newline="") as f:
        rows = sorted((int(r["time"]), int(r["height"])) for r in csv.DictReader(f))
    tips, top = [], -1
    for t, h in rows:
        if h > top:
            tips.append((t, h))
            top = h
    return tips


def test_blocks_only_database_from_import_still_backtests(tmp_path: Path) -> None:
    """`hashwatch import blocks` fills blocks and nothing else: tip rules still replay
    (first_seen is the header time), from real mainnet headers."""
    db = tmp_path / "hw.db"
    store = Store.open(db)
    try:
        import_blocks_csv(store, BLOCKS_CSV)
    finally:
        store.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM metric_samples").fetchone() == (0,)
    tips = _csv_tips()
    hour = rule(name="hour", metric="tip_age_s", above=3600.0)
    height = rule(name="height", metric="tip_height", above=940_000.0)
    store = Store.open(db, readonly=True)
    try:
        first, last = tips[0][0], tips[-1][0]
        now = last + 600  # shortly after the last block: its age stays under the hour
        events = backtest(store, [hour, height], since_s=now - first + 60, now=now)
    finally:
        store.close()
    # Independently: each inter-tip gap over an hour fires 3600 s after its start and
    # resolves when the next tip arrives; header times are not monotonic, so the tip is
    # the highest block seen so far.
    want = []
    for (t, _), (t2, _) in itertools.pairwise(tips):
        if t2 - t > 3600:
            want += [("hour", "firing", t + 3600.0), ("hour", "resolved", float(t2))]
    cross = next(t for t, h in tips if h > 940_000)
    want.append(("height", "firing", float(cross)))
    want.sort(key=lambda w: (w[2], w[0]))
    assert len(want) == 1 + 2 * 12  # the data's twelve hour-long gaps
    assert [(e.rule, str(e.state), e.at) for e in events] == want


def test_cli_backtests_an_imported_blocks_only_database(tmp_path: Path) -> None:
    db = tmp_path / "hw.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[rules]]\nname = "hour-gap"\nmetric = "tip_age_s"\nseverity = "warning"\nabove = 3600\n'
    )
    imp = run_cli(["import", "blocks", BLOCKS_CSV, "--config", cfg, "--db", db], tmp_path)
    assert imp.code == 0, imp.err
    r = run_cli(["rules", "backtest", "--since", "3650d", "--config", cfg, "--db", db], tmp_path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    # twelve gaps fire and resolve; the tip's age since the file's last block (2026-03-25)
    # has been over an hour ever since: it fires once more and is still firing.
    assert sum("FIRING" in line and "hour-gap" in line for line in lines) == 13
    assert sum("RESOLVED" in line and "hour-gap" in line for line in lines) == 12
    assert "2026-03-25 21:32 UTC  FIRING" in r.out  # 20:32:28 + 1 h
    assert "nothing was sent" in r.out


# ------------------------------------------------- equivalence with naive per-step replays
def naive_every_second(r: Rule, tips: list[tuple[float, int, int]], start: int, end: int) -> list:
    """The engine at every whole second with the tip as of that second. With whole-second
    arrivals, thresholds and durations, ``age + 0.5`` classifies like the age just past the
    second (what the event-driven replay reads at a crossing)."""
    state = RuleState()
    out = []
    k = -1
    for t in range(start, end):
        while k + 1 < len(tips) and tips[k + 1][0] <= t:
            k += 1
        if k < 0:
            continue
        seen, height, htime = tips[k]
        if r.metric == "tip_age_s":
            v, x = float(t - seen), t - seen + 0.5
        else:
            v = x = float(height if r.metric == "tip_height" else htime)
        res = evaluate(r, state, v, None, float(t), measure=x)
        state = res.state
        tr = res.transition
        if tr is not None:
            out.append((tr.at, str(tr.previous), str(tr.state), tr.reminder))
    return out


BLOCK_RULES = [
    {"metric": "tip_age_s", "above": 5400.0, "repeat_s": 1800, "keep_firing_for_s": 300},
    {"metric": "tip_age_s", "above": 3000.0, "clear": 1200.0, "for_s": 600},
    {"metric": "tip_age_s", "below": 120.0, "clear": 300.0, "for_s": 60, "repeat_s": 100},
    {"metric": "tip_age_s", "above": 4000.0, "below": 30.0, "for_s": 20},
    {"metric": "tip_height", "above": 110.0, "keep_firing_for_s": 500, "repeat_s": 900},
    {"metric": "tip_time", "below": T0 + 20_000.0, "for_s": 45},
]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kw", BLOCK_RULES, ids=[str(sorted(k.items())) for k in BLOCK_RULES])
def test_block_replay_equals_stepping_every_second(kw: dict, seed: int) -> None:
    rnd = random.Random(seed)
    start, end = T0, T0 + 40_000
    tips: list[tuple[float, int, int]] = [(float(T0 - 700), 100, T0 - 760)]  # held at start
    t, h = T0 - 700, 100
    while True:
        t += rnd.choice((1, 30, 200, 600, 600, 1500, 4000, 6000, 9000))
        h += 1
        if t >= end:
            break
        tips.append((float(t), h, t - rnd.randint(-300, 900)))  # header times wander
    r = rule(**kw)
    fast = [
        (e.at, str(e.previous), str(e.state), e.reminder)
        for e in backtest_block_rule(r, tips, start, end)
    ]
    assert fast == naive_every_second(r, tips, start, end)
    assert any(s == "firing" for _, _, s, _ in fast)


def naive_minutes_and_blocks(
    r: Rule, times: list[float], values: list[float], blocks: list[float]
) -> list:
    """Every minute sample and every block inside a sampled minute, the block seeing that
    minute's sample (and the window as of then)."""
    sampled = set(times)
    steps = sorted(
        {(t, 0) for t in times} | {(b, 1) for b in blocks if b - b % 60 in sampled and b > times[0]}
    )
    w = MetricWindow(r.window_s or 60.0)
    state = RuleState()
    out = []
    i = -1
    for t, is_block in steps:
        if not is_block:
            i += 1
            w.push(times[i], values[i])
        stats = w.stats(t) if r.needs_window else None
        res = evaluate(r, state, values[i], stats, t)
        state = res.state
        tr = res.transition
        if tr is not None:
            out.append((tr.at, str(tr.previous), str(tr.state), tr.reminder))
    return out


SAMPLE_RULES_ODD_TIMERS = [
    {"below": 40.0, "clear": 42.0, "for_s": 90, "keep_firing_for_s": 150, "repeat_s": 450},
    {"above": 45.0, "below": 35.0, "for_s": 45, "repeat_s": 200},
    {"drop_pct": 8.0, "window": 1800.0, "clear": 4.0, "repeat_s": 330, "for_s": 100},
    {"change_pct": -6.0, "window": 3600.0, "keep_firing_for_s": 610, "repeat_s": 270},
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "kw", SAMPLE_RULES_ODD_TIMERS, ids=[str(sorted(k)) for k in SAMPLE_RULES_ODD_TIMERS]
)
def test_sample_rules_with_block_steps_equal_stepping_every_step(kw: dict, seed: int) -> None:
    rnd = random.Random(seed)
    times, values = [], []
    t, v = float(T0), 40.0
    for _ in range(3000):
        t += 60 * (1 if rnd.random() > 0.02 else rnd.randint(2, 90))  # some gaps
        v = max(1.0, v + rnd.gauss(0, 0.8))
        times.append(t)
        values.append(round(v, 2))
    blocks, b = [], float(T0)
    while b < times[-1] + 60:
        b += round(rnd.expovariate(1 / 240.0), 2)
        blocks.append(b)
    r = rule(**kw)
    fast = [
        (e.at, str(e.previous), str(e.state), e.reminder)
        for e in backtest_rule(r, times, values, times[0], blocks=blocks)
    ]
    assert fast == naive_minutes_and_blocks(r, times, values, blocks)
    assert any(at % 60 for at, *_ in fast)  # some timer did come due at a block
