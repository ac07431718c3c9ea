"""DNS rebinding: a destination name that resolves to a public address when it is
checked and to an internal one when the connection is made. Outbound webhook deliveries
connect through `GuardedTransport`, which vets the address it connects to; the Host
header, TLS SNI and certificate check keep naming the host."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.api.state import AppState
from bastion.core.netguard import GuardedTransport, OutboundRefused, check_destination
from tests.factories import Factory
from tests.receivers import Pki, StartHttp
from tests.webhooks.test_outbound import deliver, deliveries, enqueue, subscribe, world

__all__ = ["world"]  # the fixture, shared with the outbound tests

PUBLIC = "93.184.215.14"  # a public address: never connected to by these tests
LOOPBACK = "127.0.0.1"
REBINDING = "rebind.bastion.test"


Resolver = Callable[..., Any]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The process resolver answers REBINDING with PUBLIC the first time and LOOPBACK
    from then on (what an attacker's DNS server with a zero TTL does); every other name
    resolves as usual. Returns the answers given, in order."""
    real: Resolver = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != REBINDING:
            return real(host, port, *args, **kwargs)
        address = PUBLIC if not answers else LOOPBACK
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_name_rebound_after_its_check_is_refused_by_the_guarded_transport(
    rebinding: list[str], start_http: StartHttp
) -> None:
    receiver = start_http()
    url = f"http://{REBINDING}:{receiver.port}/hook"
    check_destination(REBINDING, receiver.port, ())  # public: passes
    with (
        httpx.Client(transport=GuardedTransport((), plaintext=[REBINDING]), timeout=2) as guarded,
        pytest.raises(OutboundRefused),
    ):
        guarded.post(url, content=b"{}")
    assert rebinding == [PUBLIC, LOOPBACK]
    assert receiver.requests == []
    # What the guard prevents: a client resolving on its own after the check reaches
    # the internal address (this is the window the transport closes).
    with httpx.Client(timeout=2, trust_env=False) as unguarded:
        assert unguarded.post(url, content=b"{}").status_code == 200
    assert len(receiver.requests) == 1


def test_a_webhook_delivery_to_a_rebound_name_is_refused(
    world: tuple[TestClient, Factory, AppState],
    rebinding: list[str],
    start_http: StartHttp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked at creation (public), resolved again when delivering (loopback, which
    the delivery's policy does not allow): refused, nothing reaches the receiver."""
    client, factory, state = world
    # Plain http:// to the name (not to its addresses): no lookup of its own.
    monkeypatch.setattr(state.settings, "outbound_plaintext_allow", [REBINDING])
    org = factory.org()
    receiver = start_http()
    sub = subscribe(client, org, f"http://{REBINDING}:{receiver.port}/hook")
    enqueue(state, org.id, "approval.requested", {"id": "apr_rebind"})
    assert deliver(state, allow=()) == 0
    assert rebinding == [PUBLIC, LOOPBACK]
    assert receiver.requests == []
    (refused,) = deliveries(client, org, sub["id"])
    assert refused["last_error"] == "destination refused (SSRF guard)"


def test_the_guarded_transport_connects_to_the_vetted_address_keeping_the_host(
    monkeypatch: pytest.MonkeyPatch, start_http: StartHttp
) -> None:
    answers: list[str] = []
    real: Resolver = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == REBINDING:
            answers.append(LOOPBACK)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (LOOPBACK, int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    receiver = start_http()
    guard = GuardedTransport(["127.0.0.0/8"], plaintext=["127.0.0.0/8"])  # http:// to loopback
    with httpx.Client(transport=guard, timeout=2) as guarded:
        for _ in range(2):
            assert guarded.post(f"http://{REBINDING}:{receiver.port}/h", content=b"x").is_success
    # One lookup per connection (this receiver closes each after answering): the vetting
    # one, which is also the address connected to.
    assert answers == [LOOPBACK] * 2
    assert [r.headers["host"] for r in receiver.requests] == [f"{REBINDING}:{receiver.port}"] * 2


def test_tls_names_the_host_not_the_vetted_address(
    monkeypatch: pytest.MonkeyPatch, start_http: StartHttp, pki: Pki
) -> None:
    """The certificate covers `localhost` and 127.0.0.1. Through the guarded transport,
    `localhost` (vetted to 127.0.0.1) verifies and is sent as SNI, while a name the
    certificate does not cover fails verification although its vetted address is in
    the certificate: the check is against the host name, as without the guard."""
    real: Resolver = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("localhost", REBINDING):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (LOOPBACK, int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    names: list[str | None] = []
    server = pki.server_context()
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc]
    receiver = start_http(server)
    trust = ssl.create_default_context(cafile=str(Path(pki.ca_file)))
    with httpx.Client(transport=GuardedTransport(["127.0.0.0/8"], verify=trust)) as guarded:
        ok = guarded.post(f"https://localhost:{receiver.port}/tls", content=b"x")
        assert ok.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            guarded.post(f"https://{REBINDING}:{receiver.port}/tls", content=b"x")
    assert names[:2] == ["localhost", REBINDING]
    assert [r.path for r in receiver.requests] == ["/tls"]
