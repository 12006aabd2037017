"""The reference BTC/USD price: median of the fresh sources, with divergence flags.

DOMAIN.md: ``price_usd`` is the median of the latest price of each source updated within
``fresh_after_s`` (60 s by default, judged on local receipt time so an upstream clock cannot
make a quote look fresh). A source more than ``divergence_pct`` (2%) away from the median of
the *others* is flagged. With no fresh source the last reference value is kept and its age
grows: figures derived from it are shown as stale and price rules must not act on it.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

from feeds.events import PriceTick

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reference:
    price_usd: float
    #: receipt time of the newest tick behind the value
    as_of: float
    sources: tuple[str, ...]


class ReferencePrice:
    def __init__(self, fresh_after_s: float = 60.0, divergence_pct: float = 2.0) -> None:
        self.fresh_after_s = fresh_after_s
        self.divergence_pct = divergence_pct
        self._latest: dict[str, PriceTick] = {}
        self._last_ref: Reference | None = None

    def on_tick(self, tick: PriceTick) -> None:
        prev = self._latest.get(tick.source)
        # A late, older tick (replay after reconnect) must not replace a newer one.
        if prev is not None and tick.received_at < prev.received_at:
            return
        if tick.price_usd <= 0:
            log.warning("pricing: ignoring non-positive price from %s", tick.source)
            return
        self._latest[tick.source] = tick

    def latest(self) -> dict[str, PriceTick]:
        return dict(self._latest)

    def fresh_sources(self, now: float) -> dict[str, PriceTick]:
        return {s: t for s, t in self._latest.items() if now - t.received_at <= self.fresh_after_s}

    def reference(self, now: float) -> Reference | None:
        """The current reference; with nothing fresh, the last one computed (possibly None)."""
        fresh = self.fresh_sources(now)
        if fresh:
            ref = Reference(
                price_usd=statistics.median(t.price_usd for t in fresh.values()),
                as_of=max(t.received_at for t in fresh.values()),
                sources=tuple(sorted(fresh)),
            )
            self._last_ref = ref
            return ref
        if self._last_ref is None and self._latest:
            # Only old ticks ever seen (e.g. restored at start-up): they still give the last
            # known value, shown stale.
            ticks = self._latest.values()
            self._last_ref = Reference(
                statistics.median(t.price_usd for t in ticks),
                max(t.received_at for t in ticks),
                tuple(sorted(self._latest)),
            )
        return self._last_ref

    def price_usd(self, now: float) -> float | None:
        ref = self.reference(now)
        return ref.price_usd if ref else None

    def price_age_s(self, now: float) -> float | None:
        ref = self.reference(now)
        return max(0.0, now - ref.as_of) if ref else None

    def is_stale(self, now: float) -> bool:
        """True when no source is fresh (also when there has never been a price)."""
        return not self.fresh_sources(now)

    def flagged(self, now: float) -> dict[str, float]:
        """Fresh sources more than ``divergence_pct`` from the median of the others: % off."""
        fresh = self.fresh_sources(now)
        if len(fresh) < 2:
            return {}
        out: dict[str, float] = {}
        for src, tick in fresh.items():
            others = statistics.median(t.price_usd for s, t in fresh.items() if s != src)
            dev = (tick.price_usd / others - 1.0) * 100.0
            if abs(dev) > self.divergence_pct:
                out[src] = dev
        return out
