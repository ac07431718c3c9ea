"""Outbound webhooks are https:// unless the operator allows plain http:// to the
destination (`BASTION_OUTBOUND_PLAINTEXT_ALLOW`): an http:// subscription or forward_url
is a 422 naming the field, a delivery is refused again when the allowance has gone since
(nothing reaches the receiver), and an https:// receiver whose certificate the client
does not trust gets nothing either. Also the allowance's matching rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.api.state import AppState
from bastion.core.netguard import GuardedTransport, OutboundRefused, plaintext_permitted
from tests.conftest import make_settings
from tests.factories import Factory
from tests.receivers import Pki, StartHttp
from tests.webhooks.test_outbound import deliver, deliveries, enqueue, subscribe, world

__all__ = ["world"]  # the fixture, shared with the outbound tests


@pytest.fixture
def strict(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory]]:
    """Loopback allowed as a destination (SSRF), but not over plain transport."""
    app = create_app(make_settings(data_dir, database_url, outbound_plaintext_allow=[]))
    assert app.state.bastion.settings.outbound_allow == ["127.0.0.0/8"]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, Factory(app.state.bastion, client)


def test_plain_http_subscriptions_and_forward_urls_are_refused_naming_the_field(
    strict: tuple[TestClient, Factory],
) -> None:
    client, factory = strict
    org = factory.org()
    made = client.post(
        f"/v1/orgs/{org.id}/webhook-subscriptions",
        json={"url": "http://127.0.0.1:8080/h", "events": ["*"]},
        headers=org.headers,
    )
    assert made.status_code == 422, made.text
    [error] = made.json()["errors"]
    assert error["field"] == "url"
    assert "BASTION_OUTBOUND_PLAINTEXT_ALLOW" in error["message"]
    forward = client.post(
        f"/v1/orgs/{org.id}/webhook-endpoints",
        json={
            "name": "gh",
            "provider": "github",
            "secret": "s" * 20,
            "forward_url": "http://127.0.0.1:9/x",
        },
        headers=org.headers,
    )
    assert forward.status_code == 422, forward.text
    assert forward.json()["errors"][0]["field"] == "forward_url"
    secure = client.post(
        f"/v1/orgs/{org.id}/webhook-subscriptions",
        json={"url": "https://127.0.0.1:8443/h", "events": ["*"]},
        headers=org.headers,
    )
    assert secure.status_code == 201, secure.text


def test_a_delivery_is_refused_when_the_allowance_has_gone_since(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    sub = subscribe(client, org, receiver.url("/hooks"))  # allowed: loopback in the tests
    enqueue(state, org.id, "approval.requested", {"id": "apr_plain"})
    assert deliver(state, plaintext=()) == 0  # the operator has removed the allowance
    assert receiver.requests == []
    [refused] = deliveries(client, org, sub["id"])
    assert refused["last_error"] == "127.0.0.1: refused, plain http:// is not allowed"


def test_an_https_receiver_the_client_does_not_trust_gets_nothing(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp, pki: Pki
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http(pki.server_context())  # a CA the default trust store lacks
    sub = subscribe(client, org, receiver.url("/tls", scheme="https"))
    enqueue(state, org.id, "approval.requested", {"id": "apr_tls"})
    assert deliver(state, plaintext=()) == 0
    assert receiver.requests == []
    [failed] = deliveries(client, org, sub["id"])
    assert failed["last_error"] == "127.0.0.1: ConnectError"


def test_the_guarded_transport_refuses_plain_http_unless_allowed(
    start_http: StartHttp,
) -> None:
    receiver = start_http()
    with (
        httpx.Client(transport=GuardedTransport(["127.0.0.0/8"]), timeout=2) as client,
        pytest.raises(OutboundRefused, match="BASTION_OUTBOUND_PLAINTEXT_ALLOW"),
    ):
        client.post(receiver.url("/never"), content=b"{}")
    allowed = GuardedTransport(["127.0.0.0/8"], plaintext=[f"127.0.0.1:{receiver.port}"])
    with httpx.Client(transport=allowed, timeout=2) as client:
        assert client.post(receiver.url("/ok"), content=b"{}").status_code == 200
    assert [r.path for r in receiver.requests] == ["/ok"]


@pytest.mark.parametrize(
    ("host", "port", "entries", "permitted"),
    [
        ("127.0.0.1", 80, [], False),
        ("127.0.0.1", 80, ["127.0.0.0/8"], True),
        ("127.0.0.1", 80, ["127.0.0.1"], True),
        ("127.0.0.1", 80, ["127.0.0.1:80"], True),
        ("127.0.0.1", 8080, ["127.0.0.1:80"], False),
        ("10.1.2.3", 514, ["10.0.0.0/8:514"], True),
        ("10.1.2.3", 515, ["10.0.0.0/8:514"], False),
        ("192.168.1.1", 80, ["10.0.0.0/8"], False),
        ("siem.internal", 514, ["SIEM.internal"], True),
        ("siem.internal", 514, ["siem.internal:514"], True),
        ("siem.internal", 6514, ["siem.internal:514"], False),
        ("other.internal", 514, ["siem.internal"], False),
        ("::1", 80, ["::1"], True),
        ("::1", 514, ["[::1]:514"], True),
        ("::1", 80, ["[::1]:514"], False),
        ("::1", 80, ["::/0"], True),
    ],
)
def test_which_destinations_the_allowance_admits(
    host: str, port: int, entries: list[str], permitted: bool
) -> None:
    assert plaintext_permitted(host, port, entries, addresses=[]) is permitted


def test_a_name_is_admitted_by_networks_only_when_every_address_is_inside() -> None:
    inside, outside = ["10.0.0.5", "10.0.0.6"], ["10.0.0.5", "192.0.2.1"]
    assert plaintext_permitted("siem.internal", 514, ["10.0.0.0/8"], inside)
    assert not plaintext_permitted("siem.internal", 514, ["10.0.0.0/8"], outside)
    assert not plaintext_permitted("siem.internal", 514, ["10.0.0.0/8"], [])
