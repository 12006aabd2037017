"""Alert config sections: [alerts], [notify], [[notify.targets]] and [[rules]].

Built on the strict machinery of :mod:`feeds.settings`. This module adds what only the alerts
layer knows: rule conditions and their cross-field checks, metric names a rule may watch,
message template placeholders, and :func:`redact_url`, which everything that could show a
notification URL (errors, logs, database rows, CLI output) must use.
"""

from __future__ import annotations

import difflib
import re
import string
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feeds.metrics import METRIC_NAMES
from feeds.settings import (
    SOURCE_NAMES,
    LoadContext,
    build_section,
    format_duration,
    setting,
    toml_type,
)

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")

#: DOMAIN.md's metric table: the metrics engine's own list is the one authority.
DOMAIN_METRIC_NAMES: tuple[str, ...] = METRIC_NAMES

#: Feed-health metrics a rule may watch besides DOMAIN.md's table (computed by the alerts
#: service from FeedStatus events): seconds since a source's last message, and the number of
#: price sources that are live and fresh.
FEED_METRIC_NAMES: tuple[str, ...] = (
    *(f"feed_age_s.{name}" for name in SOURCE_NAMES),
    "price_feeds_live",
)

#: Placeholders a rule message may use besides every metric name. For above/below rules
#: ``value`` is the metric's value; for drop_pct and change_pct rules it is the percent
#: drop/change over the window (the metric itself is under its own name).
TEMPLATE_FIELDS: tuple[str, ...] = (
    "value",
    "threshold",
    "clear",
    "name",
    "rule",
    "metric",
    "severity",
    "window",
)


def domain_metric_names() -> tuple[str, ...]:
    """The names of DOMAIN.md's metric table (the engine's ``METRIC_NAMES``)."""
    return METRIC_NAMES


def rule_metric_names() -> tuple[str, ...]:
    """Every value a rule's ``metric`` may take."""
    return (*domain_metric_names(), *FEED_METRIC_NAMES)


# --------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """[alerts]: the rules engine."""

    default_rules: bool = setting(
        True,
        doc="Run the built-in rule set when the config file defines no [[rules]]. A file "
        "with any [[rules]] replaces the built-in set; false with no [[rules]] runs no rules.",
    )
    eval_interval: float = setting(
        30.0,
        duration=True,
        gt=0,
        le=30,
        doc="Rules are evaluated on every update of their metric and at least this often "
        "(for time-based rules such as 'no block for 90 minutes'). At most 30s.",
    )


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """[[notify.targets]]: one delivery channel (an apprise URL)."""

    name: str = setting(
        "",
        doc="Optional name for `hashwatch test-alert --target NAME` (otherwise the target's "
        "1-based position).",
    )
    url: str = setting(
        "",
        required=True,
        secret=True,
        nonempty=True,
        doc="apprise URL, e.g. slack://T…/B…/… or mailtos://user:pass@host?to=ops@example.com. "
        "Use ${ENV_VAR} for secrets; URLs are redacted wherever hashwatch shows them.",
    )
    severities: tuple[str, ...] = setting(
        SEVERITIES,
        choices=SEVERITIES,
        nonempty=True,
        doc="Which severities this target receives (info, warning, critical).",
    )


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """[notify]: delivery of alert messages."""

    heartbeat: float | None = setting(
        None,
        optional_duration=True,
        gt=0,
        doc='A "still watching" message with a one-screen summary this often, e.g. "24h"; '
        '"" turns it off.',
    )
    max_per_target_per_10m: int = setting(
        20,
        ge=1,
        doc="Storm control: at most this many messages per target per 10 minutes; the excess "
        "is folded into one digest.",
    )
    send_timeout: float = setting(
        20.0,
        duration=True,
        gt=0,
        doc="Give up one delivery attempt after this long (it is retried with backoff).",
    )
    targets: tuple[NotifyTarget, ...] = setting(
        (), doc="Delivery channels, each a [[notify.targets]] table."
    )


_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """[[rules]]: one alert rule. Exactly one condition: above and/or below, drop_pct or
    change_pct (the last two with a window)."""

    name: str = setting(
        "",
        required=True,
        nonempty=True,
        doc="Unique name (letters, digits, '-', '_', '.'), used in messages and "
        "`hashwatch silence NAME`.",
    )
    metric: str = setting(
        "",
        required=True,
        doc="A metric name of `hashwatch status --json` (DOMAIN.md's table), or "
        "feed_age_s.<source> (seconds since a feed's last message), or price_feeds_live "
        "(number of live, fresh price feeds).",
    )
    severity: str = setting(
        "warning", choices=SEVERITIES, doc="info, warning or critical (routes to targets)."
    )
    message: str = setting(
        "",
        expand_env=False,
        doc="Optional template (not ${ENV}-expanded: ${value} is a dollar sign and a value). "
        "Placeholders: {value} (the metric's value; for drop_pct and "
        "change_pct the percent drop/change over the window), {threshold}, {clear}, {name}, "
        "{metric}, {severity}, {window} and any metric name, e.g. {hashprice:.1f}.",
    )
    above: float | None = setting(
        None, doc="Fire when the value is above this. With `below` too: outside the band."
    )
    below: float | None = setting(
        None, doc="Fire when the value is below this. With `above` too: outside the band."
    )
    drop_pct: float | None = setting(
        None,
        gt=0,
        le=100,
        doc="Fire when the value is at least this percent below its maximum over `window`.",
    )
    change_pct: float | None = setting(
        None,
        gt=-100,
        doc="Fire on a change over `window` of at least this percent: -10 fires on a fall of "
        "10% or more, 10 on a rise of 10% or more.",
    )
    window: float | None = setting(
        None,
        optional_duration=True,
        gt=0,
        doc='Look-back for drop_pct and change_pct, e.g. "24h", "30d". A window that is not '
        "yet full is 'no data'.",
    )
    clear: float | None = setting(
        None,
        doc="Hysteresis: a below rule resolves only at or above `clear`, an above rule only at "
        "or below it; for drop_pct and change_pct it is in percent too.",
    )
    for_: float = setting(
        0.0,
        key="for",
        duration=True,
        ge=0,
        doc="The condition must hold this long before the rule fires (pending until then).",
    )
    keep_firing_for: float = setting(
        0.0,
        duration=True,
        ge=0,
        doc="Keep firing this long after the condition stops holding (avoids flapping).",
    )
    repeat: float | None = setting(
        None,
        optional_duration=True,
        gt=0,
        doc='Send a reminder this often while firing; "" or absent: no reminders.',
    )
    send_resolved: bool = setting(True, doc="Send a RESOLVED message when the incident ends.")

    @property
    def condition(self) -> str:
        """``band``, ``above``, ``below``, ``drop_pct`` or ``change_pct``."""
        if self.above is not None and self.below is not None:
            return "band"
        if self.above is not None:
            return "above"
        if self.below is not None:
            return "below"
        if self.drop_pct is not None:
            return "drop_pct"
        return "change_pct"

    @property
    def threshold(self) -> float | None:
        """The configured threshold of the condition (for a band, the bound nearer zero is
        not meaningful: the engine reports the bound that was crossed)."""
        for value in (self.above, self.below, self.drop_pct, self.change_pct):
            if value is not None:
                return value
        return None


# --------------------------------------------------------------------------------------------
# Validation


def _rule_problem(rule: RuleConfig, known: tuple[str, ...]) -> tuple[str, str] | None:
    """(key, problem) for the first cross-field problem of a rule, or None ("" = the rule)."""
    if not _RULE_NAME_RE.match(rule.name):
        return "name", f"{rule.name!r} must be letters, digits, '-', '_' or '.' (no spaces)"
    if rule.metric not in known:
        close = difflib.get_close_matches(rule.metric, known, n=1, cutoff=0.6)
        tail = f"did you mean '{close[0]}'?" if close else "see DOMAIN.md's metric table"
        return "metric", f"unknown metric {rule.metric!r}; {tail}"
    threshold = rule.above is not None or rule.below is not None
    conds = [
        name
        for name, present in (
            ("above/below", threshold),
            ("drop_pct", rule.drop_pct is not None),
            ("change_pct", rule.change_pct is not None),
        )
        if present
    ]
    if not conds:
        return "", (
            "rule has no condition: set one of above, below (both for a band), "
            "drop_pct or change_pct"
        )
    if len(conds) > 1:
        key = "drop_pct" if "drop_pct" in conds[1:] else "change_pct"
        return key, (
            f"conflicting conditions {' and '.join(conds)}: a rule has exactly one "
            "(above and below together make a band)"
        )
    cond = rule.condition
    if cond in ("drop_pct", "change_pct") and rule.window is None:
        return cond, f'{cond} needs a window, e.g. window = "24h"'
    if cond in ("band", "above", "below") and rule.window is not None:
        return "window", "window applies only to drop_pct and change_pct rules"
    if cond == "band" and rule.above is not None and rule.below is not None:
        if rule.below >= rule.above:
            return "below", (
                f"a band needs below < above (below = {rule.below:g}, above = {rule.above:g}); "
                "it fires outside [below, above]"
            )
        if rule.clear is not None:
            return "clear", "clear is not supported on a band rule (above and below together)"
    if cond == "change_pct" and rule.change_pct == 0:
        return "change_pct", "change_pct must not be 0: -10 fires on a fall, 10 on a rise"
    if rule.clear is not None:
        need = _clear_requirement(rule, cond, rule.clear)
        if need:
            return (
                "clear",
                f"clear = {rule.clear:g} would never resolve the rule: it must be {need}",
            )
    if rule.message:
        problem = template_problem(rule.message, known)
        if problem:
            return "message", problem
    return None


def _clear_requirement(rule: RuleConfig, cond: str, clear: float) -> str | None:
    """What ``clear`` must satisfy for the rule to be able to resolve, if it does not."""
    if cond == "below" and rule.below is not None and clear < rule.below:
        return f"at or above below = {rule.below:g}"
    if cond == "above" and rule.above is not None and clear > rule.above:
        return f"at or below above = {rule.above:g}"
    if cond == "drop_pct" and rule.drop_pct is not None and not 0 <= clear <= rule.drop_pct:
        return f"between 0 and drop_pct = {rule.drop_pct:g}"
    if cond == "change_pct" and rule.change_pct is not None:
        if rule.change_pct < 0 and clear < rule.change_pct:
            return f"at or above change_pct = {rule.change_pct:g}"
        if rule.change_pct > 0 and clear > rule.change_pct:
            return f"at or below change_pct = {rule.change_pct:g}"
    return None


def template_problem(template: str, known: tuple[str, ...]) -> str | None:
    """Why a message template is unusable (unknown placeholder, broken braces), or None."""
    allowed = (*TEMPLATE_FIELDS, *known)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"invalid message template ({exc}); write literal braces as {{{{ and }}}}"
    for _literal, field_name, _spec, _conv in parsed:
        if field_name is None:
            continue
        root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        # feed_age_s.<source> is one name with a dot: allow it whole.
        if field_name in allowed or root in allowed:
            continue
        close = difflib.get_close_matches(field_name, allowed, n=1, cutoff=0.6)
        tail = f"; did you mean '{{{close[0]}}}'?" if close else ""
        return f"unknown placeholder {{{field_name}}}{tail}"
    return None


def validate_rule(rule: RuleConfig, path: str, ctx: LoadContext) -> None:
    problem = _rule_problem(rule, rule_metric_names())
    if problem:
        key, text = problem
        raise ctx.error(f"{path}.{key}" if key else path, text)


def parse_rules(raw: Any, ctx: LoadContext) -> tuple[RuleConfig, ...]:
    """The file's [[rules]]: each built strictly, then checked across fields and for
    duplicate names."""
    if not isinstance(raw, list):
        raise ctx.error(
            "rules", f"must be an array of tables (write [[rules]]), not {toml_type(raw)}"
        )
    rules: list[RuleConfig] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw, start=1):
        path = f"rules[{i}]"
        rule = build_section(RuleConfig, table, path, ctx)
        validate_rule(rule, path, ctx)
        if rule.name in seen:
            raise ctx.error(
                f"{path}.name", f"duplicate rule name {rule.name!r} (also rules[{seen[rule.name]}])"
            )
        seen[rule.name] = i
        rules.append(rule)
    return tuple(rules)


def validate_notify(notify: NotifyConfig, ctx: LoadContext) -> None:
    names: dict[str, int] = {}
    for i, target in enumerate(notify.targets, start=1):
        path = f"notify.targets[{i}]"
        if "://" not in target.url:
            raise ctx.error(
                f"{path}.url",
                f"{redact_url(target.url)} is not an apprise URL (scheme://...), "
                "e.g. slack://T…/B…/… or mailtos://user:pass@host",
            )
        if target.name:
            if target.name in names:
                raise ctx.error(
                    f"{path}.name",
                    f"duplicate target name {target.name!r} "
                    f"(also notify.targets[{names[target.name]}])",
                )
            names[target.name] = i


def select_rules(
    alerts: AlertsConfig, file_rules: tuple[RuleConfig, ...] | None
) -> tuple[tuple[RuleConfig, ...], str]:
    """The rules that run, and why: a file's [[rules]] replace the built-in set; a file with
    none keeps it, unless ``[alerts] default_rules = false``."""
    if file_rules:
        return file_rules, "file"
    if not alerts.default_rules:
        return (), "none ([alerts] default_rules = false)"
    from alerts.default_rules import DEFAULT_RULES  # here: default_rules imports this module

    return DEFAULT_RULES, "default"


ALERTS_SECTIONS: dict[str, type] = {"alerts": AlertsConfig, "notify": NotifyConfig}


def rule_to_toml(rule: RuleConfig) -> dict[str, Any]:
    """The keys of a rule that differ from the defaults, as they would be written in TOML."""
    out: dict[str, Any] = {"name": rule.name, "metric": rule.metric, "severity": rule.severity}
    if rule.message:
        out["message"] = rule.message
    for key in ("above", "below", "drop_pct", "change_pct"):
        if getattr(rule, key) is not None:
            out[key] = getattr(rule, key)
    if rule.window is not None:
        out["window"] = format_duration(rule.window)
    if rule.clear is not None:
        out["clear"] = rule.clear
    if rule.for_:
        out["for"] = format_duration(rule.for_)
    if rule.keep_firing_for:
        out["keep_firing_for"] = format_duration(rule.keep_firing_for)
    if rule.repeat is not None:
        out["repeat"] = format_duration(rule.repeat)
    if not rule.send_resolved:
        out["send_resolved"] = False
    return out


# --------------------------------------------------------------------------------------------
# Redaction

_SECRET_QUERY_KEYS = re.compile(r"pass|pwd|token|secret|key|auth|webhook|sig", re.IGNORECASE)


def _tokenish(segment: str) -> bool:
    """Does a URL segment look like a credential rather than a word or a host name?"""
    if not segment or "." in segment or segment.startswith("#"):
        return False
    if len(segment) >= 16:
        return True
    return len(segment) >= 6 and any(c.isdigit() or c.isupper() for c in segment)


def redact_url(url: str) -> str:
    """A notification URL with its secrets masked, safe for logs, the database and the CLI.

    ``slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops`` -> ``slack://T…/A…/****/#ops``;
    ``mailto://user:pass@host`` -> ``mailto://user:****@host``; credential-looking query
    values (``?token=…``) become ``****``. Host names with a dot, ports and plain words stay
    readable so the operator can tell targets apart.
    """
    if "://" not in url:
        return "****" if url else url
    scheme, rest = url.split("://", 1)
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")

    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:****" if colon else user
        if not colon and _tokenish(user):
            userinfo = "****"
    # A colon in a non-numeric "port" is a token (tgram://123456789:ABCdef/...).
    hostname, colon, port = host.partition(":")
    if colon and not port.isdigit():
        host = f"{hostname[:1]}…:****" if hostname else "****"
    elif _tokenish(hostname):
        host = f"{hostname[:1]}…" + (f":{port}" if colon else "")

    segments = path.split("/") if slash else []
    last = max((i for i, s in enumerate(segments) if s), default=-1)
    for i, seg in enumerate(segments):
        if _tokenish(seg):
            segments[i] = "****" if i == last else f"{seg[:1]}…"

    out = f"{scheme}://{userinfo}{'@' if at else ''}{host}"
    if slash:
        out += "/" + "/".join(segments)
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        masked = [(k, "****" if _SECRET_QUERY_KEYS.search(k) and v else v) for k, v in pairs]
        out += "?" + urllib.parse.urlencode(masked, safe="*@,:/")
    if fragment:
        out += "#" + fragment
    return out


def redact_text(text: str, urls: Mapping[str, str] | tuple[str, ...] | list[str]) -> str:
    """Replace every occurrence of the given secret URLs in ``text`` by their redaction
    (for messages from libraries that echo the URL, e.g. apprise errors)."""
    for url in sorted(urls, key=len, reverse=True):
        if url:
            text = text.replace(url, redact_url(url))
    return text
