"""Shared helpers for the alert engine/service/backtest tests."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from alerts.rules import Rule, compile_rule


@dataclass(frozen=True)
class _Spec:
    """Stand-in with RuleConfig's field names (used when alerts.settings lacks a field)."""

    name: str = "r"
    metric: str = "hashprice"
    severity: str = "warning"
    message: str | None = None
    above: float | None = None
    below: float | None = None
    drop_pct: float | None = None
    change_pct: float | None = None
    window: float | None = None
    clear: float | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    repeat_s: float = 0.0
    send_resolved: bool = True


#: test keyword -> RuleConfig field name
_RENAME = {"for_s": "for_", "keep_firing_for_s": "keep_firing_for", "repeat_s": "repeat"}


def spec(**kw: Any) -> Any:
    """A real ``alerts.settings.RuleConfig`` (durations in seconds); a stand-in without it."""
    try:
        from alerts.settings import RuleConfig
    except ImportError:
        return _Spec(**kw)
    args = {_RENAME.get(k, k): v for k, v in kw.items()}
    if args.get("message") is None:
        args["message"] = ""
    if not args.get("repeat"):
        args["repeat"] = None
    args.setdefault("name", "r")
    args.setdefault("metric", "hashprice")
    names = {f.name for f in fields(RuleConfig)}
    unknown = set(args) - names
    assert not unknown, f"RuleConfig lacks {unknown}"
    return RuleConfig(**args)


def rule(**kw: Any) -> Rule:
    return compile_rule(spec(**kw))
