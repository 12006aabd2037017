"""Subcommand handlers for ``hashwatch``. Each returns an exit code.

Imports are local to each handler: ``status`` must not pay for Textual, ``run --headless``
must never import it, and the dashboard must draw its first frame before apprise loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from feeds.errors import ConfigError, UsageError

log = logging.getLogger("hashwatch")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _load(args: argparse.Namespace, path: str | None = None) -> Any:
    from tui.config import load_config

    config = load_config(path or args.config, db_override=args.db)
    return config


def _warn_permissions(config: Any) -> None:
    from tui.config import config_permission_warning

    source = getattr(config, "source_path", None)
    if source:
        warning = config_permission_warning(Path(source))
        if warning:
            log.warning("%s", warning)


# ------------------------------------------------------------------------- config
def cmd_show_config(args: argparse.Namespace) -> int:
    from tui.config import show_config

    _out(show_config(_load(args)))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from alerts.settings import redact_url

    config = _load(args, args.path)
    source = getattr(config, "source_path", None) or "(built-in defaults)"
    feeds_on = [
        name
        for name in ("mempool", "coinbase", "kraken", "bitstamp")
        if getattr(config.feeds, name).enabled
    ]
    _out(f"config ok: {source}")
    _out(f"  database: {config.database.path}")
    _out(f"  feeds enabled: {', '.join(feeds_on) or 'none'}")
    fleet = config.economics.fleet
    _out(
        f"  fleet: {fleet.efficiency_j_per_th:g} J/TH at ${fleet.power_usd_per_kwh:g}/kWh, "
        f"pool fee {fleet.pool_fee_pct:g}%, uptime {fleet.uptime_pct:g}%"
    )
    _out(f"  rules: {len(config.rules)}")
    for i, target in enumerate(config.notify.targets, 1):
        label = target.name or str(i)
        _out(f"  target {label}: {redact_url(target.url)} ({', '.join(target.severities)})")
    _warn_permissions(config)
    return 0


# ------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    from alerts.status import build_status, render_status

    config = _load(args)
    db_path = Path(config.database.path)
    status = build_status(config, db_path, now=time.time())
    if args.json:
        _out(json.dumps(status, indent=2, sort_keys=False, allow_nan=False))
    else:
        _out(render_status(status))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from alerts.status import alerts_report, render_alerts

    config = _load(args)
    report = alerts_report(Path(config.database.path), now=time.time())
    if args.json:
        _out(json.dumps(report, indent=2))
    else:
        _out(render_alerts(report))
    return 0


# ------------------------------------------------------------------------- import
def cmd_import(args: argparse.Namespace) -> int:
    from feeds.importer import import_blocks_csv, import_prices_csv
    from feeds.store import Store

    config = _load(args)
    path = Path(args.file)
    store = Store.open(Path(config.database.path))
    try:
        if args.what == "blocks":
            report = import_blocks_csv(store, path)
        else:
            report = import_prices_csv(store, path)
    finally:
        store.close()
    _out(str(report))
    return 0


# ------------------------------------------------------------------ operator actions
def _submit_action(args: argparse.Namespace, action: str, **fields: Any) -> None:
    from alerts.actions import submit_action

    config = _load(args)
    submit_action(Path(config.database.path), action, fields, now=time.time())


def cmd_silence(args: argparse.Namespace) -> int:
    from feeds.settings import parse_duration

    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    _submit_action(args, "silence", rule=args.rule, seconds=seconds)
    _out(
        f"silenced {args.rule} for {args.duration} (a running collector applies it within seconds)"
    )
    return 0


def cmd_unsilence(args: argparse.Namespace) -> int:
    _submit_action(args, "unsilence", rule=args.rule)
    _out(f"unsilenced {args.rule}")
    return 0


def cmd_test_alert(args: argparse.Namespace) -> int:
    from alerts.outbox import send_test

    config = _load(args)
    if not config.notify.targets:
        _out("no [[notify.targets]] configured: nothing to test")
        return 1
    results = asyncio.run(send_test(config.notify.targets, args.target))
    failed = 0
    for label, ok, error in results:
        _out(f"target {label}: {'ok' if ok else 'FAILED: ' + str(error)}")
        failed += not ok
    return 1 if failed else 0


def cmd_rules(args: argparse.Namespace) -> int:
    from alerts.backtest import backtest, render_backtest
    from alerts.rules import compile_rules
    from feeds.settings import parse_duration
    from feeds.store import Store

    config = _load(args)
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    db_path = Path(config.database.path)
    if not db_path.exists():
        _out(f"no database at {db_path} yet: nothing to backtest")
        return 0
    store = Store.open(db_path, readonly=True)
    try:
        started = time.monotonic()
        events = backtest(store, compile_rules(config.rules), since, now=time.time())
        elapsed = time.monotonic() - started
    finally:
        store.close()
    _out(render_backtest(events))
    _out(f"({len(events)} transitions, {elapsed:.2f} s; nothing was sent)")
    return 0


# ------------------------------------------------------------------------- running
def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], on_hup: Any
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    loop.add_signal_handler(signal.SIGHUP, on_hup)


def _run_headless(collector: Any, reload: Any, duration: float | None = None) -> int:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        _install_signal_handlers(loop, task, reload)
        if duration is not None:
            loop.call_later(duration, task.cancel)
        await collector.run()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    log.info("hashwatch: stopped")
    return 0


def _log_to_file_only(args: argparse.Namespace) -> None:
    """The dashboard owns the terminal: logs go to --log-file (or the default state file)."""
    from feeds.logsetup import configure_logging, default_log_file

    path = args.log_file or str(default_log_file())
    configure_logging(level=(args.log_level or "info"), log_file=path, stderr=False)


def _reloader(args: argparse.Namespace, collector: Any) -> Any:
    def reload() -> None:
        try:
            new = _load(args)
        except ConfigError as exc:
            log.error("reload: new config is invalid, keeping the old rules: %s", exc)
            return
        collector.reload(new)

    return reload


def cmd_run(args: argparse.Namespace) -> int:
    from alerts.collector import Collector

    config = _load(args)
    _warn_permissions(config)
    if getattr(args, "attach", False):
        from alerts.collector import AttachedCollector

        collector: Any = AttachedCollector(config)
    else:
        collector = Collector(config, config_loader=lambda: _load(args))
    if getattr(args, "headless", False):
        if getattr(args, "attach", False):
            raise UsageError("--attach opens a dashboard; it cannot be combined with --headless")
        return _run_headless(collector, _reloader(args, collector))
    from tui.app import make_app

    _log_to_file_only(args)
    app = make_app(config, collector)
    app.run()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from alerts.collector import Collector
    from feeds.demo.replay import DemoReplay

    config = _load(args)
    demo = DemoReplay(speed=args.speed, db_path=Path(args.db) if args.db else None)
    config = demo.configure(config)
    collector = Collector(config, demo=demo, config_loader=lambda: demo.configure(_load(args)))
    log.warning(
        "demo: REPLAY of recorded history at %gx speed; database %s",
        args.speed,
        config.database.path,
    )
    try:
        if args.headless:
            return _run_headless(collector, _reloader(args, collector), args.duration)
        from tui.app import make_app

        _log_to_file_only(args)
        app = make_app(config, collector)
        app.run()
        return 0
    finally:
        demo.cleanup()
