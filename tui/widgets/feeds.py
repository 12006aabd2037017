"""Feeds footer: each source's state, last message age and reconnects (+ backfill progress)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive

from feeds.events import BackfillProgress, FeedState, FeedStatus
from tui import format as fmt
from tui.widgets.panel import Panel, data

#: state words carry the meaning without colour; the symbol is a glance aid
STATE_LOOK = {
    FeedState.LIVE: ("●", "green"),
    FeedState.CONNECTING: ("◌", "yellow"),
    FeedState.STALE: ("◐", "yellow"),
    FeedState.BACKING_OFF: ("○", "red"),
    FeedState.DOWN: ("✕", "bold red"),
    FeedState.DISABLED: ("-", "dim"),
}


class FeedsFooter(Panel):
    TITLE = ""

    DEFAULT_CSS = """
    FeedsFooter { height: auto; max-height: 2; border-top: none; padding: 0 1; background: $boost; }
    """

    statuses: reactive[dict[str, FeedStatus]] = data(dict)
    backfill: reactive[dict[str, BackfillProgress]] = data(dict)
    #: newest receive time of data per source (ticks, live blocks): FeedStatus is only
    #: published on state changes, so its last_message_at alone goes stale while data flows
    last_seen: reactive[dict[str, float]] = data(dict)

    def last_message_at(self, s: FeedStatus) -> float | None:
        candidates = [t for t in (s.last_message_at, self.last_seen.get(s.source)) if t]
        age = self.metric(f"feed_age_s.{s.source}")
        if age is not None and self.snapshot is not None:
            candidates.append(self.snapshot.at - age)
        return max(candidates) if candidates else None

    def build(self) -> Text:
        out = Text("feeds ", style="bold")
        if not self.statuses:
            out.append("starting…", style="dim")
        narrow = self.screen.has_class("-narrow")
        shown = [
            (name, s)
            # Sources switched off on purpose (standbys) go last: on one line they would
            # push real ones (the block feed) off the edge; narrow leaves them out entirely.
            for name, s in sorted(
                self.statuses.items(), key=lambda i: (i[1].state is FeedState.DISABLED, i[0])
            )
            if not (narrow and s.state is FeedState.DISABLED)
        ]
        for i, (name, s) in enumerate(shown):
            sym, style = STATE_LOOK.get(s.state, ("?", ""))
            if i:
                out.append("  ")
            out.append(f"{sym} {name}", style=style)
            # Narrow: only trouble gets a word (the symbol marks live), so one line fits 80.
            if s.state is not FeedState.LIVE:
                out.append(f" {s.state.value.upper()}", style=style)
            elif not narrow:
                out.append(f" {s.state.value}", style=style)
            last = self.last_message_at(s)
            if last is not None:
                out.append(f" {fmt.age(self.now - last)}")
            if s.reconnects:
                out.append(f" r{s.reconnects}", style="dim")
            if s.state is not FeedState.LIVE and s.last_error and not narrow:
                out.append(f" ({s.last_error[:40]})", style="dim")
            if s.detail:  # e.g. "price deviates 2.4% from median": a flag, so always shown
                out.append(f" ! {s.detail[:48]}" if not narrow else " !", style="bold")
        for b in self.backfill.values():
            if b.total and b.done < b.total:
                out.append(f"  backfill {b.what} {b.done:,}/{b.total:,}", style="italic")
        return out
