"""Secrets and exposure, end to end.

A headless collector runs with secrets in its notify URLs (a Slack token, an SMTP password and
a json:// query token, all from ``${ENV}``), at debug log level, with a rule that fires at
once so every target is delivered to (Slack fails through a dead local proxy, SMTP fails at
login, json:// succeeds). Afterwards no secret is in any log line (stderr and --log-file), any
text cell of any table, or the output of status/alerts/check-config/--show-config/test-alert.
A config file with a clear-text secret that others can read gets a warning; the demo and test
servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support_cli import (
    HASHWATCH,
    LOOPBACK,
    Upstreams,
    all_text_cells,
    arun,
    assert_clean_logs,
    cli_env,
    db_count,
    db_rows,
    listening_sockets,
    local_upstreams,
    run,
    start_collector,
    stop,
    wait_for,
    wait_running,
)
from support_receivers import HttpReceiver, SmtpReceiver, free_port

from feeds.settings import SOURCE_NAMES

SLACK_TOKEN = "xSlackTok3nSecretQ7zW"
SMTP_PASSWORD = "PwSmtpS3cretK9xV"
JSON_TOKEN = "TokJs0nSecretR4mB"
SECRETS = (SLACK_TOKEN, SMTP_PASSWORD, JSON_TOKEN)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with local_upstreams() as up:
        yield up


def secret_env(proxy_port: int) -> dict[str, str]:
    return {
        "HW_SLACK_TOKEN": SLACK_TOKEN,
        "HW_SMTP_PASSWORD": SMTP_PASSWORD,
        "HW_JSON_TOKEN": JSON_TOKEN,
        # Slack's webhook host is fixed in apprise: send it to a dead local proxy, so the
        # delivery fails here (and its failure path is exercised) instead of going out.
        "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
        "HTTP_PROXY": f"http://127.0.0.1:{proxy_port}",
        "https_proxy": f"http://127.0.0.1:{proxy_port}",
        "http_proxy": f"http://127.0.0.1:{proxy_port}",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def targets_toml(smtp_port: int, json_port: int) -> str:
    return f"""
[[notify.targets]]
name = "slack"
url = "slack://T0AAAAAAA/B0BBBBBBB/${{HW_SLACK_TOKEN}}/#ops"

[[notify.targets]]
name = "mail"
url = "mailto://alice:${{HW_SMTP_PASSWORD}}@127.0.0.1:{smtp_port}?from=a@example.com&to=b@example.com"

[[notify.targets]]
name = "hook"
url = "json://127.0.0.1:{json_port}/hook?token=${{HW_JSON_TOKEN}}"

[[rules]]
name = "price-seen"
metric = "price_usd"
severity = "critical"
above = 1000.0
"""


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}"


@pytest.mark.slow
async def test_secrets_never_leak(tmp_path: Path, upstreams: Upstreams) -> None:
    http = await HttpReceiver().start()
    smtp = SmtpReceiver().start()
    env = secret_env(free_port())
    log_file = tmp_path / "collector.log"
    try:
        config = upstreams.feeds_toml() + targets_toml(smtp.port, http.port)
        c = await start_collector(
            tmp_path,
            config,
            env=env,
            extra_args=["--log-level", "debug", "--log-file", str(log_file)],
        )
        try:
            await wait_running(upstreams, c)
            # The firing reaches the json target (with its token: that is the target's job) ...
            await wait_for(lambda: bool(http.requests), 15.0, "the json:// delivery")
            assert "FIRING price-seen" in str(http.requests[0].body)
            # ... and the other two targets have been tried and failed at least once.
            await wait_for(
                lambda: db_count(c.db, "outbox", "attempts >= 1 AND delivered_at IS NULL") >= 2,
                15.0,
                "failed delivery attempts to slack and mail",
            )
            errors = [r[0] for r in db_rows(c.db, "SELECT last_error FROM outbox")]
            assert any(errors), "the failures are recorded"

            # CLI output while the collector runs, with the secrets in the environment.
            outputs = {}
            for args in (
                ["status"],
                ["status", "--json"],
                ["alerts"],
                ["alerts", "--json"],
                ["check-config"],
                ["--show-config"],
            ):
                r = await arun([*args, "--config", c.config, "--db", c.db], tmp_path, env=env)
                assert r.code == 0, (args, r.err)
                outputs[" ".join(args)] = r.both
            r = await arun(["test-alert", "--config", c.config, "--db", c.db], tmp_path, env=env)
            assert r.code == 1, "slack and mail fail"
            assert "target hook: ok" in r.out
            assert "target slack: FAILED" in r.out and "target mail: FAILED" in r.out
            outputs["test-alert"] = r.both
            assert "price-seen" in outputs["alerts"]
            assert "slack://T" in outputs["check-config"], "targets are shown, redacted"
            assert "****" in outputs["check-config"] and "****" in outputs["--show-config"]
            for where, text in outputs.items():
                assert_no_secret(f"`hashwatch {where}`", text)
                assert "Traceback" not in text

            c.proc.send_signal(signal.SIGTERM)
            code, _ = await c.wait_exit(5.0)
            assert code == 0, c.stderr
        finally:
            await c.kill()
        stderr = c.stderr
        assert "DEBUG" in stderr, "debug logging was on: the noisiest case"
        assert_clean_logs(stderr)
        assert_no_secret("stderr log", stderr)
        assert_no_secret("--log-file", log_file.read_text())
        cells = all_text_cells(c.db)
        assert any("slack" in cell for cell in cells), "targets are recorded (by name)"
        for cell in cells:
            assert_no_secret("the database", cell)
        assert_no_secret_in_files(tmp_path, "collector.db")
    finally:
        smtp.stop()
        await http.stop()


def assert_no_secret_in_files(directory: Path, prefix: str) -> None:
    """The database file, its WAL and anything else next to it, byte for byte."""
    for f in directory.iterdir():
        if f.name.startswith(prefix) and f.is_file():
            data = f.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{secret} in {f.name}"


# ------------------------------------------------------------------ file permissions
CLEAR_SECRET = "ClearTextS3cretNotInEnv"


def _secret_config(tmp_path: Path, mode: int, *, via_env: bool = False) -> Path:
    cfg = tmp_path / "secret.toml"
    token = "${HW_SLACK_TOKEN}" if via_env else CLEAR_SECRET
    cfg.write_text(f'[[notify.targets]]\nurl = "slack://T0AAAAAAA/B0BBBBBBB/{token}"\n')
    cfg.chmod(mode)
    return cfg


def test_world_readable_secret_config_warns(tmp_path: Path) -> None:
    cfg = _secret_config(tmp_path, 0o644)
    r = run(["check-config", cfg], tmp_path)
    assert r.code == 0, r.err
    assert "WARNING" in r.err and "readable by group/others" in r.err
    assert "chmod 600" in r.err
    assert CLEAR_SECRET not in r.both


def test_private_secret_config_does_not_warn(tmp_path: Path) -> None:
    cfg = _secret_config(tmp_path, 0o600)
    r = run(["check-config", cfg], tmp_path)
    assert r.code == 0, r.err
    assert "readable by group/others" not in r.err
    assert CLEAR_SECRET not in r.both


def test_env_secret_in_readable_config_does_not_warn(tmp_path: Path) -> None:
    cfg = _secret_config(tmp_path, 0o644, via_env=True)
    r = run(["check-config", cfg], tmp_path, env={"HW_SLACK_TOKEN": SLACK_TOKEN})
    assert r.code == 0, r.err
    assert "readable by group/others" not in r.err
    assert_no_secret("check-config", r.both)


async def test_collector_warns_on_readable_secret_config(tmp_path: Path) -> None:
    """``run --headless`` warns at start-up too (then is stopped at once)."""
    text = _secret_config(tmp_path, 0o640).read_text()
    feeds_off = "".join(f"\n[feeds.{n}]\nenabled = false\n" for n in SOURCE_NAMES)
    c = await start_collector(tmp_path, text + feeds_off, secret_env(free_port()), mode=0o640)
    try:
        await wait_for(lambda: "readable by group/others" in c.stderr, 15.0, "warning")
    finally:
        code = await stop(c.proc)
    assert code == 0
    assert CLEAR_SECRET not in c.stderr


# ------------------------------------------------------------------ listening sockets
@linux_only
async def test_test_servers_bind_loopback_only() -> None:
    async with local_upstreams() as up:
        http = await HttpReceiver().start()
        smtp = SmtpReceiver().start()
        try:
            ports = {up.mempool.port, up.exchange.port, http.port, smtp.port}
            mine = [(a, p) for a, p in listening_sockets(os.getpid()) if p in ports]
            assert {p for _, p in mine} == ports, mine
            assert all(a in LOOPBACK for a, _ in mine), mine
        finally:
            smtp.stop()
            await http.stop()


@linux_only
@pytest.mark.slow
async def test_demo_binds_loopback_only(tmp_path: Path) -> None:
    """Every socket ``hashwatch demo`` listens on is on 127.0.0.1."""
    err = tmp_path / "demo.log"
    with err.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            str(HASHWATCH),
            "demo",
            "--headless",
            "--duration",
            "20",
            "--db",
            str(tmp_path / "demo.db"),
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=f,
        )
    try:
        found: list[tuple[str, int]] = []

        def listening() -> bool:
            assert proc.returncode is None, err.read_text()
            found[:] = listening_sockets(proc.pid)
            # the mempool and the exchange server, and the collector is connected
            return len(found) >= 2 and "-> live" in err.read_text()

        await wait_for(listening, 15.0, "the demo servers to listen")
        assert all(addr in LOOPBACK for addr, _ in found), found
    finally:
        code = await stop(proc)
    assert code == 0, err.read_text()
    assert "REPLAY" in err.read_text()


def test_clear_text_secrets_are_redacted_in_config_output(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        '[[notify.targets]]\nurl = "slack://T0AAAAAAA/B0BBBBBBB/ClearSlackS3cret"\n'
        '[[notify.targets]]\nurl = "mailto://bob:ClearSmtpPw123@smtp.example.com?to=a@b.c"\n'
        '[[notify.targets]]\nurl = "json://127.0.0.1:9/x?token=ClearJsonTok77"\n'
    )
    cfg.chmod(0o600)
    for args in (["check-config", cfg], ["--show-config", "--config", cfg]):
        r = run(args, tmp_path)
        assert r.code == 0, r.err
        assert "slack://T" in r.out and "bob:****@smtp.example.com" in r.out
        assert "token=****" in r.out
        for secret in ("ClearSlackS3cret", "ClearSmtpPw123", "ClearJsonTok77"):
            assert secret not in r.both, (args, secret)
