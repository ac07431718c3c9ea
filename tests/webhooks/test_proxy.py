"""Outbound HTTP through the operator's proxy (`BASTION_OUTBOUND_PROXY`): webhooks, SIEM
HTTP sinks and alert channels reach their destination through a real forward proxy
(CONNECT for https), each destination still vetted by the SSRF policy before anything
is sent, the proxy's password never shown."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.alerts import deliver as alerts
from bastion.api.state import AppState
from bastion.audit.siem_transport import HttpTransport
from bastion.core.netguard import GuardedTransport, OutboundRefused
from tests.factories import Factory
from tests.receivers import ForwardProxy, Pki, StartHttp
from tests.webhooks.test_outbound import deliver, deliveries, enqueue, subscribe, world

__all__ = ["world"]  # the fixture, shared with the outbound tests

StartProxy = Callable[..., ForwardProxy]
PASSWORD = "pr0xy-s3cret-pw"


def test_http_goes_through_the_proxy_which_is_not_itself_vetted(
    start_http: StartHttp, start_proxy: StartProxy
) -> None:
    receiver, proxy = start_http(), start_proxy()
    # Only the destination's name is allowed: the proxy, on loopback too, is the
    # operator's and is not checked against the allowlist.
    transport = GuardedTransport(["localhost"], proxy=proxy.url(), plaintext=["localhost"])
    with httpx.Client(transport=transport, timeout=2) as client:
        answer = client.post(f"http://localhost:{receiver.port}/hook", content=b"{}")
    assert answer.status_code == 200
    assert proxy.requests == [f"POST http://localhost:{receiver.port}/hook"]
    [request] = receiver.requests
    assert (request.path, request.headers["host"]) == ("/hook", f"localhost:{receiver.port}")


def test_https_is_tunnelled_and_the_certificate_still_names_the_host(
    pki: Pki, start_http: StartHttp, start_proxy: StartProxy
) -> None:
    receiver, proxy = start_http(pki.server_context()), start_proxy()
    trust = ssl.create_default_context(cafile=str(Path(pki.ca_file)))
    transport = GuardedTransport(["localhost"], verify=trust, proxy=proxy.url())
    with httpx.Client(transport=transport, timeout=2) as client:
        answer = client.post(f"https://localhost:{receiver.port}/tls", content=b"x")
    assert answer.status_code == 200
    assert proxy.requests == [f"CONNECT localhost:{receiver.port}"]
    assert [r.path for r in receiver.requests] == ["/tls"]


def test_an_internal_destination_is_refused_before_the_proxy_is_asked(
    start_http: StartHttp, start_proxy: StartProxy
) -> None:
    receiver, proxy = start_http(), start_proxy()
    with (
        httpx.Client(
            transport=GuardedTransport([], proxy=proxy.url(), plaintext=["127.0.0.0/8"]),
            timeout=2,
        ) as client,
        pytest.raises(OutboundRefused, match="internal address"),
    ):
        client.post(receiver.url("/hook"), content=b"{}")
    assert proxy.requests == []
    assert receiver.requests == []


def test_proxy_credentials_are_sent_and_never_shown(
    start_http: StartHttp, start_proxy: StartProxy
) -> None:
    receiver, proxy = start_http(), start_proxy(credentials=f"egress:{PASSWORD}")
    good = GuardedTransport(
        ["localhost"], proxy=proxy.url(f"egress:{PASSWORD}"), plaintext=["localhost"]
    )
    assert PASSWORD not in repr(good)
    with httpx.Client(transport=good, timeout=2) as client:
        assert client.post(f"http://localhost:{receiver.port}/a", content=b"1").status_code == 200
    bad = GuardedTransport(["localhost"], proxy=proxy.url("egress:wrong"), plaintext=["localhost"])
    with httpx.Client(transport=bad, timeout=2) as client:
        assert client.post(f"http://localhost:{receiver.port}/b", content=b"2").status_code == 407
    assert str(proxy.authorizations[0]).startswith("Basic ")
    assert [r.path for r in receiver.requests] == ["/a"]


def test_webhook_deliveries_go_through_the_proxy(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp, start_proxy: StartProxy
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    proxy = start_proxy(credentials=f"egress:{PASSWORD}")
    sub = subscribe(client, org, receiver.url("/hooks"))
    enqueue(state, org.id, "approval.requested", {"id": "apr_p"})
    assert deliver(state, proxy=proxy.url(f"egress:{PASSWORD}")) == 1
    assert proxy.requests == [f"POST {receiver.url('/hooks')}"]
    assert json.loads(receiver.requests[0].body)["data"] == {"id": "apr_p"}

    enqueue(state, org.id, "approval.requested", {"id": "apr_q"})
    assert deliver(state, proxy=proxy.url("egress:wrong")) == 0  # 407: retried later
    logged = deliveries(client, org, sub["id"])
    assert PASSWORD not in json.dumps(logged)
    assert any(d["last_status_code"] == 407 for d in logged)


def test_siem_http_sink_and_alert_channels_go_through_the_proxy(
    start_http: StartHttp, start_proxy: StartProxy
) -> None:
    receiver, proxy = start_http(), start_proxy()
    allow = ["127.0.0.0/8"]
    with HttpTransport(
        receiver.url("/ocsf"),
        kind="ocsf",
        timeout=2,
        allow=allow,
        proxy=proxy.url(),
        plaintext=allow,
    ) as transport:
        transport.send([{"class_uid": 3002}])
    alerts._post(receiver.url("/slack"), b'{"text":"t"}', {}, allow, proxy.url(), allow)
    assert proxy.requests == [f"POST {receiver.url('/ocsf')}", f"POST {receiver.url('/slack')}"]
    assert [r.path for r in receiver.requests] == ["/ocsf", "/slack"]


def test_the_proxy_setting_is_an_http_url_and_its_password_is_hidden(tmp_path: Path) -> None:
    from bastion.core.config import ConfigError, load_settings

    settings = load_settings(data_dir=tmp_path, outbound_proxy=f"http://u:{PASSWORD}@proxy:3128")
    assert settings.proxy_url == f"http://u:{PASSWORD}@proxy:3128"
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in repr(alerts.Notifier(keys=None, allow=[], proxy=settings.proxy_url))  # type: ignore[arg-type]
    for bad in (f"socks5://u:{PASSWORD}@proxy:1080", f"u:{PASSWORD}@proxy", "http://"):
        with pytest.raises(ConfigError) as refused:
            load_settings(data_dir=tmp_path, outbound_proxy=bad)
        assert "BASTION_OUTBOUND_PROXY" in str(refused.value)
        assert PASSWORD not in str(refused.value)
