"""What the dashboard needs from a runtime: the protocol ``make_app`` codes against.

The real runtime lives in ``feeds/runtime.py`` (with ``alerts/service.py`` on top); tests use
``tests/fake_runtime.py``. The UI only reads the bus, reads history from SQLite in thread
workers, and hands operator commands back through ``submit_action``.
"""

from __future__ import annotations

import pathlib
from typing import Any, Protocol, runtime_checkable

import feeds.bus

#: Operator actions the UI may submit (the same names the CLI writes to ``operator_actions``).
ACTIONS = ("silence", "unsilence", "reload", "test_alert")


@runtime_checkable
class RuntimeLike(Protocol):
    #: publishes Block, PriceTick, FeedStatus, MetricsSnapshot, AlertTransition,
    #: BackfillProgress, DailyPoint
    bus: feeds.bus.Bus
    #: for history reads in thread workers (read-only connection); tables per docs/DESIGN.md
    db_path: pathlib.Path | None
    #: True when replaying recorded/demo data: the header says "REPLAY"
    demo: bool
    #: True in ``--attach`` mode: a read-only viewer of another collector's database
    attach: bool
    # Optional, not part of the protocol check: ``clock: Callable[[], float]``. When present,
    # make_app measures ages on it (the demo's replay clock), else on time.time.

    async def run(self) -> None:
        """Run feeds and alerts until cancelled (the App starts it as a worker on mount)."""
        ...

    def submit_action(self, action: str, **args: Any) -> None:
        """'silence' (rule, seconds), 'unsilence' (rule), 'reload', 'test_alert'."""
        ...
