"""Delivery of one message to one target: the ``Notifier`` protocol and its apprise version.

``AppriseNotifier`` gives every target its own ``apprise.Apprise`` object, so the outcome of
each channel is known on its own (one ``Apprise`` with several URLs only says "some failed").
apprise is imported inside functions: the TUI's first frame must not wait for its ~0.2 s of
plugin loading (docs/DESIGN.md). Its calls block (requests, smtplib), so they run in a worker
thread under a timeout; a dead SMTP server costs one thread for a while, never the event loop.

Secrets: apprise logs webhook URLs in full at DEBUG ("Slack POST URL: https://hooks.slack.com/
services/T…/B…/C…") and urllib3 logs request paths, so a scrubbing filter is installed on both
loggers as soon as a target is loaded; error texts come from apprise's per-call captured log
(WARNING and above) and go through the same scrubber. Nothing here ever logs a target's URL;
targets are named by their label (``name`` or 1-based position) and their redacted URL.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from alerts.redact import redact_url, scrub, secret_fragments

if TYPE_CHECKING:
    from alerts.settings import NotifyTarget

log = logging.getLogger(__name__)

#: Loggers of libraries that apprise drives and that may quote a target's URL.
_SCRUBBED_LOGGERS = ("apprise", "urllib3.connectionpool", "requests")
_ERROR_LIMIT = 500


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Outcome of one send; ``error`` is human-readable and already redacted."""

    ok: bool
    error: str | None = None


class Notifier(Protocol):
    async def send(
        self, target: NotifyTarget, title: str, body: str, severity: str
    ) -> DeliveryResult: ...


def target_label(target: NotifyTarget, index: int) -> str:
    """How a target is named everywhere (outbox rows, CLI): its name, else its 1-based position."""
    return target.name or str(index + 1)


def labelled(targets: Iterable[NotifyTarget]) -> list[tuple[str, NotifyTarget]]:
    return [(target_label(t, i), t) for i, t in enumerate(targets)]


class _ScrubFilter(logging.Filter):
    """Rewrites records of apprise/urllib3 so no known secret (or URL) survives formatting.

    Process-wide and shared by every notifier: secrets are only ever added, so a record
    logged by one target's send is scrubbed of every target's secrets.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.fragments: frozenset[str] = frozenset()

    def add(self, fragments: Iterable[str]) -> None:
        with self._lock:
            self.fragments = self.fragments | frozenset(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken record is apprise's bug; never drop or crash on it
            return True
        clean = scrub(msg, self.fragments)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_filter: _ScrubFilter | None = None
_filter_lock = threading.Lock()


def protect_logs(urls: Iterable[str]) -> None:
    """Scrub these URLs' secrets (and any URL) from apprise's and urllib3's log records."""
    global _filter
    with _filter_lock:
        if _filter is None:
            _filter = _ScrubFilter()
            for name in _SCRUBBED_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
    _filter.add(secret_fragments(list(urls)))


_SEVERITY_TYPES = {"critical": "failure", "warning": "warning", "info": "info", "ok": "success"}


class AppriseNotifier:
    """Sends through apprise, one ``Apprise`` object per target URL.

    ``min_interval_s``: apprise throttles each plugin instance (5.5 s between sends by
    default, Slack 1.2 s, json none) by sleeping in the sending thread. ``None`` keeps those
    defaults (they respect the services' rate limits: Slack webhooks allow about one message
    a second). Tests pass ``0``: a dozen alerts to one local receiver would otherwise take a
    minute. The outbox's own storm control bounds the rate in any case.
    """

    def __init__(self, *, timeout_s: float = 20.0, min_interval_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._objs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _apprise_for(self, url: str) -> tuple[Any | None, str | None]:
        """The cached ``Apprise`` for ``url`` (built in a worker thread: plugin loading blocks)."""
        with self._lock:
            obj = self._objs.get(url)
            if obj is not None:
                return obj, None
        import apprise  # lazy: see module docstring

        protect_logs([url])
        obj = apprise.Apprise()
        if not obj.add(url):
            return None, f"invalid or unsupported apprise URL: {redact_url(url)}"
        if self.min_interval_s is not None:
            for plugin in obj:
                # Instance attribute: overrides the plugin class's throttle for this object only.
                plugin.request_rate_per_sec = self.min_interval_s
        with self._lock:
            self._objs[url] = obj
        return obj, None

    def _forget(self, url: str) -> None:
        # After a timeout the abandoned thread may still hold the object: start afresh.
        with self._lock:
            self._objs.pop(url, None)

    def _send_blocking(self, url: str, title: str, body: str, severity: str) -> DeliveryResult:
        import apprise

        obj, err = self._apprise_for(url)
        if obj is None:
            return DeliveryResult(False, err)
        notify_type = _SEVERITY_TYPES.get(severity, "info")
        kwargs: dict[str, Any] = {"title": title, "body": body, "notify_type": notify_type}
        if _supports_timeout(apprise.Apprise.notify):
            kwargs["timeout"] = self.timeout_s
        result = obj.notify(**kwargs)
        if result:
            return DeliveryResult(True, None)
        return DeliveryResult(False, _error_text(result))

    async def send(
        self, target: NotifyTarget, title: str, body: str, severity: str
    ) -> DeliveryResult:
        url = target.url
        fragments = secret_fragments(url)
        try:
            # A little grace beyond apprise's own deadline, which ends the call cleanly.
            async with asyncio.timeout(self.timeout_s + 2.0):
                res = await asyncio.to_thread(self._send_blocking, url, title, body, severity)
        except TimeoutError:
            self._forget(url)
            return DeliveryResult(False, f"timed out after {self.timeout_s:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # apprise or a plugin raised: report it, never crash the sender
            res = DeliveryResult(False, f"{type(exc).__name__}: {exc}")
        if res.error:
            res = DeliveryResult(res.ok, scrub(res.error, fragments)[:_ERROR_LIMIT])
        return res


_timeout_support: dict[Any, bool] = {}


def _supports_timeout(fn: Any) -> bool:
    """apprise >= 2.x takes ``notify(timeout=...)``; 1.x does not."""
    if fn not in _timeout_support:
        try:
            _timeout_support[fn] = "timeout" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            _timeout_support[fn] = False
    return _timeout_support[fn]


def _error_text(result: Any) -> str:
    """The reason apprise gives for a failure (its captured WARNING+ log lines)."""
    lines: list[str] = []
    logs = getattr(result, "logs", None)
    if callable(logs):
        try:
            for entry in logs():
                msg = str(getattr(entry, "message", entry)).strip()
                if msg and msg not in lines:
                    lines.append(msg)
        except Exception:
            log.debug("could not read apprise's captured log", exc_info=True)
    status = getattr(result, "status", None)
    if not lines:
        name = getattr(status, "name", None)
        return f"delivery failed ({name.lower()})" if name else "delivery failed"
    text = "; ".join(lines)
    if getattr(status, "name", "") == "TIMEOUT":
        text = "timed out: " + text
    return text


async def send_all(
    notifier: Notifier,
    targets: Sequence[tuple[str, NotifyTarget]],
    title_body: Any,
    severity: str = "info",
) -> list[tuple[str, bool, str | None]]:
    """Send concurrently to each (label, target); ``title_body(label) -> (title, body)``."""

    async def one(label: str, target: NotifyTarget) -> tuple[str, bool, str | None]:
        title, body = title_body(label)
        res = await notifier.send(target, title, body, severity)
        if not res.ok:
            log.warning("notify target %s (%s): %s", label, redact_url(target.url), res.error)
        return label, res.ok, res.error

    return list(await asyncio.gather(*(one(label, t) for label, t in targets)))
