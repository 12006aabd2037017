"""Redaction of secrets in apprise URLs and in any text that may quote them.

Apprise URLs carry their secrets inline: Slack webhook tokens are the URL's host and path
(``slack://T…/B…/****``), SMTP passwords sit in the user info, generic webhooks put tokens in
the path or the query string. Everything hashwatch prints, logs or stores about a target goes
through :func:`redact_url`; free text that could quote a URL (apprise's own log lines, error
messages) goes through :func:`scrub` with the target's :func:`secret_fragments`.

Pure string work, no apprise import: the CLI and the config code can use it at start-up.
:func:`redact_url` defers to ``alerts.settings.redact_url`` so the CLI, logs and database
show targets the same way; this module's own parser finds the raw secret fragments.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

MASK = "****"

#: Schemes whose host is a real host name: only the user info, token-like path segments
#: and secret-looking query values are secrets. Every other scheme (slack, discord, tgram,
#: ...) carries its tokens as host and path, so those are masked.
HOST_SCHEMES = frozenset(
    {
        "json",
        "jsons",
        "xml",
        "xmls",
        "form",
        "forms",
        "http",
        "https",
        "mailto",
        "mailtos",
        "ntfy",
        "ntfys",
        "gotify",
        "gotifys",
        "mqtt",
        "mqtts",
        "apprise",
        "apprises",
    }
)

#: Hosts whose path after the first segment is a token (native webhook URLs).
_TOKEN_PATH_HOSTS = frozenset({"hooks.slack.com"})

_SECRET_KEY = re.compile(
    r"(token|secret|key|pass|pwd|auth|sig|code|access|bearer|cred|session|webhook|hook)",
    re.IGNORECASE,
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s'\"<>()\[\]]+")
#: Fragments shorter than this are not scrubbed from free text (too many false hits).
_MIN_FRAGMENT = 4


@dataclass
class _Redaction:
    text: str
    secrets: list[str] = field(default_factory=list)


def _looks_like_token(segment: str) -> bool:
    """A path segment of a host-based URL that is probably a credential (the same test as
    alerts.settings.redact_url, so every segment it masks is scrubbed from free text too)."""
    if not segment or "." in segment or segment.startswith("#"):
        return False
    if len(segment) >= 16:
        return True
    return len(segment) >= 6 and any(c.isdigit() or c.isupper() for c in segment)


def _is_target_segment(segment: str) -> bool:
    """Channel, user, phone or e-mail targets in a token scheme's path are not secrets."""
    return (
        not segment
        or segment[0] in "#@+"
        or "@" in segment
        or segment.isdigit()
        or len(segment) < 6
    )


def _mask_tokens(tokens: list[str]) -> list[str]:
    """Mask a run of secret tokens the way operators recognise them: ``T…/B…/****``.

    All but the last keep their first character (enough to tell two webhooks apart); the
    last is hidden completely. A Slack ``xoxb-``/``xoxp-`` token keeps its kind prefix.
    """
    out = []
    for i, tok in enumerate(tokens):
        m = re.match(r"(xox[a-z]-)", tok)
        if m:
            out.append(m.group(1) + MASK)
        elif i == len(tokens) - 1:
            out.append(MASK)
        else:
            out.append(tok[0] + "…")
    return out


def _redact(url: str) -> _Redaction:
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        # Not a URL we understand: it could be a bare secret, so show nothing of it.
        return _Redaction(MASK, [url] if url else [])
    scheme_l = scheme.lower()
    secrets: list[str] = []
    rest, qsep, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    user, colon, password = userinfo.partition(":")
    if colon and password:
        secrets.append(password)
        userinfo = f"{user}:{MASK}"
    segments = path.split("/") if path else []

    if scheme_l in HOST_SCHEMES:
        host = hostport.split(":")[0].lower()
        token_idx = [
            i
            for i, s in enumerate(segments)
            if _looks_like_token(s) or (host in _TOKEN_PATH_HOSTS and i > 0 and s)
        ]
        masked = _mask_tokens([segments[i] for i in token_idx])
        for i, m in zip(token_idx, masked, strict=True):
            secrets.append(segments[i])
            segments[i] = m
    else:
        # Token scheme: the "host" is the first token, then the path's secret segments.
        parts = [hostport, *segments]
        token_idx = [i for i, s in enumerate(parts) if not _is_target_segment(s)]
        masked = _mask_tokens([parts[i] for i in token_idx])
        for i, m in zip(token_idx, masked, strict=True):
            secrets.append(parts[i])
            parts[i] = m
        hostport, segments = parts[0], parts[1:]

    new_query = query
    if qsep:
        pairs = []
        for item in query.split("&"):
            k, eq, v = item.partition("=")
            bare = k.lstrip("+-:")
            if eq and v and (k.startswith("+") or _SECRET_KEY.search(bare)):
                secrets.append(v)
                pairs.append(f"{k}={MASK}")
            else:
                pairs.append(item)
        new_query = "&".join(pairs)

    text = f"{scheme}://"
    if userinfo or at:
        text += f"{userinfo}@"
    text += hostport
    if path:
        text += "/" + "/".join(segments)
    if qsep:
        text += "?" + new_query
    return _Redaction(text, secrets)


def redact_url(url: str) -> str:
    """The URL with every credential masked; safe to log, store and print.

    The config's ``alerts.settings.redact_url`` when present (one redaction for the CLI,
    the logs and the database), else this module's own.
    """
    try:
        from alerts.settings import redact_url as config_redact_url
    except ImportError:  # config module not available (early bootstrap, partial checkout)
        return _redact(url).text
    return config_redact_url(url)


def secret_fragments(urls: str | Iterable[str]) -> frozenset[str]:
    """The raw secret substrings of one or more URLs (and their URL-decoded forms).

    Used to scrub free text such as apprise's log lines, which quote a webhook's path
    (``/services/T…/B…/C…``) without the scheme, so URL matching alone would miss it.
    """
    if isinstance(urls, str):
        urls = [urls]
    out: set[str] = set()
    for url in urls:
        for s in _redact(url).secrets:
            for form in (s, urllib.parse.unquote(s), urllib.parse.quote(s, safe="")):
                if len(form) >= _MIN_FRAGMENT:
                    out.add(form)
    return frozenset(out)


def scrub(text: str, fragments: Iterable[str] = ()) -> str:
    """Remove secrets from free text: any URL it quotes, then known fragments anywhere."""
    # URLs first, so a quoted webhook reads ``slack://T…/B…/****`` rather than all stars.
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for frag in sorted(fragments, key=len, reverse=True):
        if frag in text:
            text = text.replace(frag, MASK)
    return text
