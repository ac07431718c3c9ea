"""Outbound webhooks against real HTTP receivers: Standard Webhooks signatures a receiver
can verify, the outbox (nothing sent unless the caller's transaction commits), event
patterns, retries with backoff and the same `webhook-id`, the delivery log, permanent
failure after the last attempt, auto-disable after repeated failure and re-enable, the
SSRF guard at creation and at send, leases across concurrent rounds, forwarding of
verified inbound events, and retention."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from bastion.api.app import create_app
from bastion.api.state import AppState
from bastion.core.clock import clock, utcnow
from bastion.core.db import begin_write
from bastion.secrets.models import SecretVersion
from bastion.webhooks import outbound
from bastion.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from bastion.webhooks.verify import SignatureMismatch, verify
from tests.conftest import make_settings
from tests.factories import Factory, Org
from tests.receivers import HttpReceiver, StartHttp, free_port
from tests.webhooks.test_gateway import body_for, create_endpoint, new_secret, post_hook, sign

LONG = 10_000.0  # past any backoff the tests' policy can choose


@pytest.fixture
def world(
    data_dir: Path, module_database_url: str
) -> Iterator[tuple[TestClient, Factory, AppState]]:
    settings = make_settings(
        data_dir,
        module_database_url,  # other modules' deliveries never fill this module's rounds
        webhook_poll_interval=60,  # the tests deliver when they choose
        webhook_max_attempts=4,
        webhook_disable_after_failures=6,
        webhook_retry_base_seconds=1,
        webhook_retry_max_seconds=60,
        webhook_timeout_seconds=2,
    )
    app = create_app(settings)
    state = app.state.bastion
    # Rounds and direct reads run outside a request, in the home region: so do its orgs.
    home = state.regions.home if state.regions else None
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, Factory(state, c, region=home), state
        # The database lives for the session: what a test left pending (a retry to a
        # receiver that has since closed) must not become due in a later test's round.
        with app.state.bastion.sessions() as db:
            begin_write(db)
            db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == outbound.PENDING)
                .values(status=outbound.FAILED, next_attempt_at=None)
            )
            db.commit()


def deliver(state: AppState, **policy: Any) -> int:
    base = outbound.DeliveryPolicy.from_settings(state.settings)
    chosen = outbound.DeliveryPolicy(**{**base.__dict__, **policy})
    return outbound.deliver_due(state.write_sessions, state.vault, chosen)


def subscribe(
    client: TestClient, org: Org, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/webhook-subscriptions",
        json={"url": url, "events": events or ["approval.*"], "description": "ops"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def enqueue(state: AppState, org_id: str, event_type: str, payload: dict[str, Any]) -> list[str]:
    with state.sessions() as db:
        begin_write(db)
        ids = outbound.enqueue(db, org_id, event_type, payload)
        db.commit()
    return ids


def deliveries(client: TestClient, org: Org, sub_id: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/orgs/{org.id}/webhook-subscriptions/{sub_id}/deliveries", headers=org.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def verified(receiver: HttpReceiver, secret: str, index: int = -1) -> dict[str, Any]:
    """The JSON body of a recorded request, after checking its signature like a receiver."""
    request = receiver.requests[index]
    assert abs(int(request.headers["webhook-timestamp"]) - utcnow().timestamp()) < 2 * LONG
    at = float(request.headers["webhook-timestamp"])  # as the receiver saw it then
    verify("standard", secret, request.headers, request.body, now=at)
    return dict(json.loads(request.body))


def test_an_event_reaches_the_subscriber_signed(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    sub = subscribe(client, org, receiver.url("/hooks/bastion"))
    assert sub["id"].startswith("whs_")
    assert sub["secret"].startswith("whsec_")
    shown = client.get(f"/v1/orgs/{org.id}/webhook-subscriptions/{sub['id']}", headers=org.headers)
    assert "secret" not in shown.json()
    assert sub["secret"] not in shown.text

    (delivery_id,) = enqueue(state, org.id, "approval.requested", {"id": "apr_1", "tool": "refund"})

    assert deliver(state) == 1
    (request,) = receiver.requests
    assert request.path == "/hooks/bastion"
    assert request.headers["webhook-id"] == delivery_id
    assert request.headers["content-type"] == "application/json"
    body = verified(receiver, sub["secret"])
    assert body["type"] == "approval.requested"
    assert body["data"] == {"id": "apr_1", "tool": "refund"}
    assert body["timestamp"].endswith("Z")
    (logged,) = deliveries(client, org, sub["id"])
    assert logged["id"] == delivery_id
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert logged["attempt_log"][0]["status_code"] == 200
    assert deliver(state) == 0  # nothing left


def test_nothing_is_queued_unless_the_callers_transaction_commits(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    sub = subscribe(client, org, receiver.url("/h"))
    with state.sessions() as db:
        begin_write(db)
        assert outbound.enqueue(db, org.id, "approval.requested", {"id": "apr_x"})
        db.rollback()
    assert deliver(state) == 0
    assert receiver.requests == []
    assert deliveries(client, org, sub["id"]) == []


def test_patterns_choose_the_subscriptions(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org, other = factory.org(), factory.org()
    approvals, everything, agents = start_http(), start_http(), start_http()
    subscribe(client, org, approvals.url("/a"), ["approval.*"])
    subscribe(client, org, everything.url("/e"), ["*"])
    subscribe(client, org, agents.url("/g"), ["agent.created", "agent.deleted"])
    subscribe(client, other, approvals.url("/other-org"), ["*"])

    assert len(enqueue(state, org.id, "approval.decided", {"id": "apr_2"})) == 2
    assert len(enqueue(state, org.id, "agent.created", {"id": "agt_1"})) == 2
    assert len(enqueue(state, org.id, "approvals.other", {})) == 1  # only "*"
    assert deliver(state) == 5
    assert [r.path for r in approvals.requests] == ["/a"]  # not the other org's
    assert len(everything.requests) == 3
    assert [json.loads(r.body)["type"] for r in agents.requests] == ["agent.created"]
    assert outbound.matches(["approval.*"], "approval.requested")
    assert not outbound.matches(["approval.*"], "approvals.requested")
    assert not outbound.matches(["approval.*"], "approval")
    assert outbound.matches(["*"], "x.y")


def test_a_failing_receiver_is_retried_with_the_same_id_and_logged(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    receiver.status = 503
    sub = subscribe(client, org, receiver.url("/h"))
    (delivery_id,) = enqueue(state, org.id, "approval.requested", {"id": "apr_3"})

    assert deliver(state) == 0
    (pending,) = deliveries(client, org, sub["id"])
    assert (pending["status"], pending["attempts"], pending["last_status_code"]) == (
        "pending",
        1,
        503,
    )
    assert "HTTP 503" in pending["last_error"]
    assert pending["next_attempt_at"] is not None

    receiver.status = 204
    clock.advance(LONG)
    assert deliver(state) == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id, delivery_id]
    for index in range(2):
        verified(receiver, sub["secret"], index)
    (done,) = deliveries(client, org, sub["id"])
    assert (done["status"], done["attempts"]) == ("delivered", 2)
    assert [a["status_code"] for a in done["attempt_log"]] == [503, 204]
    current = client.get(
        f"/v1/orgs/{org.id}/webhook-subscriptions/{sub['id']}", headers=org.headers
    )
    assert current.json()["consecutive_failures"] == 0


def test_a_delivery_fails_for_good_after_the_last_attempt(
    world: tuple[TestClient, Factory, AppState],
) -> None:
    client, factory, state = world
    org = factory.org()
    sub = subscribe(client, org, f"http://127.0.0.1:{free_port()}/nobody-listens")
    enqueue(state, org.id, "approval.requested", {"id": "apr_4"})
    for _ in range(6):
        deliver(state)
        clock.advance(LONG)
    (failed,) = deliveries(client, org, sub["id"])
    assert (failed["status"], failed["attempts"]) == ("failed", 4)
    assert failed["last_status_code"] is None
    assert "ConnectError" in failed["last_error"]
    assert len(failed["attempt_log"]) == 4


def test_repeated_failure_disables_the_subscription_until_enabled(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    receiver.status = 500
    sub = subscribe(client, org, receiver.url("/h"))
    url = f"/v1/orgs/{org.id}/webhook-subscriptions/{sub['id']}"
    for n in range(3):
        enqueue(state, org.id, "approval.requested", {"n": n})
    # 3 deliveries x 2 rounds = 6 failed attempts in a row: the threshold.
    for _ in range(2):
        deliver(state)
        clock.advance(LONG)
    disabled = client.get(url, headers=org.headers).json()
    assert disabled["enabled"] is False
    assert "6 failed attempts" in disabled["disabled_reason"]
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "webhook_subscription.disabled", "resource": sub["id"]},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["actor"]["type"] == "system"

    sent = len(receiver.requests)
    assert deliver(state) == 0
    assert len(receiver.requests) == sent  # a disabled subscription gets nothing
    assert enqueue(state, org.id, "approval.requested", {"n": 99}) == []

    receiver.status = 200
    enabled = client.post(f"{url}/enable", headers=org.headers)
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["enabled"], enabled.json()["consecutive_failures"]) == (True, 0)
    assert deliver(state) == 3  # the pending ones resume
    assert {d["status"] for d in deliveries(client, org, sub["id"])} == {"delivered"}


def test_internal_destinations_are_refused_at_creation_and_at_send(
    world: tuple[TestClient, Factory, AppState],
    data_dir: Path,
    database_url: str,
    start_http: StartHttp,
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    sub = subscribe(client, org, receiver.url("/h"))
    enqueue(state, org.id, "approval.requested", {"id": "apr_5"})
    assert deliver(state, allow=()) == 0  # the allowlist shrank after creation
    assert receiver.requests == []
    (refused,) = deliveries(client, org, sub["id"])
    assert refused["last_error"] == "destination refused (SSRF guard)"

    strict = create_app(make_settings(data_dir, database_url, outbound_allow=[]))
    with TestClient(strict, raise_server_exceptions=False) as strict_client:
        org2 = Factory(strict.state.bastion, strict_client).org()
        for url in (
            "http://127.0.0.1:8080/h",
            "http://10.0.0.5/h",
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200/latest/meta-data",  # shared 100.64/10 (Alibaba metadata)
            "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
            "http://[2002:7f00:1::1]/h",  # 6to4 carrying 127.0.0.1
            "http://[64:ff9b::a00:5]/h",  # NAT64 carrying 10.0.0.5
            "http://192.0.2.10/h",  # documentation range
            "http://localhost/h",
            "ftp://example.com/h",
            "https://user:pw@example.com/h",
        ):
            made = strict_client.post(
                f"/v1/orgs/{org2.id}/webhook-subscriptions",
                json={"url": url, "events": ["*"]},
                headers=org2.headers,
            )
            assert made.status_code == 422, url
            assert made.json()["errors"][0]["field"] == "url"
        forward = strict_client.post(
            f"/v1/orgs/{org2.id}/webhook-endpoints",
            json={
                "name": "gh",
                "provider": "github",
                "secret": "s" * 20,
                "forward_url": "http://127.0.0.1:9/x",
            },
            headers=org2.headers,
        )
        assert forward.status_code == 422
        assert forward.json()["errors"][0]["field"] == "forward_url"


def test_concurrent_rounds_send_each_delivery_once(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    subscribe(client, org, receiver.url("/h"))
    ids = [enqueue(state, org.id, "approval.requested", {"n": n})[0] for n in range(12)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(deliver(state))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deliver(state)  # anything a racing round skipped
    sent = sorted(r.headers["webhook-id"] for r in receiver.requests)
    assert sent == sorted(ids)


def test_verified_events_are_forwarded_resigned(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    receiver = start_http()
    secret = new_secret("stripe")
    endpoint = create_endpoint(
        client, org, "stripe", secret, forward_url=receiver.url("/forwarded")
    )
    forward_secret = endpoint["forward_signing_secret"]
    assert forward_secret.startswith("whsec_")
    shown = client.get(f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}", headers=org.headers)
    assert forward_secret not in shown.text
    body = body_for("stripe")
    accepted = post_hook(client, endpoint["url"], body, sign("stripe", secret, body))
    assert accepted.status_code == 202
    refused = post_hook(client, endpoint["url"], body, sign("stripe", "x" * 20, body))
    assert refused.status_code == 401

    assert deliver(state) == 1
    (request,) = receiver.requests
    assert request.body == body
    assert request.headers["bastion-webhook-endpoint"] == endpoint["id"]
    assert "stripe-signature" not in request.headers
    verify("standard", forward_secret, request.headers, request.body, now=utcnow())
    with pytest.raises(SignatureMismatch):
        verify("standard", new_secret("standard"), request.headers, request.body, now=utcnow())


def test_retention_purges_old_events_and_finished_deliveries(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", secret, retention_days=1)
    body = body_for("github")
    assert post_hook(client, endpoint["url"], body, sign("github", secret, body)).status_code == 202
    receiver = start_http()
    sub = subscribe(client, org, receiver.url("/h"))
    enqueue(state, org.id, "approval.requested", {"id": "apr_6"})
    assert deliver(state) == 1

    rotated_secret = new_secret("github")
    rotated = client.post(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"secret": rotated_secret, "overlap_seconds": 60},
        headers=org.headers,
    )
    assert rotated.status_code == 200

    clock.advance(2 * 86_400)
    outbound.purge_expired(state.write_sessions, retention_days=30)
    with state.sessions() as db:
        row = db.get(WebhookEndpoint, endpoint["id"])
        assert row is not None
        versions = db.execute(
            select(SecretVersion.version).where(SecretVersion.secret_id == row.secret_id)
        ).scalars()
        assert list(versions) == [2]  # the rotated-out secret is destroyed after its overlap
    shown = client.get(f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}", headers=org.headers)
    assert [v["version"] for v in shown.json()["secret_versions"]] == [2]
    events_url = f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events"
    assert client.get(events_url, headers=org.headers).json()["data"] == []
    assert len(deliveries(client, org, sub["id"])) == 1  # 30 days not yet over
    # The old secret no longer verifies anything; and the replay key of a provider
    # without timestamps outlives the event, whichever secret signs the replay.
    assert post_hook(client, endpoint["url"], body, sign("github", secret, body)).status_code == 401
    resent = post_hook(client, endpoint["url"], body, sign("github", rotated_secret, body))
    assert resent.status_code == 409

    clock.advance(31 * 86_400)
    outbound.purge_expired(state.write_sessions, retention_days=30)
    assert deliveries(client, org, sub["id"]) == []
    with state.sessions() as db:
        assert (
            db.execute(
                select(WebhookEvent).where(WebhookEvent.endpoint_id == endpoint["id"])
            ).first()
            is None
        )
        assert (
            db.execute(
                select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub["id"])
            ).first()
            is None
        )


def test_the_background_loop_delivers(
    data_dir: Path, module_database_url: str, start_http: StartHttp
) -> None:
    app = create_app(make_settings(data_dir, module_database_url, webhook_poll_interval=0.1))
    receiver = start_http()
    with TestClient(app, raise_server_exceptions=False) as client:
        state = app.state.bastion
        home = state.regions.home if state.regions else None  # where `enqueue` writes
        org = Factory(state, client, region=home).org()
        subscribe(client, org, receiver.url("/loop"))
        enqueue(state, org.id, "approval.requested", {"id": "apr_7"})
        deadline = threading.Event()
        for _ in range(100):
            if receiver.requests:
                break
            deadline.wait(0.05)
        assert [r.path for r in receiver.requests] == ["/loop"]


def test_deliveries_that_can_never_be_sent_fail_and_do_not_stall_other_organisations(
    world: tuple[TestClient, Factory, AppState], start_http: StartHttp
) -> None:
    """An organisation deleted with pending deliveries (its signing secrets shredded):
    released each round, its oldest hundred filled every round's batch before."""
    client, factory, state = world
    gone, other = factory.org(), factory.org()
    receiver = start_http()
    subscribe(client, gone, receiver.url("/gone"))
    for i in range(outbound.BATCH + 1):
        enqueue(state, gone.id, "approval.requested", {"id": f"apr_{i}"})
    deleted = client.delete(f"/v1/orgs/{gone.id}", headers=gone.headers)
    assert deleted.status_code == 204, deleted.text
    sub = subscribe(client, other, receiver.url("/other"))
    enqueue(state, other.id, "approval.requested", {"id": "apr_other"})
    sent = deliver(state) + deliver(state)
    assert sent == 1
    assert [r.path for r in receiver.requests] == ["/other"]
    assert deliveries(client, other, sub["id"])[0]["status"] == "delivered"
    with state.sessions() as db:
        left = db.execute(
            select(WebhookDelivery.status, WebhookDelivery.last_error).where(
                WebhookDelivery.org_id == gone.id
            )
        ).all()
    assert set(left) == {("failed", "the signing secret cannot be read")}


@pytest.mark.parametrize("drip", ["body", "headers"])
def test_a_trickling_receiver_cannot_hold_an_attempt_past_its_timeout(
    world: tuple[TestClient, Factory, AppState], drip: str
) -> None:
    """Each read waits at most `timeout`, and a byte every 0.6 s renews that; the attempt
    as a whole must still end at its timeout (before, one took 12 s with a 2 s timeout)."""
    client, factory, state = world
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"
            slow = head if drip == "headers" else b"x" * 20
            if drip == "body":
                connection.sendall(head)
            for byte in slow:
                if stop.wait(0.6):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    org = factory.org()
    sub = subscribe(client, org, f"http://127.0.0.1:{server.getsockname()[1]}/slow")
    enqueue(state, org.id, "approval.requested", {"id": "apr_slow"})
    started = time.monotonic()
    deliver(state, timeout=1.5)
    took = time.monotonic() - started
    stop.set()
    server.close()
    assert took < 5, took
    (attempted,) = deliveries(client, org, sub["id"])
    if drip == "headers":
        assert "Timeout" in attempted["last_error"]
    else:  # the status came in time: the body is not waited for
        assert attempted["status"] == "delivered"
