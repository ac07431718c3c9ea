"""Audit sinks end to end against real receivers: syslog over TCP and TLS, OCSF over
HTTPS, Splunk HEC; at-least-once delivery with a persisted cursor, an outage with
nothing lost, a restart that resumes where it stopped, health and lag in the API, SSRF
refusal, and the background loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api.app import create_app
from bastion.audit import sinks
from bastion.audit.models import AuditSink
from bastion.core.clock import clock
from tests.conftest import make_settings
from tests.factories import Factory, Org, home_factory
from tests.receivers import Pki, StartHttp, StartSyslog, SyslogReceiver


@pytest.fixture
def world(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory, Any]]:
    app = create_app(make_settings(data_dir, database_url))
    with TestClient(app, raise_server_exceptions=False) as c:
        # Rounds and direct reads run outside a request, in the home region: so do its
        # orgs (under data residency; a region's worker runs its own region's rounds).
        yield c, home_factory(app.state.bastion, c), app.state.bastion


def _deliver(state: Any) -> int:
    stores = sinks.Stores(read=state.sessions, write=state.write_sessions)
    settings = state.settings
    return sinks.deliver_due(
        stores,
        state.root_keys,
        settings.outbound_allow,
        plaintext=settings.outbound_plaintext_allow,
    )


def _sink(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/audit-sinks", json={"name": "siem", **body}, headers=org.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _status(client: TestClient, org: Org, sink_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/orgs/{org.id}/audit-sinks/{sink_id}", headers=org.headers).json())


def _writes(client: TestClient, org: Org, n: int) -> None:
    for i in range(n):
        made = client.post(
            f"/v1/orgs/{org.id}/teams",
            json={"name": f"t-{time.time_ns()}-{i}"},
            headers=org.headers,
        )
        assert made.status_code == 201


def _events(messages: list[bytes]) -> list[dict[str, Any]]:
    """The JSON event inside each RFC 5424 message (after the BOM)."""
    return [json.loads(m.split(b"\xef\xbb\xbf", 1)[1]) for m in messages]


def test_syslog_sink_delivers_every_event_in_order(
    world: tuple[TestClient, Factory, Any], start_syslog: StartSyslog
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_syslog()
    sink = _sink(client, org, type="syslog", format="json", host="127.0.0.1", port=receiver.port)
    assert sink["status"] == "healthy"
    _writes(client, org, 5)
    assert _status(client, org, sink["id"])["lag"] == 6  # the sink's own creation + 5
    assert _deliver(state) == 6
    events = _events(receiver.wait_for(6))
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    assert events[0]["type"] == "audit_sink.created"
    assert {e["type"] for e in events[1:]} == {"team.created"}
    after = _status(client, org, sink["id"])
    assert (after["status"], after["lag"], after["delivered"]) == ("healthy", 0, 6)
    assert _deliver(state) == 0  # nothing new, nothing resent


def test_outage_then_recovery_loses_nothing(
    world: tuple[TestClient, Factory, Any],
    start_syslog: StartSyslog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, factory, state = world
    # A fixed retry delay: the jitter may pick one shorter than the real time between two
    # rounds (its bounds are tested in test_siem_transport).
    monkeypatch.setattr(sinks, "_backoff", lambda attempt, *, cap: 30.0)
    org = factory.org()
    receiver = start_syslog()
    port = receiver.port
    sink = _sink(client, org, type="syslog", format="cef", host="127.0.0.1", port=port)
    _writes(client, org, 2)
    assert _deliver(state) == 3
    receiver.wait_for(3)
    receiver.stop()

    _writes(client, org, 4)
    assert _deliver(state) == 0
    down = _status(client, org, sink["id"])
    assert down["status"] == "failing"
    assert down["lag"] == 4
    assert down["failures"] == 1
    assert down["last_error"]
    assert down["next_attempt_at"] is not None
    assert _deliver(state) == 0
    assert _status(client, org, sink["id"])["failures"] == 1  # not retried before next_attempt_at

    back = start_syslog(port=port)
    clock.advance(600)  # past any backoff
    assert _deliver(state) == 4
    cef = back.wait_for(4)
    assert all(b"CEF:0|Bastion|Bastion|" in m for m in cef)
    assert all(b"team.created" in m for m in cef)
    healthy = _status(client, org, sink["id"])
    assert (healthy["status"], healthy["lag"], healthy["failures"]) == ("healthy", 0, 0)


def test_a_restarted_server_resumes_from_the_cursor(
    data_dir: Path,
    database_url: str,
    world: tuple[TestClient, Factory, Any],
    start_syslog: StartSyslog,
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_syslog()
    sink = _sink(client, org, type="syslog", format="json", host="127.0.0.1", port=receiver.port)
    _writes(client, org, 3)
    assert _deliver(state) == 4
    _writes(client, org, 2)
    restarted = create_app(make_settings(data_dir, database_url))  # a new process's state
    with TestClient(restarted):
        assert _deliver(restarted.state.bastion) == 2
    seqs = [e["seq"] for e in _events(receiver.wait_for(6))]
    assert len(seqs) == len(set(seqs)) == 6  # nothing lost, nothing twice
    assert _status(client, org, sink["id"])["lag"] == 0


def test_syslog_over_tls_needs_the_trusted_ca(
    world: tuple[TestClient, Factory, Any], start_syslog: StartSyslog, pki: Pki
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver: SyslogReceiver = start_syslog(context=pki.server_context())
    trusted = _sink(
        client,
        org,
        type="syslog",
        format="ocsf",
        host="127.0.0.1",
        port=receiver.port,
        tls=True,
        ca_pem=pki.ca_file.read_text(),
    )
    untrusted = _sink(
        client, org, type="syslog", format="json", host="127.0.0.1", port=receiver.port, tls=True
    )
    _deliver(state)
    messages = receiver.wait_for(1)
    ocsf = json.loads(messages[0].split(b"\xef\xbb\xbf", 1)[1])
    assert ocsf["class_uid"] == 6003
    assert ocsf["metadata"]["product"]["name"] == "Bastion"
    assert _status(client, org, trusted["id"])["status"] == "healthy"
    assert _status(client, org, untrusted["id"])["status"] == "failing"


def test_https_ocsf_and_splunk_hec(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp, pki: Pki
) -> None:
    client, factory, state = world
    org = factory.org()
    https = start_http(context=pki.server_context())
    ocsf_sink = _sink(
        client,
        org,
        type="https",
        format="ocsf",
        url=https.url("/ingest", scheme="https"),
        ca_pem=pki.ca_file.read_text(),
    )
    hec = start_http()
    token = "hec-0f9a7c2e-secret-token"
    hec_sink = _sink(
        client,
        org,
        type="splunk_hec",
        format="json",
        url=hec.url("/services/collector/event"),
        token=token,
        index="security",
    )
    assert hec_sink["has_token"] is True
    assert token not in json.dumps(hec_sink)
    _writes(client, org, 2)
    _deliver(state)
    batch = json.loads(https.requests[0].body)
    assert isinstance(batch, list)
    assert {e["class_uid"] for e in batch} >= {6003}  # API activity (sink creation, teams)
    assert hec.requests[0].headers["authorization"] == f"Splunk {token}"
    lines = [json.loads(x) for x in hec.requests[0].body.decode().split("\n") if x]
    assert all(x["index"] == "security" and x["sourcetype"] == "bastion:audit" for x in lines)
    assert [x["event"]["type"] for x in lines][-2:] == ["team.created", "team.created"]
    assert _status(client, org, ocsf_sink["id"])["lag"] == 0
    with state.sessions() as db:
        stored = db.execute(select(AuditSink.secret_ciphertext)).scalars().all()
    assert all(token.encode() not in (blob or b"") for blob in stored)


def test_a_rejecting_collector_is_reported_not_skipped(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    hec = start_http()
    hec.status = 403
    sink = _sink(client, org, type="splunk_hec", format="ocsf", url=hec.url("/e"), token="t0ken")
    _writes(client, org, 1)
    _deliver(state)
    status = _status(client, org, sink["id"])
    assert status["status"] == "failing"
    assert "403" in status["last_error"]
    assert "t0ken" not in status["last_error"]
    assert status["lag"] == 2  # the cursor did not move past what was refused


def test_validation_and_ssrf(world: tuple[TestClient, Factory, Any], tmp_path: Path) -> None:
    client, factory, _ = world
    org = factory.org()
    url = f"/v1/orgs/{org.id}/audit-sinks"
    bad = client.post(
        url,
        json={"name": "x", "type": "https", "format": "cef", "url": "https://127.0.0.1/"},
        headers=org.headers,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "format"
    no_token = client.post(
        url,
        json={"name": "x", "type": "splunk_hec", "format": "json", "url": "https://127.0.0.1/"},
        headers=org.headers,
    )
    assert no_token.json()["errors"][0]["field"] == "token"
    creds = client.post(
        url,
        json={"name": "x", "type": "https", "format": "json", "url": "https://u:p@127.0.0.1/"},
        headers=org.headers,
    )
    assert creds.json()["errors"][0]["field"] == "url"


def test_internal_destinations_are_refused_by_default(data_dir: Path, database_url: str) -> None:
    app = create_app(make_settings(data_dir, database_url, outbound_allow=[]))
    with TestClient(app, raise_server_exceptions=False) as client:
        org = Factory(app.state.bastion, client).org()
        for host in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "localhost"):
            refused = client.post(
                f"/v1/orgs/{org.id}/audit-sinks",
                json={"name": "x", "type": "syslog", "format": "json", "host": host, "port": 514},
                headers=org.headers,
            )
            assert refused.status_code == 422, host
            assert refused.json()["errors"][0]["field"] == "host"


def test_the_background_loop_delivers(
    data_dir: Path, database_url: str, start_syslog: StartSyslog
) -> None:
    app = create_app(make_settings(data_dir, database_url, audit_sink_poll_interval=0.1))
    receiver = start_syslog()
    with TestClient(app, raise_server_exceptions=False) as client:
        org = Factory(app.state.bastion, client).org()
        _sink(client, org, type="syslog", format="json", host="127.0.0.1", port=receiver.port)
        _writes(client, org, 2)
        assert len(receiver.wait_for(3)) == 3
