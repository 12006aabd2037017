"""Compiled alert rules: one condition per rule, with a separate clear test for hysteresis.

A rule from config (``alerts.settings.RuleConfig``) is compiled once into a :class:`Rule`.
Every rule reduces its inputs to one number, the *measure*:

* ``above`` / ``below`` / both (outside the band): the metric's value itself;
* ``drop_pct`` + ``window``: how far (percent) the value is below its maximum over the window;
* ``change_pct`` + ``window``: the change (percent) from the value one window ago to now.

``condition`` says whether the rule's condition holds (None: no data, e.g. a window that is
not yet full); ``cleared`` says whether a *firing* rule may resolve (the clear threshold,
hysteresis). Without ``clear`` the rule clears as soon as the condition is false.

Message templates are formatted safely: unknown placeholders and missing values become
``n/a`` and a malformed template is shown as written rather than raising.
"""

from __future__ import annotations

import hashlib
import math
import operator
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from feeds.errors import ConfigError

#: Metrics computed from the reference price: when ``price_usd`` is stale these are too.
PRICE_DEPENDENT: frozenset[str] = frozenset(
    {
        "price_usd",
        "hashprice",
        "hashprice_net",
        "margin",
        "breakeven_power_usd_per_kwh",
        "price_to_cost_pct",
    }
)

#: Metrics that *measure* staleness: they are never themselves "stale inputs", otherwise a
#: "price feed stale" rule could never fire.
FRESHNESS_PREFIXES: tuple[str, ...] = ("price_age_s", "tip_age_s", "feed_age_s")

#: How much of a window may be missing at its old end and still count as full: the samples
#: are one per minute, and the collector may have started a little after the boundary.
WINDOW_GRACE_S = 120.0


class RuleSpec(Protocol):
    """What :func:`compile_rule` reads: ``alerts.settings.RuleConfig``.

    Durations are seconds. ``for_``/``keep_firing_for``/``repeat`` are RuleConfig's names; the
    ``*_s`` spellings are accepted too (see :func:`_duration`).
    """

    name: str
    metric: str
    severity: str
    message: str | None
    above: float | None
    below: float | None
    drop_pct: float | None
    change_pct: float | None
    window: float | None
    clear: float | None
    send_resolved: bool


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What a window rule needs from the last ``window`` seconds of 1-minute samples.

    ``full`` is False while the samples do not yet reach back a whole window; ``first`` is the
    oldest value in the window (the value "one window ago"), ``max`` the largest.
    """

    full: bool
    max: float | None
    first: float | None

    @classmethod
    def of(cls, values: Sequence[float], *, full: bool = True) -> WindowStats:
        """From a plain list of values (oldest first) - handy for tests and one-off checks."""
        if not values:
            return cls(False, None, None)
        return cls(full, max(values), values[0])


EMPTY_WINDOW = WindowStats(False, None, None)

WindowArg = WindowStats | Sequence[float] | None


def _as_stats(window: WindowArg) -> WindowStats:
    if window is None:
        return EMPTY_WINDOW
    if isinstance(window, WindowStats):
        return window
    return WindowStats.of(list(window))


#: Slack on percent thresholds for float rounding (see ``Rule.comparisons``).
PCT_EPS = 1e-9


def drop_pct_of(value: float, peak: float) -> float | None:
    """Percent ``value`` is below ``peak`` (None when the peak is not positive)."""
    if peak <= 0:
        return None
    return (peak - value) / peak * 100.0


def change_pct_of(value: float, first: float) -> float | None:
    """Percent change from ``first`` to ``value`` (None when ``first`` is 0)."""
    if first == 0:
        return None
    return (value - first) / abs(first) * 100.0


def is_freshness_metric(metric: str) -> bool:
    return metric.startswith(FRESHNESS_PREFIXES)


def is_stale(metric: str, stale: frozenset[str] | set[str]) -> bool:
    """Whether a rule on ``metric`` must neither fire nor resolve given a snapshot's stale set."""
    if not stale or is_freshness_metric(metric):
        return False
    return metric in stale or (metric in PRICE_DEPENDENT and "price_usd" in stale)


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule. ``kind`` is one of above, below, band, drop_pct, change_pct."""

    name: str
    metric: str
    severity: str
    kind: str
    message: str | None = None
    above: float | None = None
    below: float | None = None
    pct: float | None = None
    window_s: float | None = None
    clear: float | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    repeat_s: float = 0.0
    send_resolved: bool = True
    fingerprint: str = ""
    _cmp: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind != "band":
            object.__setattr__(self, "_cmp", self.comparisons())

    @property
    def needs_window(self) -> bool:
        return self.kind in ("drop_pct", "change_pct")

    # -- the measure -------------------------------------------------------------------------

    def measure(self, value: float | None, window: WindowArg = None) -> float | None:
        """The number the thresholds apply to (None: no data)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.kind == "drop_pct":
            w = _as_stats(window)
            if not w.full or w.max is None:
                return None
            return drop_pct_of(value, max(w.max, value))
        if self.kind == "change_pct":
            w = _as_stats(window)
            if not w.full or w.first is None:
                return None
            return change_pct_of(value, w.first)
        return float(value)

    # -- tests on the measure (used by the engine and by the vectorised backtest) -------------

    def comparisons(self) -> tuple[Callable[..., bool], float, Callable[..., bool], float]:
        """``(fire_op, fire_at, clear_op, clear_at)``: the rule fires when
        ``fire_op(x, fire_at)`` and a firing rule clears when ``clear_op(x, clear_at)``.

        The single definition of both tests (the backtest applies them to whole series).
        Percent measures come out of float arithmetic (90 vs 100 is 9.999999999999998% below),
        so their thresholds get ``PCT_EPS`` of slack toward firing and toward clearing.
        Not for bands (two thresholds): see :meth:`fires`.
        """
        k, e = self.kind, PCT_EPS
        if k == "above":
            a = self.above
            assert a is not None
            return operator.gt, a, operator.le, a if self.clear is None else self.clear
        if k == "below":
            b = self.below
            assert b is not None
            return operator.lt, b, operator.ge, b if self.clear is None else self.clear
        p = self.pct
        assert p is not None and k != "band"
        if k == "change_pct" and p < 0:  # fires on a fall
            if self.clear is None:
                return operator.le, p + e, operator.gt, p + e
            return operator.le, p + e, operator.ge, self.clear - e
        # drop_pct, or change_pct on a rise
        if self.clear is None:
            return operator.ge, p - e, operator.lt, p - e
        return operator.ge, p - e, operator.le, self.clear + e

    def fires(self, x: float) -> bool:
        if self.kind == "band":
            return x > self.above or x < self.below  # type: ignore[operator]
        fop, fat, _, _ = self._cmp
        return fop(x, fat)

    def clears(self, x: float) -> bool:
        if self.kind == "band":
            return not self.fires(x)  # compile_rule rejects clear on a band
        _, _, cop, cat = self._cmp
        return cop(x, cat)

    def condition(self, value: float | None, window: WindowArg = None) -> bool | None:
        """True when the rule's condition holds, False when not, None for no data."""
        x = self.measure(value, window)
        return None if x is None else self.fires(x)

    def cleared(self, value: float | None, window: WindowArg = None) -> bool | None:
        """True when a firing rule may resolve (honours ``clear``), None for no data."""
        x = self.measure(value, window)
        return None if x is None else self.clears(x)

    def threshold_for(self, x: float | None) -> float | None:
        """The threshold to report: for a band, the side that was crossed (or is nearer)."""
        if self.kind == "above":
            return self.above
        if self.kind == "below":
            return self.below
        if self.kind == "band":
            if x is None:
                return self.above
            assert self.above is not None and self.below is not None
            return self.above if abs(x - self.above) <= abs(x - self.below) else self.below
        return self.pct

    # -- messages ---------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for listings: ``hashprice below 40 (clear 42) for 5m``."""
        if self.kind == "above":
            s = f"{self.metric} above {fmt_number(self.above)}"
        elif self.kind == "below":
            s = f"{self.metric} below {fmt_number(self.below)}"
        elif self.kind == "band":
            s = f"{self.metric} outside {fmt_number(self.below)}..{fmt_number(self.above)}"
        elif self.kind == "drop_pct":
            s = f"{self.metric} {fmt_number(self.pct)}% below its {fmt_duration(self.window_s)} max"
        else:
            direction = "fall" if (self.pct or 0) < 0 else "rise"
            s = (
                f"{self.metric} {direction} of {fmt_number(abs(self.pct or 0))}% "
                f"over {fmt_duration(self.window_s)}"
            )
        if self.clear is not None:
            s += f" (clear {fmt_number(self.clear)})"
        if self.for_s:
            s += f" for {fmt_duration(self.for_s)}"
        return s

    def default_message(self, value: float | None, x: float | None) -> str:
        v = fmt_metric(self.metric, value)
        if self.kind in ("above", "below", "band"):
            thr = self.threshold_for(x)
            side = "above" if (x is not None and thr is not None and x > thr) else "below"
            if self.kind == "above" and (x is None or thr is None):
                side = "above"
            return f"{self.metric} {v} {side} {fmt_metric(self.metric, thr)}"
        if self.kind == "drop_pct":
            return (
                f"{self.metric} {v}, {fmt_number(x)}% below its "
                f"{fmt_duration(self.window_s)} maximum (threshold {fmt_number(self.pct)}%)"
            )
        return (
            f"{self.metric} {v}, {fmt_signed_pct(x)} over {fmt_duration(self.window_s)} "
            f"(threshold {fmt_signed_pct(self.pct)})"
        )

    def render_message(
        self,
        value: float | None,
        window: WindowArg = None,
        context: Mapping[str, float | None] | None = None,
        *,
        x: float | None = None,
    ) -> str:
        """The rule's ``message`` template filled in (or a default one-line message)."""
        if x is None:
            x = self.measure(value, window)
        if not self.message:
            return self.default_message(value, x)
        return render_template(
            self.message,
            context or {},
            # RuleConfig documents {value} as the percent drop/change for window rules; the
            # metric's own value stays available as {<metric name>}.
            value=x if self.needs_window else value,
            threshold=self.threshold_for(x),
            clear=self.clear,
            rule=self.name,
            metric=self.metric,
            severity=self.severity,
            window=self.window_s,
            is_pct=self.needs_window,
            metric_value=value,
            kind=self.kind,
        )


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _duration(cfg: Any, *names: str) -> float:
    """The first of ``names`` present on ``cfg`` (None/absent -> 0: off)."""
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return float(v)
    return 0.0


def compile_rule(cfg: RuleSpec) -> Rule:
    """Compile one config rule; raises ``ConfigError`` for a rule that cannot work."""
    above, below = _num(cfg.above), _num(cfg.below)
    drop, change = _num(cfg.drop_pct), _num(cfg.change_pct)
    window = _num(getattr(cfg, "window", None))
    clear = _num(getattr(cfg, "clear", None))
    name = cfg.name
    given = [
        k
        for k, v in (
            ("above/below", above if above is not None else below),
            ("drop_pct", drop),
            ("change_pct", change),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise ConfigError(
            f"rule {name!r}: needs exactly one condition (above/below, drop_pct or change_pct),"
            f" got {', '.join(given) or 'none'}"
        )
    pct: float | None = None
    if above is not None and below is not None:
        kind = "band"
        if clear is not None:
            raise ConfigError(f"rule {name!r}: 'clear' is not supported with a band")
    elif above is not None:
        kind = "above"
    elif below is not None:
        kind = "below"
    elif drop is not None:
        kind, pct = "drop_pct", drop
        if drop <= 0:
            raise ConfigError(f"rule {name!r}: drop_pct must be positive, got {drop:g}")
    else:
        kind, pct = "change_pct", change
        if change == 0:
            raise ConfigError(f"rule {name!r}: change_pct must not be 0")
    if kind in ("drop_pct", "change_pct"):
        if not window or window <= 0:
            raise ConfigError(f"rule {name!r}: {kind} needs a positive 'window'")
    else:
        window = None
    if clear is not None:
        # A clear threshold on the wrong side would make the rule resolve while still firing.
        bad = (
            (kind == "above" and clear > above)  # type: ignore[operator]
            or (kind == "below" and clear < below)  # type: ignore[operator]
            or (kind == "drop_pct" and clear > pct)  # type: ignore[operator]
            or (kind == "change_pct" and pct < 0 and clear < pct)  # type: ignore[operator]
            or (kind == "change_pct" and pct > 0 and clear > pct)  # type: ignore[operator]
        )
        if bad:
            raise ConfigError(
                f"rule {name!r}: clear {clear:g} is on the firing side of the threshold"
            )
    for_s = _duration(cfg, "for_", "for_s")
    keep_s = _duration(cfg, "keep_firing_for", "keep_firing_for_s")
    repeat_s = _duration(cfg, "repeat", "repeat_s")
    send_resolved = bool(getattr(cfg, "send_resolved", True))
    fields = (name, cfg.metric, cfg.severity, kind, above, below, pct, window, clear)
    fields += (for_s, keep_s, repeat_s, send_resolved, cfg.message)
    fingerprint = hashlib.sha256(repr(fields).encode()).hexdigest()[:16]
    return Rule(
        name=name,
        metric=cfg.metric,
        severity=cfg.severity,
        kind=kind,
        message=cfg.message or None,
        above=above,
        below=below,
        pct=pct,
        window_s=window,
        clear=clear,
        for_s=for_s,
        keep_firing_for_s=keep_s,
        repeat_s=repeat_s,
        send_resolved=send_resolved,
        fingerprint=fingerprint,
    )


def compile_rules(cfgs: Sequence[RuleSpec]) -> list[Rule]:
    """Compile a rule set; names must be unique."""
    rules = [compile_rule(c) for c in cfgs]
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ConfigError(f"rule name {r.name!r} is used twice")
        seen.add(r.name)
    return rules


# -- formatting ---------------------------------------------------------------------------


def fmt_number(v: float | None) -> str:
    """A compact, human number: 38.7, 1,234, 0.0012, 5.2e+20."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    if a >= 1e15:
        return f"{v:.3g}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 1 or a == 0:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def fmt_signed_pct(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.1f}%"


def fmt_duration(s: float | None) -> str:
    """``90m`` style durations: 45s, 15m, 1h 32m, 7d."""
    if s is None:
        return "n/a"
    s = float(s)
    if s < 0:
        return "-" + fmt_duration(-s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h}h" if not m else f"{h}h {m}m"
    d, h = divmod(round(s / 3600), 24)
    return f"{d}d" if not h else f"{d}d {h}h"


def _probability(p: float) -> str:
    if p <= 0:
        return "0"
    if p < 0.01:
        return f"1 in {1 / p:,.0f}"
    return f"{p * 100:.1f}%"


def fmt_metric(metric: str, v: float | None) -> str:
    """A metric's value with its unit (DOMAIN.md's table), e.g. ``$38.70/PH/day``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric in ("hashprice", "hashcost", "hashcost_energy", "hashprice_net", "margin"):
        return f"${v:,.2f}/PH/day"
    if metric in ("price_usd", "production_cost_usd", "network_production_cost_usd"):
        return f"${v:,.0f}"
    if metric == "breakeven_power_usd_per_kwh":
        return f"${v:.3f}/kWh"
    if metric.startswith("hashrate_"):
        return f"{v / 1e18:,.1f} EH/s"
    if metric == "_pct_abs":
        return f"{v:.1f}%"
    if metric.endswith("_pct"):
        return fmt_signed_pct(v)
    if metric.endswith("_age_s") or metric.startswith("feed_age_s"):
        return fmt_duration(v)
    if metric == "block_gap_probability":
        return _probability(v)
    if metric in ("subsidy_sats", "fees_avg_144"):
        return f"{v:,.0f} sats"
    if metric == "hashvalue":
        return f"{v:,.0f} sats/PH/day"
    if metric in ("tip_height", "retarget_height", "retarget_blocks_remaining"):
        return f"{v:,.0f}"
    return fmt_number(v)


_MISSING = object()


class _SafeFormatter(string.Formatter):
    """``str.format`` that never raises on data: missing -> ``n/a``; numbers get units.

    Field names are looked up whole first, so ``{feed_age_s.coinbase}`` works even though
    ``str.format`` would read the dot as attribute access.
    """

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = names  # placeholder -> metric name used for unit formatting

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name in kwargs:
            return (field_name, kwargs[field_name]), field_name
        return (field_name, _MISSING), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        name, v = value
        if v is _MISSING or v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if format_spec:
            try:
                return format(v, format_spec)
            except (ValueError, TypeError):
                return str(v)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return fmt_metric(self._names.get(name, name), float(v))
        return str(v)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value


def render_template(
    template: str,
    context: Mapping[str, Any],
    *,
    value: float | None,
    threshold: float | None,
    rule: str,
    metric: str,
    severity: str = "",
    clear: float | None = None,
    window: float | None = None,
    is_pct: bool = False,
    metric_value: float | None = None,
    kind: str = "",
) -> str:
    """Fill ``{value}``, ``{threshold}``, ``{clear}``, ``{name}`` (alias ``{rule}``),
    ``{metric}``, ``{severity}``, ``{window}`` and any metric name.

    ``is_pct``: value/threshold/clear are percentages (drop_pct/change_pct rules).
    """
    kwargs: dict[str, Any] = dict(context)
    if metric_value is not None:
        kwargs.setdefault(metric, metric_value)
    kwargs.update(
        value=value,
        threshold=threshold,
        clear=clear,
        name=rule,
        rule=rule,
        metric=metric,
        severity=severity,
        window=fmt_duration(window) if window else None,
    )
    unit = ("_pct_abs" if kind == "drop_pct" else "_pct") if is_pct else metric
    names = {"value": unit, "threshold": unit, "clear": unit}
    try:
        return _SafeFormatter(names).vformat(template, (), kwargs)
    except (ValueError, IndexError, KeyError):
        # A malformed template (unbalanced braces ...) is shown as written, never a crash.
        return template
