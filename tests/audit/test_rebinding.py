"""DNS rebinding against the audit package's outbound connections: a destination name
that resolves to a public address when it is checked (sink or rule creation) and to
loopback when the delivery connects. Audit sinks (syslog over TCP, OCSF over HTTP,
Splunk HEC) and alert channels (webhook, Slack) connect only to an address vetted in the
same lookup, so the rebound name is refused and the real loopback receiver hears
nothing; with loopback allowlisted (`BASTION_OUTBOUND_ALLOW=127.0.0.0/8`, as the test
settings have it) the same receiver is reached."""

from __future__ import annotations

import base64
import dataclasses
import errno
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import create_app, notifier
from bastion.audit import sinks
from bastion.audit.siem_transport import DeliveryError, HttpTransport, SyslogTransport
from bastion.core.clock import clock
from bastion.core.netguard import OutboundRefused, check_destination
from bastion.webhooks import verify
from tests.conftest import make_settings
from tests.factories import Factory, Org
from tests.receivers import Pki, StartHttp, StartSyslog

PUBLIC = "93.184.215.14"  # a public address: never connected to by these tests
LOOPBACK = "127.0.0.1"
REBINDING = "rebind.bastion.test"
LOOPBACK_ALLOWED = ["127.0.0.0/8"]
SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
TIMEOUT = 2.0

Resolver = Callable[..., Any]


def _answer(address: str, port: Any) -> list[Any]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


class Dns:
    """An attacker's DNS server with a zero TTL for REBINDING: the first lookup, and the
    first after `rebind()`, answers PUBLIC (what a check sees); later ones answer
    LOOPBACK (what a second lookup, to connect, would get). Connections to PUBLIC are
    recorded in `dialled` and refused: the tests never leave the machine."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.dialled: list[str] = []
        self._public_next = True

    def rebind(self) -> None:
        self._public_next = True

    def answer(self) -> str:
        address = PUBLIC if self._public_next else LOOPBACK
        self._public_next = False
        self.answers.append(address)
        return address


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Dns:
    """`Dns` in place of the process resolver for REBINDING (other names resolve as
    usual), and in front of `socket.create_connection` for PUBLIC."""
    real_resolve: Resolver = socket.getaddrinfo
    real_connect: Resolver = socket.create_connection
    dns = Dns()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != REBINDING:
            return real_resolve(host, port, *args, **kwargs)
        return _answer(dns.answer(), port)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        if address[0] == PUBLIC:
            dns.dialled.append(PUBLIC)
            raise ConnectionRefusedError(errno.ECONNREFUSED, "not reachable from tests")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return dns


@pytest.fixture
def world(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory, Any]]:
    """An app whose settings allowlist loopback (`make_settings`): creation checks pass
    for loopback, and deliveries given `state.settings.outbound_allow` may reach it."""
    # Plain transport to loopback and to REBINDING by name (no lookup of its own).
    plaintext = [*LOOPBACK_ALLOWED, REBINDING]
    app = create_app(make_settings(data_dir, database_url, outbound_plaintext_allow=plaintext))
    assert app.state.bastion.settings.outbound_allow == LOOPBACK_ALLOWED
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, Factory(app.state.bastion, c), app.state.bastion


# --- audit sinks ----------------------------------------------------------------------


def _sink(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/audit-sinks", json={"name": "siem", **body}, headers=org.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _sink_status(client: TestClient, org: Org, sink_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orgs/{org.id}/audit-sinks/{sink_id}", headers=org.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _deliver_sink(state: Any, sink_id: str, allow: list[str]) -> int:
    """Deliver this sink only (other tests' sinks share the database)."""
    stores = sinks.Stores(read=state.sessions, write=state.write_sessions)
    plaintext = state.settings.outbound_plaintext_allow
    return sinks.deliver(stores, sink_id, state.root_keys, allow, plaintext=plaintext)


def test_a_syslog_sink_to_a_rebound_name_is_refused(
    world: tuple[TestClient, Factory, Any], rebinding: Dns, start_syslog: StartSyslog
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_syslog()
    sink = _sink(client, org, type="syslog", format="json", host=REBINDING, port=receiver.port)
    assert rebinding.answers == [PUBLIC]  # the creation check saw a public address

    # Loopback by delivery time, not allowlisted (the default): refused.
    assert _deliver_sink(state, sink["id"], []) == 0
    assert rebinding.answers == [PUBLIC, LOOPBACK]  # one lookup, vetted, refused
    refused = _sink_status(client, org, sink["id"])
    assert (refused["status"], refused["failures"], refused["lag"]) == ("failing", 1, 1)
    assert "internal address" in refused["last_error"]

    # Public for the delivery's first lookup, loopback for any second one: the
    # connection goes to the vetted (public) address, never to a re-resolved loopback.
    rebinding.rebind()
    assert _deliver_sink(state, sink["id"], []) == 0
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC]
    assert rebinding.dialled == [PUBLIC]
    assert _sink_status(client, org, sink["id"])["failures"] == 2
    assert receiver.connections == 0
    assert receiver.messages == []

    # The same receiver, with loopback allowlisted as the settings have it: reached.
    assert _deliver_sink(state, sink["id"], state.settings.outbound_allow) == 1
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC, LOOPBACK]  # one per connection
    [message] = receiver.wait_for(1)
    assert b"audit_sink.created" in message
    healthy = _sink_status(client, org, sink["id"])
    assert (healthy["status"], healthy["failures"], healthy["lag"]) == ("healthy", 0, 0)


@pytest.mark.parametrize(
    ("kind", "token"), [("https", None), ("splunk_hec", "hec-rebind-secret-token-1234")]
)
def test_an_http_sink_to_a_rebound_name_is_refused(
    world: tuple[TestClient, Factory, Any],
    rebinding: Dns,
    start_http: StartHttp,
    kind: str,
    token: str | None,
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    body: dict[str, Any] = {
        "type": kind,
        "format": "json",
        "url": f"http://{REBINDING}:{receiver.port}/ingest",
    }
    if token:
        body["token"] = token
    sink = _sink(client, org, **body)
    assert rebinding.answers == [PUBLIC]

    assert _deliver_sink(state, sink["id"], []) == 0
    assert rebinding.answers == [PUBLIC, LOOPBACK]
    refused = _sink_status(client, org, sink["id"])
    assert (refused["status"], refused["failures"], refused["lag"]) == ("failing", 1, 1)
    assert "internal address" in refused["last_error"]

    rebinding.rebind()  # public to the delivery's first lookup, loopback after
    assert _deliver_sink(state, sink["id"], []) == 0
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC]
    assert rebinding.dialled == [PUBLIC]
    failed = _sink_status(client, org, sink["id"])
    assert failed["failures"] == 2
    assert "ConnectError" in failed["last_error"]
    assert receiver.requests == []
    if token:
        assert token not in refused["last_error"] + failed["last_error"]

    assert _deliver_sink(state, sink["id"], state.settings.outbound_allow) == 1
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC, LOOPBACK]
    [request] = receiver.requests
    assert request.path == "/ingest"
    assert request.headers["host"] == f"{REBINDING}:{receiver.port}"  # the name, not the IP
    if token:
        assert request.headers["authorization"] == f"Splunk {token}"
    assert _sink_status(client, org, sink["id"])["status"] == "healthy"


# --- alert channels -------------------------------------------------------------------


def _alert_rule(client: TestClient, org: Org, channel: dict[str, Any]) -> None:
    response = client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": "exports", "kind": "data_export", "channels": [channel]},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text


def _alert(client: TestClient, org: Org) -> dict[str, Any]:
    response = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers)
    assert response.status_code == 200, response.text
    [alert] = response.json()["data"]
    return dict(alert)


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_an_alert_channel_to_a_rebound_name_is_refused(
    world: tuple[TestClient, Factory, Any],
    rebinding: Dns,
    start_http: StartHttp,
    kind: str,
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    channel: dict[str, Any] = {"type": kind, "url": f"http://{REBINDING}:{receiver.port}/hook"}
    if kind == "webhook":
        channel["secret"] = SECRET
    _alert_rule(client, org, channel)
    assert rebinding.answers == [PUBLIC]
    exported = client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    assert exported.status_code == 200

    strict = dataclasses.replace(notifier(state), allow=())
    alerts.run_round(state.sessions, state.write_sessions, strict, org.id)
    assert rebinding.answers == [PUBLIC, LOOPBACK]
    refused = _alert(client, org)
    assert (refused["notified_at"], refused["notify_attempts"]) == (None, 1)
    assert refused["notify_error"] == f"{REBINDING}: OutboundRefused"

    clock.advance(60)  # past the retry backoff
    rebinding.rebind()  # public to the send's first lookup, loopback after
    alerts.run_round(state.sessions, state.write_sessions, strict, org.id)
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC]
    assert rebinding.dialled == [PUBLIC]
    failed = _alert(client, org)
    assert (failed["notified_at"], failed["notify_attempts"]) == (None, 2)
    assert failed["notify_error"] == f"{REBINDING}: ConnectError"
    assert receiver.requests == []

    clock.advance(60)
    alerts.run_round(
        state.sessions, state.write_sessions, notifier(state), org.id
    )  # loopback allowed
    assert rebinding.answers == [PUBLIC, LOOPBACK, PUBLIC, LOOPBACK]
    delivered = _alert(client, org)
    assert delivered["notified_at"] is not None
    assert delivered["notify_attempts"] == 3
    [request] = receiver.requests
    assert request.headers["host"] == f"{REBINDING}:{receiver.port}"
    if kind == "webhook":
        verify("standard", SECRET, request.headers, request.body)


# --- the transports -------------------------------------------------------------------


@pytest.fixture
def names_to_loopback(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """`localhost` and REBINDING resolve to 127.0.0.1; the returned mapping can be
    changed to give a name other addresses."""
    real: Resolver = socket.getaddrinfo
    table = {"localhost": [LOOPBACK], REBINDING: [LOOPBACK]}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            return [entry for address in table[host] for entry in _answer(address, port)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def test_syslog_to_a_rebound_name_is_refused_only_when_guarded(
    rebinding: Dns, start_syslog: StartSyslog
) -> None:
    receiver = start_syslog()
    check_destination(REBINDING, receiver.port, ())  # public: passes
    guarded = SyslogTransport(
        REBINDING, receiver.port, timeout=TIMEOUT, allow=(), plaintext=[REBINDING]
    )
    with guarded, pytest.raises(OutboundRefused):
        guarded.send([b"never"])
    assert rebinding.answers == [PUBLIC, LOOPBACK]
    assert receiver.connections == 0
    # The window the guard closes: a transport resolving the name again on its own after
    # the check (no `allow`) reaches loopback.
    with SyslogTransport(REBINDING, receiver.port, timeout=TIMEOUT) as unguarded:
        unguarded.send([b"through"])
    assert receiver.wait_for(1) == [b"through"]
    assert rebinding.dialled == []


def test_guarded_syslog_tries_the_next_vetted_address(
    names_to_loopback: dict[str, list[str]], start_syslog: StartSyslog
) -> None:
    receiver = start_syslog()  # listens on 127.0.0.1 only; 127.0.0.2 refuses
    names_to_loopback[REBINDING] = ["127.0.0.2", LOOPBACK]
    with SyslogTransport(
        REBINDING,
        receiver.port,
        timeout=TIMEOUT,
        allow=LOOPBACK_ALLOWED,
        plaintext=LOOPBACK_ALLOWED,
    ) as transport:
        transport.send([b"second address"])
    assert receiver.wait_for(1) == [b"second address"]


def test_guarded_syslog_tls_checks_the_host_name_not_the_address(
    names_to_loopback: dict[str, list[str]], start_syslog: StartSyslog, pki: Pki
) -> None:
    """The certificate covers `localhost` and 127.0.0.1. Connected to the vetted
    127.0.0.1, `localhost` verifies and is the SNI name; a name the certificate does not
    cover fails although the address it was vetted to is in the certificate."""
    names: list[str | None] = []
    server = pki.server_context()
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc]
    receiver = start_syslog(context=server)
    options: dict[str, Any] = {
        "tls": True,
        "ca_file": str(pki.ca_file),
        "timeout": TIMEOUT,
        "allow": LOOPBACK_ALLOWED,
    }
    with SyslogTransport("localhost", receiver.port, **options) as transport:
        transport.send([b"over tls"])
    assert receiver.wait_for(1) == [b"over tls"]
    with (
        SyslogTransport(REBINDING, receiver.port, **options) as transport,
        pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        transport.send([b"never"])
    assert names[:2] == ["localhost", REBINDING]
    assert receiver.messages == [b"over tls"]


def test_guarded_http_tls_keeps_the_ca_and_checks_the_host_name(
    names_to_loopback: dict[str, list[str]], start_http: StartHttp, pki: Pki
) -> None:
    """The sink's CA (`ca_pem`) reaches the guarded transport, and the certificate is
    checked against the URL's host, not the address connected to."""
    receiver = start_http(context=pki.server_context())
    ca_pem = pki.ca_file.read_text()
    trusted = HttpTransport(
        f"https://localhost:{receiver.port}/ocsf",
        kind="ocsf",
        ca_pem=ca_pem,
        timeout=TIMEOUT,
        allow=LOOPBACK_ALLOWED,
    )
    with trusted:
        trusted.send([{"n": 1}])
    other_name = HttpTransport(
        f"https://{REBINDING}:{receiver.port}/ocsf",
        kind="ocsf",
        ca_pem=ca_pem,
        timeout=TIMEOUT,
        allow=LOOPBACK_ALLOWED,
    )
    with other_name, pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        other_name.send([{"n": 2}])
    assert caught.value.retryable is True
    assert [r.body for r in receiver.requests] == [b'[{"n":1}]']
