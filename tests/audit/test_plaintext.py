"""Audit sinks and alert channels need encryption unless the operator allows plain
transport to the destination (`BASTION_OUTBOUND_PLAINTEXT_ALLOW`): an http:// sink or
channel, or syslog without TLS, is a 422 naming the field; a delivery is refused again
when the allowance has gone since. Email goes over SMTP with verified TLS (STARTTLS or
implicit TLS), against a real SMTP server (aiosmtpd): plain SMTP is refused unless
allowed, a login never goes out without TLS, a server offering no STARTTLS or a
certificate the client does not trust gets nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi.testclient import TestClient

from bastion.alerts import deliver
from bastion.alerts import service as alerts
from bastion.alerts.deliver import Notifier, NotifyError
from bastion.api.app import create_app, notifier
from bastion.audit import sinks
from tests.conftest import make_settings
from tests.factories import Factory, Org
from tests.receivers import Pki, StartHttp, StartSyslog, free_port

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def _app(
    data_dir: Path, database_url: str, **overrides: Any
) -> Iterator[tuple[TestClient, Factory, Any]]:
    app = create_app(make_settings(data_dir, database_url, **overrides))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, Factory(app.state.bastion, client), app.state.bastion


@pytest.fixture
def strict(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory, Any]]:
    """Loopback allowed as a destination (SSRF), but not over plain transport."""
    yield from _app(data_dir, database_url, outbound_plaintext_allow=[])


@pytest.fixture
def world(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory, Any]]:
    """The test settings: plain transport to loopback allowed."""
    yield from _app(data_dir, database_url)


def _post(client: TestClient, org: Org, path: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v1/orgs/{org.id}/{path}", json=body, headers=org.headers)


def _refused_field(response: Any) -> str:
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert "BASTION_OUTBOUND_PLAINTEXT_ALLOW" in error["message"]
    return str(error["field"])


def test_plain_sinks_and_channels_are_refused_naming_the_field(
    strict: tuple[TestClient, Factory, Any],
) -> None:
    client, factory, _ = strict
    org = factory.org()
    sink = {"name": "siem", "format": "json"}
    syslog = {**sink, "type": "syslog", "host": "127.0.0.1", "port": 514}
    assert _refused_field(_post(client, org, "audit-sinks", syslog)) == "tls"
    https = {**sink, "type": "https", "url": "http://127.0.0.1:8088/ingest"}
    assert _refused_field(_post(client, org, "audit-sinks", https)) == "url"
    hec = {**sink, "type": "splunk_hec", "url": "http://127.0.0.1:8088/e", "token": "t0ken"}
    assert _refused_field(_post(client, org, "audit-sinks", hec)) == "url"
    for channel in (
        {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": SECRET},
        {"type": "slack", "url": "http://127.0.0.1:9/slack"},
    ):
        rule = {"name": "exports", "kind": "data_export", "channels": [channel]}
        assert _refused_field(_post(client, org, "alert-rules", rule)) == "channels[0].url"
    # Encrypted, the same destinations are fine.
    assert _post(client, org, "audit-sinks", {**syslog, "tls": True}).status_code == 201
    secure = {**https, "url": "https://127.0.0.1:8088/ingest"}
    assert _post(client, org, "audit-sinks", secure).status_code == 201
    channel = {"type": "slack", "url": "https://127.0.0.1:9/slack"}
    rule = {"name": "exports", "kind": "data_export", "channels": [channel]}
    assert _post(client, org, "alert-rules", rule).status_code == 201


def _deliver(state: Any, sink_id: str, plaintext: list[str]) -> int:
    stores = sinks.Stores(read=state.sessions, write=state.write_sessions)
    return sinks.deliver(
        stores, sink_id, state.root_keys, state.settings.outbound_allow, plaintext=plaintext
    )


def test_sinks_are_refused_at_delivery_when_the_allowance_has_gone_since(
    world: tuple[TestClient, Factory, Any], start_syslog: StartSyslog, start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    syslog, http = start_syslog(), start_http()
    made = [
        _post(client, org, "audit-sinks", body)
        for body in (
            {"name": "a", "type": "syslog", "format": "json", "host": "127.0.0.1"}
            | {"port": syslog.port},
            {"name": "b", "type": "https", "format": "json", "url": http.url("/ingest")},
        )
    ]
    assert [m.status_code for m in made] == [201, 201]  # allowed when they were made
    for sink in made:
        assert _deliver(state, sink.json()["id"], []) == 0
        status = client.get(
            f"/v1/orgs/{org.id}/audit-sinks/{sink.json()['id']}", headers=org.headers
        )
        assert status.json()["status"] == "failing"
        assert "BASTION_OUTBOUND_PLAINTEXT_ALLOW" in status.json()["last_error"]
    assert syslog.connections == 0
    assert http.requests == []
    # With the allowance (as the test settings have it), the same sinks deliver.
    allowance = state.settings.outbound_plaintext_allow
    assert all(_deliver(state, m.json()["id"], allowance) > 0 for m in made)
    assert syslog.wait_for(1)
    assert len(http.requests) == 1


def test_alert_channels_are_refused_at_send_when_the_allowance_has_gone_since(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    channel = {"type": "slack", "url": receiver.url("/slack")}
    rule = {"name": "exports", "kind": "data_export", "channels": [channel]}
    assert _post(client, org, "alert-rules", rule).status_code == 201
    exported = client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    assert exported.status_code == 200
    strict = dataclasses.replace(notifier(state), plaintext=())
    alerts.run_round(state.sessions, state.write_sessions, strict, org.id)
    [alert] = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"]
    assert (alert["notified_at"], alert["notify_error"]) == (None, "127.0.0.1: OutboundRefused")
    assert receiver.requests == []


# --- email ----------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(bytes(envelope.content))
        return "250 OK"


def _accept_any(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    assert isinstance(data, LoginPassword)
    return AuthResult(success=True)


StartSmtp = Callable[..., tuple[Mailbox, int]]


@pytest.fixture
def start_smtp() -> Iterator[StartSmtp]:
    """Starts aiosmtpd servers on 127.0.0.1 (`Controller` options: `tls_context` for
    STARTTLS, `ssl_context` for implicit TLS); stops them when the test ends."""
    controllers: list[Controller] = []

    def start(**options: Any) -> tuple[Mailbox, int]:
        box, port = Mailbox(), free_port()
        controller = Controller(
            box,
            hostname="127.0.0.1",
            port=port,
            authenticator=_accept_any,
            auth_require_tls=False,  # it would take a password in clear: the client must not
            **options,
        )
        controller.start()
        controllers.append(controller)
        return box, port

    yield start
    for controller in controllers:
        controller.stop()


def _alert() -> Any:
    now = dt.datetime.now(dt.UTC)
    return SimpleNamespace(
        id="alt_x",
        rule_id="alr_x",
        kind="data_export",
        key="k",
        status="open",
        summary="an export",
        count=1,
        first_at=now,
        last_at=now,
        first_event_id=None,
        last_event_id=None,
        details={},
    )


def _email(port: int, **options: Any) -> None:
    outgoing = Notifier(keys=None, allow=(), smtp_host="127.0.0.1", smtp_port=port, **options)  # type: ignore[arg-type]
    deliver._email(_alert(), ["sec@example.com"], outgoing)


def test_plain_smtp_is_refused_unless_allowed(start_smtp: StartSmtp) -> None:
    box, port = start_smtp()
    with pytest.raises(NotifyError, match="BASTION_OUTBOUND_PLAINTEXT_ALLOW"):
        _email(port, smtp_starttls=False)
    assert box.messages == []
    _email(port, smtp_starttls=False, plaintext=["127.0.0.1"])  # allowed by the operator
    assert len(box.messages) == 1


def test_a_login_never_goes_out_without_tls(start_smtp: StartSmtp) -> None:
    box, port = start_smtp()
    credentials = {"smtp_username": "bastion", "smtp_password": "pw-never-in-clear"}
    with pytest.raises(NotifyError, match="without TLS"):
        _email(port, smtp_starttls=False, plaintext=["127.0.0.0/8"], **credentials)
    assert box.messages == []


def test_starttls_is_the_default_and_never_falls_back(start_smtp: StartSmtp) -> None:
    box, port = start_smtp()  # offers no STARTTLS
    with pytest.raises(NotifyError, match="SMTPNotSupportedError"):
        _email(port)
    assert box.messages == []


def test_starttls_verifies_the_certificate(start_smtp: StartSmtp, pki: Pki) -> None:
    box, port = start_smtp(tls_context=pki.server_context(), require_starttls=True)
    with pytest.raises(NotifyError, match="SSLCertVerificationError"):
        _email(port)  # the default trust store lacks the test CA
    assert box.messages == []
    _email(
        port,
        smtp_ca_file=str(pki.ca_file),
        smtp_username="bastion",
        smtp_password="pw-over-tls",
    )
    assert len(box.messages) == 1


def test_implicit_tls_verifies_the_certificate(start_smtp: StartSmtp, pki: Pki) -> None:
    box, port = start_smtp(ssl_context=pki.server_context())
    with pytest.raises(NotifyError, match="SSLCertVerificationError"):
        _email(port, smtp_tls=True)
    _email(port, smtp_tls=True, smtp_ca_file=str(pki.ca_file))
    assert len(box.messages) == 1


def test_the_settings_default_to_starttls(tmp_path: Path) -> None:
    from bastion.core.config import load_settings

    settings = load_settings(data_dir=tmp_path)
    assert (settings.smtp_starttls, settings.smtp_tls, settings.outbound_plaintext_allow) == (
        True,
        False,
        [],
    )
