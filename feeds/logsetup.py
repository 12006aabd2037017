"""Logging: one line per event on stderr (and optionally a file), with levels.

A redacting filter is the last line of defence for secrets: notifier URLs and passwords are
redacted where they are formatted, but a library (apprise, aiohttp) could still log a URL with
credentials in it, so every record is scrubbed before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

# scheme://user:password@host  -> scheme://user:****@host
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)
# Slack-style token paths: slack://T000/B000/XXXX, hooks.slack.com/services/T/B/XXXX
_SLACK = re.compile(
    r"(?P<pre>(?:slack://|hooks\.slack\.com/services/)[^/\s]+/[^/\s]+/)(?P<tok>[^/\s?#]+)"
)
# query parameters that carry secrets
_QUERY = re.compile(
    r"(?P<k>(?:pass(?:word)?|token|secret|key|apikey|api_key|auth|webhook)=)(?P<v>[^&\s]+)", re.I
)
_XOXB = re.compile(r"xox[abprs]-[A-Za-z0-9-]+")


def scrub(text: str) -> str:
    """Redact credentials that look like they belong to a URL or token."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:****@", text)
    text = _SLACK.sub(lambda m: f"{m['pre']}****", text)
    text = _QUERY.sub(lambda m: f"{m['k']}****", text)
    return _XOXB.sub("xox*-****", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = str(record.msg)
        clean = scrub(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True


FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def default_log_file(env: dict[str, str] | None = None) -> Path:
    """Where the dashboard logs when no --log-file is given (stderr belongs to the screen)."""
    import os

    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hashwatch" / "hashwatch.log"


def configure_logging(
    level: str = "info", log_file: str | None = None, *, stderr: bool = True
) -> None:
    """``stderr=False`` while the dashboard owns the terminal: log lines written to stderr
    would overwrite the screen, so they go to the file only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if stderr else []
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = logging.Formatter(FORMAT)
    formatter.converter = __import__("time").gmtime  # UTC timestamps in logs
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug.
    if level.lower() != "debug":
        for noisy in ("websockets", "aiohttp", "apprise", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
