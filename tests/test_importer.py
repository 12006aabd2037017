"""feeds.importer: CSV import of blocks and prices, good and bad inputs, all or nothing."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from support_store import block, dump, h

from feeds.derive import block_work, difficulty_from_bits
from feeds.errors import ImportFileError
from feeds.importer import import_blocks_csv, import_prices_csv, parse_bits, parse_time
from feeds.store import Store

TESTS = Path(__file__).parent
REAL_BLOCKS = TESTS / "data" / "blocks_937440_942199.csv"
SHARED_BLOCKS = Path("/work/shared/data/blocks_937440_942199.csv")


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "hw.db")
    yield s
    s.close()


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def real_blocks_csv() -> Path:
    if not REAL_BLOCKS.exists():  # pragma: no cover - the file is committed
        REAL_BLOCKS.parent.mkdir(exist_ok=True)
        shutil.copyfile(SHARED_BLOCKS, REAL_BLOCKS)
    return REAL_BLOCKS


# ------------------------------------------------------------------------ real data


def test_import_the_real_blocks_file(store: Store) -> None:
    path = real_blocks_csv()
    with path.open() as f:
        rows = list(csv.DictReader(f))
    report = import_blocks_csv(store, path)
    assert (report.rows, report.written) == (4760, 4760)
    assert (report.first, report.last) == (937_440, 942_199)
    assert report.ignored_columns == ("time_utc", "difficulty", "retarget_period")
    assert "ignored columns: time_utc, difficulty, retarget_period" in str(report)
    assert "heights 937440..942199" in str(report)

    blocks = store.active_blocks()
    assert len(blocks) == 4760 and store.missing_heights(937_440, 942_199) == []
    for row, b in zip(rows, blocks, strict=True):
        assert b.height == int(row["height"]) and b.time == int(row["time"])
        assert b.bits == int(row["bits"], 16)
        # The stored difficulty agrees with the published one (float printing only).
        assert b.difficulty == pytest.approx(float(row["difficulty"]), rel=1e-15)
        assert b.received_at == b.time and b.backfill  # first_seen = header time
    by_height = {b.height: b for b in blocks}
    # block_hash is read as hash; other rows get the documented placeholder.
    assert by_height[939_455].hash == rows[939_455 - 937_440]["block_hash"]
    assert by_height[939_456].prev_hash == by_height[939_455].hash
    assert by_height[937_441].hash == "import:937441"
    works = store.block_work()
    assert sum(w for _, _, w in works) == sum(block_work(b.bits) for b in blocks)
    # The retargets take effect where the real chain says.
    assert by_height[939_455].bits != by_height[939_456].bits
    assert by_height[941_471].bits != by_height[941_472].bits

    # Importing the same file again changes nothing.
    snapshot = dump(store.path)
    again = import_blocks_csv(store, path)
    assert again.written == 0
    assert dump(store.path) == snapshot


def test_live_blocks_replace_imported_placeholders(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "height,time,bits\n100,1771527275,1701f303\n101,1771527875,1701f303\n"
        "102,1771528475,1701f303\n",
    )
    import_blocks_csv(store, path)
    store.write_events([block(101)])
    assert [b.hash for b in store.active_blocks()] == ["import:100", h("A101"), "import:102"]
    assert store.orphaned_hashes() == []
    # Importing again never displaces the real block.
    import_blocks_csv(store, path)
    assert store.active_blocks()[1].hash == h("A101")


# ------------------------------------------------------------------------ good inputs


@pytest.mark.parametrize("bits", ["1701f303", "0x1701f303", "0X1701F303", "386003715"])
def test_bits_forms(bits: str) -> None:
    assert parse_bits(bits) == 0x1701F303


def test_eight_digit_bits_are_hex_even_when_all_decimal_digits() -> None:
    assert parse_bits("17012345") == 0x17012345
    assert difficulty_from_bits(parse_bits("1d00ffff")) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "1771527275",
        "1771527275.0",
        "2026-02-19T18:54:35Z",
        "2026-02-19T18:54:35+00:00",
        "2026-02-19T19:54:35+01:00",
        "2026-02-19T18:54:35",  # naive: documented as UTC
        "2026-02-19 18:54:35",
    ],
)
def test_time_forms(text: str) -> None:
    assert parse_time(text) == 1_771_527_275


def test_optional_block_columns_and_iso_times(store: Store, tmp_path: Path) -> None:
    hash_ = "00" * 8 + "ab" * 24
    path = write(
        tmp_path,
        "Height, Time ,BITS,hash,fees_sats,reward_sats,tx_count,pool,comment\n"
        f"5,2026-02-19T18:54:35Z,0x1701f303,{hash_.upper()},1200,312501200,3000,Foundry,hi\n"
        "6,2026-02-19T19:04:35+00:00,386003715,,,,,,\n",
    )
    report = import_blocks_csv(store, path)
    assert report.ignored_columns == ("comment",)
    b5, b6 = store.active_blocks()
    assert (b5.hash, b5.fees_sats, b5.reward_sats, b5.tx_count, b5.pool) == (
        hash_,
        1200,
        312_501_200,
        3000,
        "Foundry",
    )
    assert b5.time == 1_771_527_275 and b6.time == 1_771_527_875
    assert (b6.hash, b6.prev_hash, b6.fees_sats, b6.pool) == ("import:6", hash_, None, None)


def test_prices_become_candles(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,price_usd,source,note\n"
        "2026-02-19T18:54:50Z,70010,,x\n"
        "2026-02-19T18:54:05Z,70000,,\n"  # out of order: still the minute's open
        "2026-02-19T18:54:30Z,70100.5,,\n"
        "1771527300,69900,,\n"
        "1771527301,69800,kraken,\n",
    )
    report = import_prices_csv(store, path)
    assert (report.rows, report.written, report.sources) == (5, 3, ("import", "kraken"))
    assert report.ignored_columns == ("note",)
    assert "as 3 1-minute candles" in str(report)
    c0, c1 = store.candles("import")
    assert (c0.minute, c0.open, c0.high, c0.low, c0.close, c0.n) == (
        1_771_527_240,
        70000,
        70100.5,
        70000,
        70010,
        3,
    )
    assert (c1.minute, c1.close, c1.n) == (1_771_527_300, 69900, 1)
    assert store.candles("kraken")[0].close == 69800
    snapshot = dump(store.path)
    import_prices_csv(store, path)
    assert dump(store.path) == snapshot  # importing twice changes nothing


# ------------------------------------------------------------------------ bad inputs


def test_missing_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"nope\.csv: no such file"):
        import_blocks_csv(store, tmp_path / "nope.csv")


def test_empty_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="is empty: expected a header row with height"):
        import_blocks_csv(store, write(tmp_path, "\n  \n"))


def test_header_only(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="has a header but no data rows"):
        import_prices_csv(store, write(tmp_path, "time,price_usd\n"))


def test_missing_required_column(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "height,time,difficulty\n1,1771527275,1.0\n")
    with pytest.raises(ImportFileError) as err:
        import_blocks_csv(store, path)
    assert "missing required column bits (header has: height, time, difficulty)" in str(err.value)
    with pytest.raises(ImportFileError, match="missing required columns time, price_usd"):
        import_prices_csv(store, write(tmp_path, "price\n1\n"))


def test_duplicate_column(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "height,time,bits,hash,block_hash\n")
    with pytest.raises(ImportFileError, match="column 'hash' appears twice"):
        import_blocks_csv(store, path)


def test_not_utf8(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("height,time,bits\n1,2,\xe9\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match="is not UTF-8 text"):
        import_blocks_csv(store, path)


def test_bad_block_rows_are_listed_by_line_and_nothing_is_written(
    store: Store, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "height,time,bits,hash,fees_sats\n"
        "100,1771527275,1701f303,,\n"  # line 2: good
        "101,1771527875000,1701f303,,\n"  # 3: milliseconds
        "102,yesterday,1701f303,,\n"  # 4: bad time
        "103,1771528475,1701f30,,\n"  # 5: 7 hex digits
        "104,1771529075,00000000,,\n"  # 6: zero target
        "-5,1771529675,1701f303,,\n"  # 7: negative height
        "100,1771530275,1701f303,,\n"  # 8: repeated height
        "106,1771530875,1701f303,xyz,\n"  # 9: bad hash
        "107,1771531475,1701f303,,lots\n"  # 10: bad fees
        "\n"
        "108,1771532075.5,1701f303,,\n",  # 12: fractional block time
    )
    with pytest.raises(ImportFileError) as err:
        import_blocks_csv(store, path)
    msg = str(err.value)
    assert "9 bad rows; no blocks were imported" in msg
    for expected in (
        "line 3: time '1771527875000' looks like milliseconds",
        "line 4: time 'yesterday' is neither epoch seconds nor ISO 8601",
        "line 5: bits '1701f30' is neither 8 hex digits",
        "line 6: bits '00000000' is not a valid compact target",
        "line 7: height '-5' is negative",
        "line 8: height 100 already given on line 2",
        "line 9: hash 'xyz' is not 64 hex digits",
        "line 10: fees_sats 'lots' is not a whole number",
        "line 12: block time '1771532075.5' is not a whole second",
    ):
        assert expected in msg
    assert "line 2:" not in msg
    assert store.is_empty()


def test_more_than_twenty_bad_rows_are_summarised(store: Store, tmp_path: Path) -> None:
    body = "".join(f"{n},1771527275,zz\n" for n in range(30))
    with pytest.raises(ImportFileError) as err:
        import_blocks_csv(store, write(tmp_path, "height,time,bits\n" + body))
    msg = str(err.value)
    assert "30 bad rows" in msg
    assert "line 21:" in msg and "line 22:" not in msg
    assert "... and 10 more" in msg


def test_bad_price_rows(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,price_usd,source\n"
        "1771527275,70000,\n"
        "1771527276,-1,\n"
        "1771527277,abc,\n"
        "1771527278,nan,\n"
        "1771527275,70001,import\n"
        "1771527275,70001,kraken\n",
    )
    with pytest.raises(ImportFileError) as err:
        import_prices_csv(store, path)
    msg = str(err.value)
    assert "4 bad rows; no prices were imported" in msg
    assert "line 3: price_usd '-1' must be a positive number" in msg
    assert "line 4: price_usd 'abc' is not a number" in msg
    assert "line 5: price_usd 'nan' must be a positive number" in msg
    assert "line 6: import time 1771527275 already given on line 2" in msg
    assert store.is_empty()
