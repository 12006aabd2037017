"""AppriseNotifier against real local receivers: json://, Slack (pointed at a local server),
mailto:// (aiosmtpd); failures are reported with redacted reasons and never leak secrets."""

from __future__ import annotations

import logging
import time

import pytest

from alerts.notify import AppriseNotifier, DeliveryResult, labelled, protect_logs
from alerts.redact import redact_url, scrub, secret_fragments
from alerts.settings import NotifyTarget
from tests.support_receivers import HttpReceiver, SmtpReceiver, free_port

SLACK_TOKENS = ("T1SECRETX", "B2SECRETY", "C3SECRETSECRETSECRETSECZ")
SLACK_URL = "slack://" + "/".join(SLACK_TOKENS) + "/#alerts"
ALL = ("info", "warning", "critical")


def target(url: str, name: str = "", severities: tuple[str, ...] = ALL) -> NotifyTarget:
    return NotifyTarget(name=name, url=url, severities=severities)


@pytest.fixture
async def http():
    rx = await HttpReceiver().start()
    yield rx
    await rx.stop()


@pytest.fixture
def smtp():
    rx = SmtpReceiver().start()
    yield rx
    rx.stop()


@pytest.fixture
def slack_at(monkeypatch):
    """Point apprise's Slack plugin (which hard-codes hooks.slack.com) at a local server."""
    import apprise.plugins.slack

    def point(base: str) -> None:
        monkeypatch.setattr(apprise.plugins.slack.NotifySlack, "webhook_url", base)

    return point


def notifier(**kw) -> AppriseNotifier:
    # min_interval_s=0: apprise would otherwise sleep 1.2 s (Slack) / 5.5 s (e-mail) between
    # sends through one plugin instance; the tests send several messages per target.
    kw.setdefault("timeout_s", 5.0)
    return AppriseNotifier(min_interval_s=0, **kw)


async def test_json_delivery_carries_title_body_and_type(http):
    n = notifier()
    res = await n.send(
        target(http.json_url()), "[CRITICAL] FIRING x: y", "line 1\nline 2", "critical"
    )
    assert res == DeliveryResult(True, None)
    assert len(http.requests) == 1
    body = http.requests[0].body
    assert body["title"] == "[CRITICAL] FIRING x: y"
    assert body["message"] == "line 1\nline 2"
    assert body["type"] == "failure"
    ok = await n.send(target(http.json_url()), "[INFO] RESOLVED x", "fine", "ok")
    assert ok.ok and http.requests[1].body["type"] == "success"


async def test_slack_plugin_against_local_server_without_throttle(http, slack_at):
    slack_at(http.slack_webhook_base())
    n = notifier()
    t = target(SLACK_URL)
    started = time.monotonic()
    for i in range(3):
        res = await n.send(t, f"[WARNING] FIRING rule-{i}: v", f"body {i}", "warning")
        assert res.ok, res.error
    # apprise's Slack throttle is 1.2 s per send: three sends in well under that prove it is off
    assert time.monotonic() - started < 1.2
    assert [r.path for r in http.requests] == ["/services/" + "/".join(SLACK_TOKENS)] * 3
    assert http.titles() == [f"[WARNING] FIRING rule-{i}: v" for i in range(3)]
    assert http.requests[0].body["attachments"][0]["text"] == "body 0"
    assert http.requests[0].body["channel"] == "#alerts"


def test_throttle_default_is_kept_in_production():
    assert AppriseNotifier().min_interval_s is None


async def test_mailto_against_aiosmtpd(smtp):
    n = notifier()
    res = await n.send(
        target(smtp.url()), "[CRITICAL] FIRING hashprice-floor: low", "Body ✓", "critical"
    )
    assert res.ok, res.error
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail.subject == "[CRITICAL] FIRING hashprice-floor: low"
    assert mail.rcpts == ["ops@example.com"]
    assert mail.sender == "monitor@example.com"
    assert "Body ✓" in mail.text


async def test_smtp_temporary_failure_is_reported(smtp):
    smtp.fail_next = 1
    n = notifier()
    res = await n.send(target(smtp.url()), "t", "b", "info")
    assert not res.ok and res.error
    assert smtp.messages == []
    again = await n.send(target(smtp.url()), "t", "b", "info")
    assert again.ok and smtp.subjects() == ["t"]


async def test_refused_connection_error_is_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    url = f"json://127.0.0.1:{port}/hook/SECRETPATH123?token=SECRETQUERY99"
    res = await notifier().send(target(url), "t", "b", "info")
    assert not res.ok
    assert "connection" in (res.error or "").lower()
    for secret in ("SECRETPATH123", "SECRETQUERY99"):
        assert secret not in (res.error or "")
        assert secret not in caplog.text
    assert "apprise" in {r.name for r in caplog.records}  # apprise did log: we checked it


async def test_http_500_reason_is_reported(http):
    http.fail_next = 1
    res = await notifier().send(target(http.json_url("hook?token=SECRETQUERY99")), "t", "b", "info")
    assert not res.ok
    assert "500" in (res.error or "")
    assert "SECRETQUERY99" not in (res.error or "")


async def test_slack_logs_never_show_tokens(http, slack_at, caplog):
    caplog.set_level(logging.DEBUG)
    slack_at(http.slack_webhook_base())
    res = await notifier().send(target(SLACK_URL), "t", "b", "info")
    assert res.ok
    # apprise logs "Slack POST URL: <full webhook>" and urllib3 the request path at DEBUG
    assert "Slack POST URL" in caplog.text
    assert "/services/" in caplog.text
    for token in SLACK_TOKENS:
        assert token not in caplog.text


async def test_dead_slack_error_and_logs_are_redacted(slack_at, caplog):
    caplog.set_level(logging.DEBUG)
    slack_at(f"http://127.0.0.1:{free_port()}/services")
    res = await notifier().send(target(SLACK_URL), "t", "b", "critical")
    assert not res.ok and res.error
    for token in SLACK_TOKENS:
        assert token not in res.error
        assert token not in caplog.text


async def test_invalid_url_is_a_failed_delivery_not_a_crash(caplog):
    caplog.set_level(logging.DEBUG)
    res = await notifier().send(target("nosuchscheme://SECRETTOKEN12345/x"), "t", "b", "info")
    assert not res.ok
    assert "invalid or unsupported" in (res.error or "")
    assert "SECRETTOKEN12345" not in (res.error or "")
    assert "SECRETTOKEN12345" not in caplog.text


async def test_stalled_target_times_out(http):
    http.hang = True
    started = time.monotonic()
    res = await notifier(timeout_s=0.3).send(target(http.json_url()), "t", "b", "info")
    assert not res.ok
    assert "time" in (res.error or "").lower()
    assert time.monotonic() - started < 2.5
    http.release()


def test_labels_are_names_or_positions():
    ts = [target("json://a", "ops"), target("json://b"), target("json://c", "mail")]
    assert [label for label, _ in labelled(ts)] == ["ops", "2", "mail"]


@pytest.mark.parametrize(
    ("url", "shown", "hidden"),
    [
        ("slack://T1SECRETX/B2SECRETY/C3SECRETSECRETSECRETSECZ", "slack://T…/B…/****", "SECRET"),
        ("mailto://user:PASSW0RD@smtp.example.com?to=a@example.com", "user:****@", "PASSW0RD"),
        ("json://127.0.0.1:8080/hook?token=SECRETQ", "token=****", "SECRETQ"),
    ],
)
def test_redact_url(url, shown, hidden):
    red = redact_url(url)
    assert shown in red
    assert hidden not in red


def test_scrub_removes_quoted_paths_and_urls():
    frags = secret_fragments(SLACK_URL)
    text = (
        "Slack POST URL: https://hooks.slack.com/services/" + "/".join(SLACK_TOKENS) + " and "
        '"POST /services/' + "/".join(SLACK_TOKENS) + ' HTTP/1.1" 200'
    )
    clean = scrub(text, frags)
    assert all(tok not in clean for tok in SLACK_TOKENS)
    assert "hooks.slack.com/services/T…/B…/****" in clean


def test_protect_logs_filters_apprise_records(caplog):
    caplog.set_level(logging.DEBUG)
    protect_logs(["json://127.0.0.1/hook?token=SECRETTOKEN77"])
    logging.getLogger("apprise").debug("posting to %s", "http://x/hook?token=SECRETTOKEN77")
    assert "posting to" in caplog.text
    assert "SECRETTOKEN77" not in caplog.text
