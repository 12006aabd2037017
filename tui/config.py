"""The composed configuration: [ui], the :class:`Config` of every section, and its loading.

Lookup order (first that applies wins): ``--config PATH``, ``$HASHWATCH_CONFIG``, the user
config dir (``$XDG_CONFIG_HOME`` or ``~/.config``)/hashwatch/config.toml, built-in defaults.
An explicitly named file that does not exist is an error; a missing user config file is not.

Importing this module never imports Textual (the headless collector and ``check-config`` use
it), only the feeds and alerts config sections.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from alerts.settings import (
    ALERTS_SECTIONS,
    AlertsConfig,
    NotifyConfig,
    RuleConfig,
    parse_rules,
    redact_url,
    select_rules,
    validate_notify,
)
from feeds.errors import ConfigError
from feeds.settings import (
    FEEDS_SECTIONS,
    DatabaseConfig,
    EconomicsConfig,
    FeedsConfig,
    LoadContext,
    build_section,
    check_unknown,
    default_db_path,
    format_duration,
    record_defaults,
    setting,
    toml_key,
    user_config_dir,
)

log = logging.getLogger(__name__)

ENV_CONFIG = "HASHWATCH_CONFIG"


@dataclass(frozen=True, slots=True)
class UiConfig:
    """[ui]: the dashboard."""

    refresh_per_second: int = setting(
        4,
        ge=1,
        le=10,
        doc="Maximum screen repaints per second (1-10); prices arriving faster are coalesced.",
    )
    theme: str = setting("dark", choices=("dark", "light"), doc='Colour theme: "dark" or "light".')
    compact: str = setting(
        "auto",
        choices=("auto", "always", "never"),
        doc='Compact layout: "auto" (when the terminal is small), "always" or "never".',
    )


#: Every top-level table, in file order ([[rules]] is handled on its own).
SECTIONS: dict[str, type] = {**FEEDS_SECTIONS, **ALERTS_SECTIONS, "ui": UiConfig}
TOP_LEVEL_KEYS: tuple[str, ...] = (*SECTIONS, "rules")


@dataclass(frozen=True)
class Config:
    """Everything hashwatch reads from its config, validated, with provenance."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    economics: EconomicsConfig = field(default_factory=EconomicsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    #: the rules that run (the file's [[rules]], the built-in set, or none)
    rules: tuple[RuleConfig, ...] = ()
    #: "default", "file" or "none (...)"
    rules_origin: str = "default"
    #: the file read, or None for built-in defaults
    path: str | None = None
    #: how the file was found: "--config", "$HASHWATCH_CONFIG", "user config dir", "defaults"
    origin: str = "built-in defaults"
    #: dotted key -> where its value came from ("default", a file path, "... via $VAR", "--db")
    provenance: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    @property
    def source_path(self) -> str | None:
        """Alias of :attr:`path` (the file read, or None)."""
        return self.path


def resolve_config_path(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path | None, str]:
    """Which config file to read and why; (None, "built-in defaults") when there is none."""
    env = os.environ if env is None else env
    if path is not None and str(path) != "":
        return Path(path), "--config"
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]), f"${ENV_CONFIG}"
    user = user_config_dir(env) / "config.toml"
    if user.is_file():
        return user, "user config dir"
    return None, "built-in defaults"


_TOML_LINE = re.compile(r"at line (\d+)")


def _read(path: Path, origin: str) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (named by {origin})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_LINE.search(str(exc))
        where = f"{path}, line {m.group(1)}" if m else str(path)
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return text, data


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    db_override: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Find, read and validate the config. Raises ConfigError (exit code 2) on any problem."""
    env = os.environ if env is None else env
    found, origin = resolve_config_path(path, env)
    if found is None:
        text, data = "", {}
        ctx = LoadContext(file=None, env=env)
    else:
        text, data = _read(found, origin)
        ctx = LoadContext(file=str(found), text=text, env=env)

    check_unknown(data, list(TOP_LEVEL_KEYS), "", ctx)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        sections[name] = build_section(cls, data.get(name, {}), name, ctx)
    validate_notify(sections["notify"], ctx)

    file_rules = parse_rules(data["rules"], ctx) if "rules" in data else None
    rules, rules_origin = select_rules(sections["alerts"], file_rules)
    if rules_origin == "default":
        for i, rule in enumerate(rules, start=1):
            record_defaults(ctx, f"rules[{i}]", rule)
    if rules_origin == "file" and found is not None:
        rules_origin = f"file ({found})"

    database: DatabaseConfig = sections["database"]
    db_path, db_origin = _resolve_db_path(database.path, db_override, found, env)
    if db_origin:
        ctx.provenance["database.path"] = db_origin
    sections["database"] = dataclasses.replace(database, path=str(db_path))

    log.debug("config loaded from %s (%s)", found or "built-in defaults", origin)
    return Config(
        **sections,
        rules=rules,
        rules_origin=rules_origin,
        path=str(found) if found else None,
        origin=origin,
        provenance=MappingProxyType(dict(ctx.provenance)),
    )


def _expand_home(value: str, env: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith("~/"):
        home = env.get("HOME") or str(Path.home())
        return Path(home) / value[2:]
    return Path(value)


def _resolve_db_path(
    configured: str,
    override: str | os.PathLike[str] | None,
    config_file: Path | None,
    env: Mapping[str, str],
) -> tuple[Path, str | None]:
    """The database file and, when not from the file, where it came from."""
    if override is not None and str(override) != "":
        return _expand_home(str(override), env).absolute(), "--db"
    if configured:
        p = _expand_home(configured, env)
        if not p.is_absolute():
            # Relative to the config file, so the file means the same from any directory.
            base = config_file.parent if config_file else Path.cwd()
            p = base / p
        return p.absolute(), None
    source = "default ($XDG_DATA_HOME)" if env.get("XDG_DATA_HOME") else "default"
    return default_db_path(env), source


# --------------------------------------------------------------------------------------------
# --show-config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def _render_table(
    obj: Any, path: str, header: str, prov: Mapping[str, str], out: list[str]
) -> None:
    """One table's leaf keys, then its sub-tables (TOML needs leaves first)."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    out.append("")
    out.append(header)
    nested: list[tuple[str, Any, type]] = []
    for f in dataclasses.fields(cls):
        key = toml_key(f)
        sub = f"{path}.{key}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            nested.append((sub, value, hints[f.name]))
            continue
        if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            nested.append((sub, value, tuple))
            continue
        if isinstance(value, tuple) and not value and typing.get_origin(hints[f.name]) is tuple:
            args = typing.get_args(hints[f.name])
            if args and dataclasses.is_dataclass(args[0]):
                out.append(f"# {key}: none  # {prov.get(sub, 'default')}")
                continue
        origin = prov.get(sub, "default")
        if f.metadata.get("duration"):
            value = "" if value is None else format_duration(value)
        if value is None:
            out.append(f"# {key} = (not set)  # {origin}")
            continue
        if isinstance(value, str) and (
            f.metadata.get("secret") or (" via $" in origin and "://" in value)
        ):
            value = redact_url(value)
        out.append(f"{key} = {_toml_value(value)}  # {origin}")
    for sub, value, _kind in nested:
        if isinstance(value, tuple):
            for i, item in enumerate(value, start=1):
                _render_table(item, f"{sub}[{i}]", f"[[{sub}]]", prov, out)
        else:
            _render_table(value, sub, f"[{sub}]", prov, out)


def show_config(config: Config) -> str:
    """Every key with its value and where it came from, as TOML with comments.

    Notification URLs (and any URL that came from an environment variable) are redacted, so
    the output is safe to paste into an issue.
    """
    prov = config.provenance
    out = [
        "# hashwatch configuration",
        f"# file: {config.path or 'none'} ({config.origin})",
        "# each value is followed by where it came from",
    ]
    for name in SECTIONS:
        _render_table(getattr(config, name), name, f"[{name}]", prov, out)
    out.append("")
    out.append(f"# rules: {len(config.rules)} from {config.rules_origin}")
    for i, rule in enumerate(config.rules, start=1):
        _render_table(rule, f"rules[{i}]", "[[rules]]", prov, out)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# File permissions


def _secret_strings(data: Any) -> bool:
    if isinstance(data, dict):
        return any(_secret_strings(v) for v in data.values())
    if isinstance(data, list):
        return any(_secret_strings(v) for v in data)
    if isinstance(data, str) and "://" in data and "${" not in data:
        return redact_url(data) != data
    return False


def config_permission_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning when a config file holding secrets (URLs with passwords or tokens written
    in clear, not as ${VAR}) can be read by group or others; None when all is well."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if os.name != "posix" or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    if not _secret_strings(data):
        return None
    return (
        f"{p} is readable by group/others (mode {stat.S_IMODE(mode):o}) and contains a URL "
        f"with a password or token; run `chmod 600 {p}` or put the secret in an environment "
        "variable and write ${VAR} in the file"
    )


# --------------------------------------------------------------------------------------------
# Reference for the README


def _default_text(f: dataclasses.Field[Any], value: Any) -> str:
    if f.metadata.get("required"):
        return "(required)"
    if f.metadata.get("duration"):
        return '`""`' if value is None else f'`"{format_duration(value)}"`'
    if value is None:
        return "(not set)"
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return "(none)"
    if isinstance(value, tuple) and not value:
        return "(none)"
    return f"`{_toml_value(value)}`"


def config_keys_markdown() -> str:
    """A Markdown table of every key (section, key, default, meaning), generated from the
    dataclasses so the README can carry the same reference as ``config.toml``."""
    from alerts.settings import NotifyTarget  # the element type of notify.targets

    rows = ["| key | default | meaning |", "|---|---|---|"]

    def table(obj: Any, prefix: str) -> None:
        nested: list[tuple[str, Any]] = []
        for f in dataclasses.fields(obj):
            key = f"{prefix}.{toml_key(f)}"
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                nested.append((key, value))
                continue
            doc = str(f.metadata.get("doc", "")).replace("|", "\\|")
            rows.append(f"| `{key}` | {_default_text(f, value)} | {doc} |")
        for key, value in nested:
            table(value, key)

    defaults = Config()
    for name in SECTIONS:
        table(getattr(defaults, name), name)
    table(NotifyTarget(), "[[notify.targets]]")
    table(RuleConfig(), "[[rules]]")
    rows = [r.replace("`[[notify.targets]].", "`[[notify.targets]]` `") for r in rows]
    rows = [r.replace("`[[rules]].", "`[[rules]]` `") for r in rows]
    return "\n".join(rows) + "\n"
