"""Snapshot tests of the main screen (pytest-textual-snapshot) with a frozen clock and fixed
data. Regenerate after an intended visual change with:
    .venv/bin/python -m pytest tests/test_tui_snapshots.py --snapshot-update
and look at the SVGs in tests/__snapshots__/test_tui_snapshots/ before committing them."""

from __future__ import annotations

import pytest
from fake_runtime import NOW, FakeRuntime, make_history_db, script, settle

from tui.app import make_app


@pytest.fixture
def app(tmp_path, monkeypatch):
    # Textual turns NO_COLOR into a monochrome filter: keep the baseline independent of the
    # environment the tests run in.
    monkeypatch.delenv("NO_COLOR", raising=False)
    runtime = FakeRuntime(script(), db_path=make_history_db(tmp_path / "h.db"), demo=True)
    return make_app(None, runtime, clock=lambda: NOW)


async def _settled(pilot) -> None:
    await settle(pilot.app, pilot)


def test_main_screen_80x24(app, snap_compare):
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settled)


def test_main_screen_160x48(app, snap_compare):
    assert snap_compare(app, terminal_size=(160, 48), run_before=_settled)


def test_help_screen_80x24(app, snap_compare):
    async def open_help(pilot) -> None:
        await _settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_help)
