"""Entry point: ``hashwatch``.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. Every subcommand
imports what it needs lazily, so ``--headless``, ``status`` and friends never import Textual
and the dashboard's first frame never waits for apprise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from feeds import __version__
from feeds.errors import HashwatchError, UsageError

log = logging.getLogger("hashwatch")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The same options work before and after the subcommand. On subparsers the default is
    # SUPPRESS so that an option given before the subcommand is not overwritten by None.
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="config file (default: $HASHWATCH_CONFIG, then the user config dir)",
    )
    parser.add_argument(
        "--db", metavar="PATH", default=default, help="database file (overrides [database] path)"
    )
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["debug", "info", "warning", "error"],
        help="log level",
    )
    parser.add_argument(
        "--log-file", metavar="PATH", default=default, help="also write logs to this file"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashwatch",
        description="Live watch post for Bitcoin mining economics (hashrate, difficulty, "
        "hashprice, production cost) with Slack and email alerts.",
    )
    p.add_argument("--version", action="version", version=f"hashwatch {__version__}")
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print every config value and where it came from, then exit",
    )
    _add_common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        _add_common(sp, top=False)
        return sp

    run = add("run", "open the dashboard (or run the collector with --headless)")
    run.add_argument(
        "--headless",
        action="store_true",
        help="run feeds, store and alerts without the UI until SIGINT/SIGTERM",
    )
    run.add_argument(
        "--attach",
        action="store_true",
        help="open a read-only dashboard on a running collector's database",
    )

    demo = add("demo", "replay real history from local servers (no internet needed)")
    demo.add_argument(
        "--speed",
        type=float,
        default=600.0,
        help="replay speed multiplier (600 = a block per second on average)",
    )
    demo.add_argument("--headless", action="store_true", help="no UI")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many wall-clock seconds",
    )

    status = add("status", "print every metric, the tip, feed status and active alerts")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    cc = add("check-config", "validate a config file and print a short summary")
    cc.add_argument("path", nargs="?", default=None, help="config file (wins over --config)")

    imp = add("import", "import history from CSV files")
    imp.add_argument("what", choices=["blocks", "prices"])
    imp.add_argument("file", help="CSV file with a header row")

    al = add("alerts", "list active and recent alerts")
    al.add_argument("--json", action="store_true")

    si = add("silence", "silence a rule's notifications for a while")
    si.add_argument("rule")
    si.add_argument("--for", dest="duration", required=True, help="e.g. 1h, 4h, 24h")
    un = add("unsilence", "lift a silence")
    un.add_argument("rule")

    ta = add("test-alert", "send a test message to every notify target (or one)")
    ta.add_argument("--target", default=None, help="target name or 1-based position")

    rules = add("rules", "rule tools")
    rsub = rules.add_subparsers(dest="rules_command", metavar="RULES_COMMAND", required=True)
    bt = rsub.add_parser("backtest", help="replay stored history through the rules")
    _add_common(bt, top=False)
    bt.add_argument("--since", default="90d", help="how far back (default 90d)")
    return p


def _setup_logging(args: argparse.Namespace) -> None:
    from feeds.logsetup import configure_logging

    configure_logging(level=(args.log_level or "info"), log_file=args.log_file)


def _handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    from tui import commands

    return {
        "run": commands.cmd_run,
        "demo": commands.cmd_demo,
        "status": commands.cmd_status,
        "check-config": commands.cmd_check_config,
        "import": commands.cmd_import,
        "alerts": commands.cmd_alerts,
        "silence": commands.cmd_silence,
        "unsilence": commands.cmd_unsilence,
        "test-alert": commands.cmd_test_alert,
        "rules": commands.cmd_rules,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "run"
        args.headless = False
        args.attach = False
    try:
        _setup_logging(args)
        if args.show_config:
            from tui import commands

            return commands.cmd_show_config(args)
        return _handlers()[args.command](args)
    except HashwatchError as exc:
        print(f"hashwatch: {exc.title}: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except BaseExceptionGroup as group:
        # A task group (the collector) wraps a clean error, e.g. the database is not SQLite,
        # in a group: report it like any other, not as a traceback.
        leaf = _first_hashwatch_error(group)
        if leaf is None:
            raise
        print(f"hashwatch: {leaf.title}: {leaf}", file=sys.stderr)  # noqa: T201
        return leaf.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


def _first_hashwatch_error(group: BaseExceptionGroup[Any]) -> HashwatchError | None:
    for exc in group.exceptions:
        if isinstance(exc, HashwatchError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_hashwatch_error(exc)
            if found is not None:
                return found
    return None


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


def require_path(value: str | None, what: str) -> Path:
    if not value:
        raise UsageError(f"{what} is required")
    return Path(value)
