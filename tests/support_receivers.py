"""Real local receivers for delivery tests: SMTP (aiosmtpd) and HTTP (aiohttp) on 127.0.0.1.

* ``SmtpReceiver``: an aiosmtpd ``Controller`` (its own thread and loop) on an ephemeral
  port; ``fail_next = n`` answers ``451`` to the next n messages (a temporary SMTP failure).
* ``HttpReceiver``: an aiohttp server for ``json://`` and for apprise's Slack plugin pointed at
  it; answers 200 ``ok`` (what Slack's webhook answers), or 500 for the next ``fail_next``
  requests; ``stop()``/``start()`` on the same port simulate a target refusing connections.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import random
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A port nothing listens on right now (connections to it are refused).

    Chosen below Linux's ephemeral range (32768+): a port handed out by ``bind(0)`` can be
    picked again as the *local* port of a client connection, and a client connecting to
    127.0.0.1:P from local port P connects to itself (TCP simultaneous open).
    """
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Mail:
    sender: str
    rcpts: list[str]
    subject: str
    text: str
    headers: dict[str, str]


class _SmtpHandler:
    def __init__(self, owner: SmtpReceiver) -> None:
        self.owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.owner.lock:
            self.owner.attempts += 1
            if self.owner.fail_next > 0:
                self.owner.fail_next -= 1
                return "451 4.3.0 temporary failure, try again later"
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            part = msg.get_body(preferencelist=("plain", "html"))
            text = part.get_content() if part is not None else ""
            self.owner.messages.append(
                Mail(
                    sender=envelope.mail_from,
                    rcpts=list(envelope.rcpt_tos),
                    subject=str(msg["Subject"]),
                    text=text,
                    headers={k: str(v) for k, v in msg.items()},
                )
            )
        return "250 OK"


class _EphemeralController(Controller):
    """aiosmtpd's Controller binds port 0 fine but then probes the *configured* port."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Mail] = []
        self.attempts = 0
        self.fail_next = 0
        self._controller = _EphemeralController(
            _SmtpHandler(self), hostname="127.0.0.1", port=0, ready_timeout=10
        )

    @property
    def port(self) -> int:
        return self._controller.port

    def url(self, to: str = "ops@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=monitor@example.com&to={to}"

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def subjects(self) -> list[str]:
        with self.lock:
            return [m.subject for m in self.messages]


@dataclass
class Request:
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class HttpReceiver:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.attempts = 0
        self.fail_next = 0
        self.fail_status = 500
        self._port = port
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()
        #: while set, requests hang until ``release()`` (a target that accepts and stalls)
        self.hang = False
        self._released = asyncio.Event()

    def release(self) -> None:
        self.hang = False
        self._released.set()

    @property
    def port(self) -> int:
        return self._port

    def json_url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def slack_webhook_base(self) -> str:
        """Value for ``apprise.plugins.slack.NotifySlack.webhook_url`` in a test."""
        return f"http://127.0.0.1:{self.port}/services"

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        raw = await request.read()
        if self.hang:
            await self._released.wait()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=self.fail_status, text="temporarily broken")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Request(request.path, body, dict(request.headers)))
        self.arrived.set()
        return web.Response(text="ok")

    async def start(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        if not self._port:
            server = site._server
            assert server is not None
            self._port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def titles(self) -> list[str]:
        """Titles of json:// posts (``title``) or Slack posts (``attachments[0].title``)."""
        out = []
        for r in self.requests:
            b = r.body
            if isinstance(b, dict) and "title" in b:
                out.append(b["title"])
            elif isinstance(b, dict) and b.get("attachments"):
                out.append(b["attachments"][0].get("title"))
        return out


async def wait_until(predicate: Any, limit_s: float = 10.0, step: float = 0.005) -> None:
    """Poll ``predicate()`` until true; fails the test after ``limit_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
