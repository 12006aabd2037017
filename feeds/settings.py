"""Config machinery (strict, typed, documented) and the feeds-layer sections.

Every section is a frozen dataclass owned by the package that uses it; every field carries its
documentation in ``field(metadata={"doc": ...})`` (read it with :func:`field_doc`), so the
sample ``config.toml``, the README and ``--show-config`` can be checked against the code.

The generic loader (:func:`build_section`) is strict: unknown keys are errors with a
"did you mean" suggestion, types are checked (an int is accepted where a float is expected,
never a bool), durations are strings like ``30s`` / ``15m`` / ``2h`` / ``7d``, ranges are
checked, and ``${VAR}`` in any string value (except rule message templates) is expanded from the
environment. Errors are
:class:`~feeds.errors.ConfigError` naming the file, the dotted key (``rules[2].for``) and the
line when it can be found. Values that came from the environment are never echoed in errors
(they are where secrets live).

This module knows nothing about the other layers: ``alerts/settings.py`` and
``tui/config.py`` reuse the machinery for their own sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from feeds.errors import ConfigError

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Durations

_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
DURATION_HELP = "write a number and one unit s, m, h or d, e.g. '30s', '15m', '2h', '7d'"


def parse_duration(text: str) -> float:
    """``"30s"`` -> 30.0, ``"15m"`` -> 900.0, ``"2h"``, ``"7d"``. Anything else: ValueError.

    Deliberately strict: ``"15 minutes"`` or ``"1h30m"`` are rejected rather than guessed.
    """
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration: {DURATION_HELP}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` in the largest unit that divides evenly."""
    # "24h" reads better than "1d", "60s" better than "1m": use a unit from two of it up.
    for unit in ("d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 2 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:g}s"


# --------------------------------------------------------------------------------------------
# Field declarations


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    default_factory: Any = dataclasses.MISSING,
    key: str | None = None,
    required: bool = False,
    duration: bool = False,
    optional_duration: bool = False,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    schemes: tuple[str, ...] | None = None,
    secret: bool = False,
    nonempty: bool = False,
    hint: str | None = None,
    expand_env: bool = True,
) -> Any:
    """Declare a config field: its default, its documentation and its validation.

    ``key`` is the TOML key when it differs from the attribute (``for`` is a Python keyword).
    ``duration`` fields are written as duration strings and hold seconds; with
    ``optional_duration`` an empty string (or absence, if the default is None) means "off".
    ``secret`` values are never echoed (errors, ``--show-config``). ``hint`` is appended to
    out-of-range errors. ``expand_env=False`` keeps ``${...}`` literal (message templates,
    where ``${value}`` is a dollar sign and a placeholder).
    """
    metadata = {
        "doc": doc,
        "key": key,
        "required": required,
        "duration": duration or optional_duration,
        "optional_duration": optional_duration,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": choices,
        "schemes": schemes,
        "secret": secret,
        "nonempty": nonempty,
        "hint": hint,
        "expand_env": expand_env,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def doc_meta(doc: str) -> dict[str, Any]:
    """Metadata of a nested section field (``[feeds.kraken]``): its documentation."""
    return {"doc": doc, "key": None}


def toml_key(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("key") or f.name


def field_doc(cls: type, name: str) -> str:
    """The documentation of one field (by attribute name or TOML key)."""
    for f in dataclasses.fields(cls):
        if name in (f.name, toml_key(f)):
            return str(f.metadata.get("doc", ""))
    raise KeyError(name)


def section_keys(cls: type) -> list[str]:
    return [toml_key(f) for f in dataclasses.fields(cls)]


def iter_leaf_keys(cls: type, prefix: str = "") -> list[tuple[str, type, dataclasses.Field[Any]]]:
    """Every leaf key of a section, recursing into nested sections: (dotted, owner, field)."""
    out: list[tuple[str, type, dataclasses.Field[Any]]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{toml_key(f)}" if prefix else toml_key(f)
        tp = hints[f.name]
        inner = _tuple_dataclass(tp)
        if dataclasses.is_dataclass(tp):
            out.extend(iter_leaf_keys(tp, path))  # type: ignore[arg-type]
        elif inner is not None:
            out.extend(iter_leaf_keys(inner, path))
        else:
            out.append((path, cls, f))
    return out


# --------------------------------------------------------------------------------------------
# Load context: file name, raw text (for line numbers), env, provenance


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(
    r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _norm_dotted(text: str) -> str:
    parts = [p.strip().strip("\"'") for p in text.split(".")]
    return ".".join(parts)


def index_lines(text: str) -> dict[str, int]:
    """Best-effort map of dotted key path -> 1-based line number in a TOML text.

    Tracks table headers (``[a.b]``) and arrays of tables (``[[rules]]`` -> ``rules[1]``,
    ``rules[2]`` ...) and records each ``key =`` under the current table. Lines inside
    multi-line strings are skipped. Good enough to point an operator at the right line.
    """
    index: dict[str, int] = {}
    counters: dict[str, int] = {}
    current = ""
    in_multiline: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        m = _HEADER_RE.match(line)
        if m and not line.strip().startswith("#"):
            name = _norm_dotted(m.group(2))
            if m.group(1) == "[[":
                counters[name] = counters.get(name, 0) + 1
                # Arrays of tables below another array restart their own count per parent.
                for other in list(counters):
                    if other.startswith(name + "."):
                        counters[other] = 0
                current = f"{name}[{counters[name]}]"
            else:
                current = name
            index.setdefault(current, lineno)
            continue
        k = _KEY_RE.match(line)
        if k:
            key = _norm_dotted(k.group(1))
            index.setdefault(f"{current}.{key}" if current else key, lineno)
            rest = line[k.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return index


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class LoadContext:
    """What a section builder needs besides the table: where errors point and what to record."""

    #: file name for messages, or None for built-in defaults
    file: str | None = None
    text: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    #: dotted key -> where its value came from ("default", a file path, "... via $VAR")
    provenance: dict[str, str] = field(default_factory=dict)
    #: dotted keys whose value came (partly) from the environment: never echoed
    from_env: set[str] = field(default_factory=set)
    _lines: dict[str, int] | None = None

    def line_of(self, path: str) -> int | None:
        """Line of ``path`` or, failing that, of the closest enclosing table."""
        if not self.text:
            return None
        if self._lines is None:
            self._lines = index_lines(self.text)
        probe = path
        while probe:
            if probe in self._lines:
                return self._lines[probe]
            # "economic" only appears inside headers such as [economic.fleet]: first such line.
            inner = [n for k, n in self._lines.items() if k.startswith((probe + ".", probe + "["))]
            if inner:
                return min(inner)
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                break
            probe = probe[:cut]
        return None

    def error(self, path: str, problem: str) -> ConfigError:
        where = self.file or "built-in defaults"
        line = self.line_of(path) if path else None
        if line:
            where = f"{where}, line {line}"
        return ConfigError(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")

    def origin(self) -> str:
        return self.file or "default"

    def expand(self, value: str, path: str) -> str:
        """Replace ``${VAR}`` from the environment; an unset variable is an error."""
        used: list[str] = []

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.env:
                raise self.error(
                    path, f"environment variable ${{{name}}} is not set (export it or edit the key)"
                )
            used.append(name)
            return self.env[name]

        out = _ENV_RE.sub(sub, value)
        if used:
            self.from_env.add(path)
            self.provenance[path] = f"{self.origin()} via " + ", ".join(f"${n}" for n in used)
        return out


# --------------------------------------------------------------------------------------------
# The generic builder


def toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "valid keys: " + ", ".join(valid)


def check_unknown(table: Mapping[str, Any], valid: list[str], path: str, ctx: LoadContext) -> None:
    for key in table:
        if key not in valid:
            full = f"{path}.{key}" if path else key
            raise ctx.error(full, f"unknown key; {suggest(key, valid)}")


def _tuple_dataclass(tp: Any) -> type | None:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            return args[0]  # type: ignore[return-value]
    return None


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def record_defaults(ctx: LoadContext, path: str, value: Any) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            record_defaults(ctx, f"{path}.{toml_key(f)}", getattr(value, f.name))
    else:
        ctx.provenance.setdefault(path, "default")


def build_section(
    cls: type[T], table: Any, path: str, ctx: LoadContext, default: T | None = None
) -> T:
    """Build a frozen section from a TOML table, strictly; missing keys keep ``default``'s."""
    if default is None:
        default = cls()
    if not isinstance(table, dict):
        raise ctx.error(path, f"must be a table ([{path}]), not {toml_type(table)}")
    fields = {toml_key(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_unknown(table, list(fields), path, ctx)
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    for key, f in fields.items():
        sub = f"{path}.{key}" if path else key
        current = getattr(default, f.name)
        if key not in table:
            if f.metadata.get("required"):
                raise ctx.error(sub, f"missing required key '{key}'")
            record_defaults(ctx, sub, current)
            continue
        changes[f.name] = coerce_value(table[key], hints[f.name], f, sub, ctx, current)
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]


def _range_text(md: Mapping[str, Any]) -> str:
    parts = []
    if md.get("gt") is not None:
        parts.append(f"> {md['gt']:g}")
    if md.get("ge") is not None:
        parts.append(f">= {md['ge']:g}")
    if md.get("lt") is not None:
        parts.append(f"< {md['lt']:g}")
    if md.get("le") is not None:
        parts.append(f"<= {md['le']:g}")
    return " and ".join(parts)


def check_range(
    value: float, md: Mapping[str, Any], path: str, ctx: LoadContext, shown: str
) -> None:
    ok = (
        (md.get("gt") is None or value > md["gt"])
        and (md.get("ge") is None or value >= md["ge"])
        and (md.get("lt") is None or value < md["lt"])
        and (md.get("le") is None or value <= md["le"])
    )
    if not ok:
        msg = f"{shown} is out of range: must be {_range_text(md)}"
        if md.get("hint"):
            msg += f" ({md['hint']})"
        raise ctx.error(path, msg)


def coerce_value(
    raw: Any, tp: Any, f: dataclasses.Field[Any], path: str, ctx: LoadContext, current: Any
) -> Any:
    """Check and convert one TOML value to the field's type (see :func:`setting`)."""
    md = f.metadata
    ctx.provenance[path] = ctx.origin()
    if dataclasses.is_dataclass(tp):
        return build_section(tp, raw, path, ctx, current)  # type: ignore[arg-type]
    inner = _tuple_dataclass(tp)
    if inner is not None:
        if not isinstance(raw, list):
            raise ctx.error(path, f"must be an array of tables ([[{path}]]), not {toml_type(raw)}")
        items = []
        for i, item in enumerate(raw, start=1):
            items.append(build_section(inner, item, f"{path}[{i}]", ctx))
        return tuple(items)

    if isinstance(raw, str) and md.get("expand_env", True):
        raw = ctx.expand(raw, path)
    secret = md.get("secret") or path in ctx.from_env
    tp, _optional = _strip_optional(tp)

    if md.get("duration"):
        if not isinstance(raw, str):
            raise ctx.error(
                path, f"must be a duration string ({DURATION_HELP}), not {toml_type(raw)}"
            )
        if raw == "" and md.get("optional_duration"):
            return None
        try:
            seconds = parse_duration(raw)
        except ValueError:
            shown = "the value" if secret else repr(raw)
            raise ctx.error(path, f"{shown} is not a duration: {DURATION_HELP}") from None
        check_range(seconds, md, path, ctx, repr(raw))
        return seconds
    if tp is bool:
        if not isinstance(raw, bool):
            raise ctx.error(path, f"must be true or false, not {toml_type(raw)}")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ctx.error(path, f"must be an integer, not {toml_type(raw)}")
        check_range(raw, md, path, ctx, str(raw))
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ctx.error(path, f"must be a number, not {toml_type(raw)}")
        value = float(raw)
        if not math.isfinite(value):
            raise ctx.error(path, "must be a finite number")
        check_range(value, md, path, ctx, f"{value:g}")
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise ctx.error(path, f"must be a string, not {toml_type(raw)}")
        _check_string(raw, md, path, ctx, secret)
        return raw
    if typing.get_origin(tp) is tuple:
        if not isinstance(raw, list):
            raise ctx.error(path, f"must be an array of strings, not {toml_type(raw)}")
        out = []
        for i, item in enumerate(raw, start=1):
            if not isinstance(item, str):
                raise ctx.error(path, f"item {i} must be a string, not {toml_type(item)}")
            item = ctx.expand(item, path)
            _check_string(item, md, path, ctx, secret)
            out.append(item)
        if md.get("nonempty") and not out:
            raise ctx.error(path, "must not be empty")
        return tuple(out)
    raise TypeError(f"unsupported config field type {tp!r} at {path}")  # a programming error


def _check_string(
    value: str, md: Mapping[str, Any], path: str, ctx: LoadContext, secret: bool
) -> None:
    shown = "the value" if secret else repr(value)
    choices = md.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        tail = f"; did you mean '{close[0]}'?" if close else ""
        raise ctx.error(path, f"{shown} is not one of {', '.join(choices)}{tail}")
    if md.get("nonempty") and not value:
        raise ctx.error(path, "must not be empty")
    schemes = md.get("schemes")
    if schemes and value:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in schemes:
            raise ctx.error(
                path,
                f"{shown} must be a URL starting with " + " or ".join(f"{s}://" for s in schemes),
            )


# --------------------------------------------------------------------------------------------
# Default locations


def user_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or ""
    if base and Path(base).is_absolute():
        return Path(base) / "hashwatch"
    return _home(env) / ".local" / "share" / "hashwatch"


def user_config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or ""
    if base and Path(base).is_absolute():
        return Path(base) / "hashwatch"
    return _home(env) / ".config" / "hashwatch"


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def default_db_path(env: Mapping[str, str]) -> Path:
    """($XDG_DATA_HOME or ~/.local/share)/hashwatch/hashwatch.db"""
    return user_data_dir(env) / "hashwatch.db"


# --------------------------------------------------------------------------------------------
# Sections owned by feeds

SOURCE_NAMES: tuple[str, ...] = ("mempool", "coinbase", "kraken", "bitstamp")
PRICE_SOURCES: tuple[str, ...] = ("coinbase", "kraken", "bitstamp")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """[database]: where history, alert state and the outbox live."""

    path: str = setting(
        "",
        doc="SQLite file. Empty means the default, ($XDG_DATA_HOME or ~/.local/share)/hashwatch/"
        "hashwatch.db. `~` is expanded; a relative path is relative to the config file's "
        "directory. `--db PATH` overrides it.",
    )
    price_tick_retention: float = setting(
        86400.0,
        duration=True,
        gt=0,
        doc="How long raw price ticks are kept before pruning. 1-minute candles are kept forever.",
    )


@dataclass(frozen=True, slots=True)
class FeedSourceConfig:
    """[feeds.<name>]: one upstream source."""

    enabled: bool = setting(True, doc="Connect to this source at all.")
    ws_url: str = setting(
        "", schemes=("ws", "wss"), nonempty=True, doc="Websocket endpoint (ws:// or wss://)."
    )
    rest_url: str = setting(
        "",
        schemes=("http", "https"),
        nonempty=True,
        doc="REST base URL (http:// or https://): backfill, gap fill and fallback polling.",
    )
    stale_after: float = setting(
        30.0,
        duration=True,
        gt=0,
        doc="A connected feed with no message for this long is marked stale (message-gap "
        "watchdog; liveness is checked separately with websocket pings).",
    )


@dataclass(frozen=True, slots=True)
class FeedsConfig:
    """[feeds]: shared feed behaviour, plus one [feeds.<name>] table per source."""

    price_fresh_after: float = setting(
        60.0,
        duration=True,
        gt=0,
        doc="A source's latest price counts towards the reference price (the median) only if "
        "it is younger than this.",
    )
    price_divergence_pct: float = setting(
        2.0,
        gt=0,
        le=100,
        doc="Flag a source whose price differs from the median by more than this percent.",
    )
    rest_fallback_interval: float = setting(
        30.0,
        duration=True,
        gt=0,
        doc="While a websocket is down, poll its REST endpoint this often (polls never overlap).",
    )
    clock_offset_warn: float = setting(
        10.0,
        duration=True,
        gt=0,
        doc="Warn when upstream timestamps and the local clock disagree by more than this.",
    )
    backfill_blocks: int = setting(
        5330,
        ge=0,
        le=200_000,
        doc="Blocks fetched at start-up: 4,320 (30 days, for hashrate_30d) plus 1,009 so that "
        "hashrate_7d exists for each of the last 30 days (the 30-day peak of the "
        "hashrate-drop rule), plus the tip.",
    )
    mempool: FeedSourceConfig = field(
        default_factory=lambda: FeedSourceConfig(
            ws_url="wss://mempool.space/api/v1/ws",
            rest_url="https://mempool.space/api",
            stale_after=120.0,
        ),
        metadata=doc_meta(
            "mempool.space: blocks, difficulty adjustment, fees, history. Blocks can be an "
            "hour apart, so staleness is judged on its frequent stats messages (2 minutes)."
        ),
    )
    coinbase: FeedSourceConfig = field(
        default_factory=lambda: FeedSourceConfig(
            ws_url="wss://ws-feed.exchange.coinbase.com", rest_url="https://api.coinbase.com"
        ),
        metadata=doc_meta("Coinbase Exchange BTC-USD ticker."),
    )
    kraken: FeedSourceConfig = field(
        default_factory=lambda: FeedSourceConfig(
            ws_url="wss://ws.kraken.com/v2", rest_url="https://api.kraken.com"
        ),
        metadata=doc_meta("Kraken BTC/USD ticker (websocket API v2)."),
    )
    bitstamp: FeedSourceConfig = field(
        default_factory=lambda: FeedSourceConfig(
            ws_url="wss://ws.bitstamp.net", rest_url="https://www.bitstamp.net/api"
        ),
        metadata=doc_meta("Bitstamp btcusd live trades."),
    )

    def sources(self) -> dict[str, FeedSourceConfig]:
        """Every source by name, enabled or not."""
        return {name: getattr(self, name) for name in SOURCE_NAMES}


@dataclass(frozen=True, slots=True)
class CostModelConfig:
    """[economics.fleet] / [economics.network]: the cost side of mining (DOMAIN.md "Costs")."""

    efficiency_j_per_th: float = setting(
        20.0, gt=0, le=10_000, doc="Energy efficiency of the machines in J/TH (lower is better)."
    )
    power_usd_per_kwh: float = setting(
        0.06,
        ge=0,
        le=5,
        hint="this key is USD per kWh: $60/MWh is 0.06",
        doc="All-in electricity price in USD per kWh (not per MWh: $60/MWh is 0.06).",
    )
    pool_fee_pct: float = setting(
        2.0, ge=0, lt=100, doc="Pool fee in percent (0-100) of the mined revenue."
    )
    uptime_pct: float = setting(
        97.0,
        gt=0,
        le=100,
        doc="Percent (0-100) of the time the machines hash: curtailment, repairs, outages.",
    )
    other_opex_usd_per_ph_day: float = setting(
        8.0,
        ge=0,
        doc="Every other cost in USD per PH/s per day: hosting, staff, depreciation.",
    )

    @property
    def pool_fee(self) -> float:
        """Pool fee as a fraction (the formulas use fractions, the config percent)."""
        return self.pool_fee_pct / 100.0

    @property
    def uptime(self) -> float:
        return self.uptime_pct / 100.0


@dataclass(frozen=True, slots=True)
class EconomicsConfig:
    """[economics]: the operator's fleet and a network-average model."""

    fleet: CostModelConfig = field(
        default_factory=CostModelConfig,
        metadata=doc_meta(
            "The operator's own fleet: hashcost, margin, breakeven power price, production cost."
        ),
    )
    network: CostModelConfig = field(
        default_factory=lambda: CostModelConfig(
            efficiency_j_per_th=25.0,
            power_usd_per_kwh=0.05,
            pool_fee_pct=2.0,
            uptime_pct=100.0,
            other_opex_usd_per_ph_day=7.0,
        ),
        metadata=doc_meta(
            "A network-average fleet, for network_production_cost_usd and price_to_cost_pct."
        ),
    )


#: The feeds-layer top-level sections, in file order.
FEEDS_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "feeds": FeedsConfig,
    "economics": EconomicsConfig,
}
