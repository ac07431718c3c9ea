"""The inbound gateway over HTTP: every provider accepted with a valid signature; tampered
body, wrong secret, missing header and stale timestamp refused with 401; a replay 409;
secret rotation with an overlap that ends to the second; 404 for unknown, deleted,
wrong-type and other organisations' endpoints; every outcome audited without the body
or the secret; the secret in no response and nowhere in the database in plaintext."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import column, select
from sqlalchemy.orm import Session

from bastion.core.clock import clock, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import hmac_sha256_hex
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import Principal
from bastion.registry import metadata
from bastion.webhooks import service as webhooks
from bastion.webhooks import sign_standard
from bastion.webhooks.models import WebhookEndpointSecret
from tests.factories import Factory, Org
from tests.races import second_while_first_is_open

PROVIDERS = ["github", "slack", "stripe", "linear", "standard", "generic"]
TIMESTAMPED = ["slack", "stripe", "linear", "standard"]


def new_secret(provider: str) -> str:
    if provider == "standard":
        return "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
    return f"provider-secret-{uuid.uuid4().hex}"


def body_for(provider: str, at: float | None = None) -> bytes:
    at = utcnow().timestamp() if at is None else at
    doc: dict[str, Any] = {"action": "opened", "nonce": uuid.uuid4().hex}
    if provider == "linear":
        doc["webhookTimestamp"] = int(at * 1000)
    return json.dumps(doc).encode()


def sign(provider: str, secret: str, body: bytes, at: float | None = None) -> dict[str, str]:
    """The headers `provider` would send with `body` at time `at` (default: now)."""
    ts = int(utcnow().timestamp() if at is None else at)
    key = secret.encode()
    headers = {"content-type": "application/json"}
    if provider == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + hmac_sha256_hex(key, body)
        headers["X-GitHub-Event"] = "push"
    elif provider == "slack":
        headers["X-Slack-Request-Timestamp"] = str(ts)
        headers["X-Slack-Signature"] = "v0=" + hmac_sha256_hex(key, f"v0:{ts}:".encode() + body)
    elif provider == "stripe":
        headers["Stripe-Signature"] = f"t={ts},v1=" + hmac_sha256_hex(key, f"{ts}.".encode() + body)
    elif provider == "linear":
        headers["Linear-Signature"] = hmac_sha256_hex(key, body)
    elif provider == "standard":
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = sign_standard(secret, msg_id, ts, body)
    else:
        headers["X-Signature"] = "sha256=" + hmac_sha256_hex(key, body)
    return headers


SIGNATURE_HEADER = {
    "github": "X-Hub-Signature-256",
    "slack": "X-Slack-Signature",
    "stripe": "Stripe-Signature",
    "linear": "Linear-Signature",
    "standard": "webhook-signature",
    "generic": "X-Signature",
}


def create_endpoint(
    client: TestClient, org: Org, provider: str, secret: str, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/webhook-endpoints",
        json={"name": f"{provider} hook", "provider": provider, "secret": secret, **extra},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    assert secret not in response.text
    return dict(response.json())


def post_hook(client: TestClient, url: str, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(url, content=body, headers=headers)


def audit_events(client: TestClient, org: Org, type_: str, resource: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": type_, "resource": resource},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def assert_refused(response: Any, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_delivery_is_accepted_stored_and_audited(
    client: TestClient, factory: Factory, provider: str
) -> None:
    org = factory.org()
    secret = new_secret(provider)
    endpoint = create_endpoint(client, org, provider, secret)
    assert endpoint["id"].startswith("whe_")
    assert endpoint["url"] == f"/v1/hooks/{endpoint['id']}"
    body = body_for(provider)

    accepted = post_hook(client, endpoint["url"], body, sign(provider, secret, body))

    assert accepted.status_code == 202, accepted.text
    event_id = accepted.json()["event_id"]
    assert event_id.startswith("wev_")
    stored = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    assert [e["id"] for e in stored] == [event_id]
    assert stored[0]["body"] == body.decode()
    assert stored[0]["headers"]["content-type"] == "application/json"
    assert SIGNATURE_HEADER[provider].lower() not in stored[0]["headers"]
    (audited,) = audit_events(client, org, "webhook_event.accepted", endpoint["id"])
    assert audited["outcome"] == "success"
    assert audited["metadata"]["event_id"] == event_id
    assert audited["metadata"]["provider"] == provider
    assert audited["metadata"]["body_bytes"] == len(body)
    assert secret not in json.dumps(audited)
    assert body.decode() not in json.dumps(audited)


Tamper = Callable[[str, str, bytes], tuple[bytes, dict[str, str]]]


def _tampered_body(provider: str, secret: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"opened", b"closed"), sign(provider, secret, body)


def _wrong_secret(provider: str, secret: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, sign(provider, new_secret(provider), body)


def _missing_header(provider: str, secret: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = sign(provider, secret, body)
    del headers[SIGNATURE_HEADER[provider]]
    return body, headers


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tampered_body, "signature_mismatch"),
        (_wrong_secret, "signature_mismatch"),
        (_missing_header, "missing_header"),
    ],
    ids=["tampered-body", "wrong-secret", "missing-header"],
)
def test_a_forged_delivery_is_401_and_audited(
    client: TestClient, factory: Factory, provider: str, tamper: Tamper, reason: str
) -> None:
    org = factory.org()
    secret = new_secret(provider)
    endpoint = create_endpoint(client, org, provider, secret)
    body, headers = tamper(provider, secret, body_for(provider))

    refused = post_hook(client, endpoint["url"], body, headers)

    assert_refused(refused)
    assert refused.json()["detail"] == "the webhook signature is missing, invalid or expired"
    assert secret not in refused.text
    (audited,) = audit_events(client, org, "webhook_event.rejected", endpoint["id"])
    assert (audited["outcome"], audited["reason"]) == ("failure", reason)
    assert audited["metadata"]["body_bytes"] == len(body)
    assert body.decode() not in json.dumps(audited)
    stored = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    assert stored == []


@pytest.mark.parametrize("provider", TIMESTAMPED)
def test_a_stale_timestamp_is_401(client: TestClient, factory: Factory, provider: str) -> None:
    org = factory.org()
    secret = new_secret(provider)
    endpoint = create_endpoint(client, org, provider, secret, tolerance_seconds=60)
    then = utcnow().timestamp() - 120
    body = body_for(provider, at=then)

    refused = post_hook(client, endpoint["url"], body, sign(provider, secret, body, at=then))

    assert_refused(refused)
    (audited,) = audit_events(client, org, "webhook_event.rejected", endpoint["id"])
    assert audited["reason"] == "timestamp_out_of_window"
    # Inside the window the same provider is accepted.
    recent = utcnow().timestamp() - 30
    body = body_for(provider, at=recent)
    ok = post_hook(client, endpoint["url"], body, sign(provider, secret, body, at=recent))
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_replayed_delivery_is_409_and_audited(
    client: TestClient, factory: Factory, provider: str
) -> None:
    org = factory.org()
    secret = new_secret(provider)
    endpoint = create_endpoint(client, org, provider, secret)
    body = body_for(provider)
    headers = sign(provider, secret, body)
    assert post_hook(client, endpoint["url"], body, headers).status_code == 202

    replayed = post_hook(client, endpoint["url"], body, headers)

    assert_refused(replayed, 409)
    (audited,) = audit_events(client, org, "webhook_event.rejected", endpoint["id"])
    assert audited["reason"] == "replayed"
    events = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    assert len(events) == 1


def test_one_delivery_sent_many_times_at_once_is_accepted_once(
    client: TestClient, factory: Factory
) -> None:
    """Copies of one delivery in the same writer batches: the batch's one flush refuses
    the duplicate key, and the rerun answers every copy but one with the replay 409."""
    org = factory.org()
    secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", secret)
    body = body_for("github")
    headers = sign("github", secret, body)
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda _: post_hook(client, endpoint["url"], body, headers), range(24))
        )
    assert sorted(a.status_code for a in answers) == [202] + [409] * 23
    rejected = audit_events(client, org, "webhook_event.rejected", endpoint["id"])
    assert [e["reason"] for e in rejected] == ["replayed"] * 23
    events = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    assert len(events) == 1


def test_a_replay_cannot_dodge_the_key_by_changing_unsigned_headers(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", secret)
    body = body_for("github")
    headers = sign("github", secret, body)
    first = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
    assert post_hook(client, endpoint["url"], body, first).status_code == 202
    again = {
        **headers,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": headers["X-Hub-Signature-256"].upper().replace("SHA256=", "sha256="),
    }
    assert_refused(post_hook(client, endpoint["url"], body, again), 409)


def test_a_standard_webhooks_replay_with_a_fresh_timestamp_is_409(
    client: TestClient, factory: Factory
) -> None:
    """The same `webhook-id` re-signed later (what a sender's retry looks like) is the
    same delivery: the id is signed, so only the sender could have made it."""
    org = factory.org()
    secret = new_secret("standard")
    endpoint = create_endpoint(client, org, "standard", secret)
    body = body_for("standard")
    headers = sign("standard", secret, body)
    assert post_hook(client, endpoint["url"], body, headers).status_code == 202
    clock.advance(30)
    ts = int(utcnow().timestamp())
    msg_id = headers["webhook-id"]
    retry = {
        **headers,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(secret, msg_id, ts, body),
    }
    assert_refused(post_hook(client, endpoint["url"], body, retry), 409)


def test_rotation_keeps_the_old_secret_for_the_overlap_to_the_second(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    old, new = new_secret("github"), new_secret("github")
    endpoint = create_endpoint(client, org, "github", old)

    def deliver(secret: str) -> int:
        body = body_for("github")
        return int(
            post_hook(client, endpoint["url"], body, sign("github", secret, body)).status_code
        )

    rotated = client.post(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"secret": new, "overlap_seconds": 60},
        headers=org.headers,
    )
    assert rotated.status_code == 200, rotated.text
    assert old not in rotated.text
    assert new not in rotated.text
    versions = rotated.json()["secret_versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["expires_at"] is None
    assert versions[1]["expires_at"] is not None

    assert deliver(new) == 202
    assert deliver(old) == 202
    clock.advance(59)
    assert deliver(old) == 202
    clock.advance(1.001)
    assert deliver(old) == 401
    assert deliver(new) == 202
    (audited,) = audit_events(client, org, "webhook_endpoint.secret_rotated", endpoint["id"])
    assert audited["metadata"] == {"version": 2, "overlap_seconds": 60}


def test_rotation_with_no_overlap_refuses_the_old_secret_at_once(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    old, new = new_secret("slack"), new_secret("slack")
    endpoint = create_endpoint(client, org, "slack", old)
    rotated = client.post(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"secret": new, "overlap_seconds": 0},
        headers=org.headers,
    )
    assert rotated.status_code == 200, rotated.text
    body = body_for("slack")
    assert_refused(post_hook(client, endpoint["url"], body, sign("slack", old, body)))
    assert post_hook(client, endpoint["url"], body, sign("slack", new, body)).status_code == 202


def test_unknown_deleted_and_wrong_type_endpoints_are_404(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", secret)
    body = body_for("github")
    headers = sign("github", secret, body)
    for path in (
        "/v1/hooks/whe_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
        "/v1/hooks/" + endpoint["id"].replace("whe_", "whs_"),
        "/v1/hooks/not-an-id",
    ):
        assert_refused(post_hook(client, path, body, headers), 404)
    deleted = client.delete(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}", headers=org.headers
    )
    assert deleted.status_code == 204
    assert_refused(post_hook(client, endpoint["url"], body, headers), 404)
    assert audit_events(client, org, "webhook_endpoint.deleted", endpoint["id"])


def test_another_organisation_sees_nothing(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    endpoint = create_endpoint(client, org, "github", new_secret("github"))
    base = f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}"
    for path in (base, base + "/events"):
        assert_refused(client.get(path, headers=other.headers), 404)
        own = path.replace(org.id, other.id)
        assert_refused(client.get(own, headers=other.headers), 404)
    listed = client.get(f"/v1/orgs/{other.id}/webhook-endpoints", headers=other.headers)
    assert listed.json()["data"] == []


def test_the_hook_needs_no_bearer_and_ignores_one(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    secret = new_secret("generic")
    endpoint = create_endpoint(client, org, "generic", secret)
    body = b"not json at all \xff"
    headers = {**sign("generic", secret, body), "content-type": "application/octet-stream"}
    accepted = post_hook(client, endpoint["url"], body, headers)
    assert accepted.status_code == 202, accepted.text
    (event,) = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    assert event["body"] is None
    assert base64.b64decode(event["body_base64"]) == body


def test_a_refused_hook_challenges_for_a_signature_not_a_bearer_token(
    client: TestClient, factory: Factory
) -> None:
    """The signature is the credential: the 401 names that scheme, never `Bearer` (which
    would invite a caller to send a token the endpoint ignores). Other routes keep
    challenging for a bearer token."""
    org = factory.org()
    endpoint = create_endpoint(client, org, "github", new_secret("github"))
    body = b'{"zen": "hi"}'
    forged = post_hook(client, endpoint["url"], body, sign("github", new_secret("github"), body))
    unsigned = post_hook(client, endpoint["url"], body, {"content-type": "application/json"})
    for refused in (forged, unsigned):
        assert_refused(refused)
        challenge = refused.headers["www-authenticate"]
        assert challenge == 'WebhookSignature realm="bastion"'
        assert "bearer" not in challenge.lower()
    anonymous = client.get(f"/v1/orgs/{org.id}/webhook-endpoints")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="bastion"'


def test_validation(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}/webhook-endpoints"
    cases = [
        ({"name": "x", "provider": "standard", "secret": "not-a-whsec-secret!"}, "secret"),
        ({"name": "x", "provider": "paypal", "secret": "long-enough-secret"}, "provider"),
        ({"name": "x", "provider": "github", "secret": "short"}, "secret"),
        (
            {"name": "x", "provider": "github", "secret": "s" * 20, "forward_url": "ftp://x/"},
            "forward_url",
        ),
    ]
    for body, field in cases:
        refused = client.post(url, json=body, headers=org.headers)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["errors"][0]["field"] == field
        assert str(body["secret"]) not in refused.text


def test_lists_paginate_newest_first(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    made = [create_endpoint(client, org, "github", new_secret("github"))["id"] for _ in range(3)]
    url = f"/v1/orgs/{org.id}/webhook-endpoints"
    first = client.get(url, params={"limit": 2}, headers=org.headers).json()
    assert [e["id"] for e in first["data"]] == made[::-1][:2]
    second = client.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=org.headers
    ).json()
    assert [e["id"] for e in second["data"]] == made[:1]
    assert second["next_cursor"] is None


def test_the_secret_is_in_no_response_and_not_stored_in_plaintext(
    client: TestClient, factory: Factory, app: Any
) -> None:
    org = factory.org()
    marker = f"plaintext-marker-{uuid.uuid4().hex}"
    rotated_marker = f"rotated-marker-{uuid.uuid4().hex}"
    endpoint = create_endpoint(client, org, "github", marker)
    base = f"/v1/orgs/{org.id}/webhook-endpoints"
    responses = [
        client.get(base, headers=org.headers),
        client.get(f"{base}/{endpoint['id']}", headers=org.headers),
        client.post(
            f"{base}/{endpoint['id']}/rotate-secret",
            json={"secret": rotated_marker, "overlap_seconds": 5},
            headers=org.headers,
        ),
        client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers),
        client.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers),
    ]
    body = body_for("github")
    responses.append(post_hook(client, endpoint["url"], body, sign("github", "wrong" * 4, body)))
    for response in responses:
        assert response.status_code < 500
        assert marker not in response.text
        assert rotated_marker not in response.text
    state = app.state.bastion
    with state.sessions() as db:
        for table in metadata.sorted_tables:
            # As stored, past the column types: other tests in this session's database
            # hand-edit rows into values the types would refuse to load (SQLite only).
            raw = select(*(column(c.name) for c in table.columns)).select_from(table)
            for row in db.execute(raw):
                dump = repr(tuple(row)).encode() + b"".join(v for v in row if isinstance(v, bytes))
                assert marker.encode() not in dump, table.name
                assert rotated_marker.encode() not in dump, table.name


def test_a_delivery_burst_is_accepted_once_each(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    secret = new_secret("standard")
    endpoint = create_endpoint(client, org, "standard", secret)
    started = time.monotonic()
    for _ in range(20):
        body = body_for("standard")
        assert (
            post_hook(client, endpoint["url"], body, sign("standard", secret, body)).status_code
            == 202
        )
    assert time.monotonic() - started < 30
    events = client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events",
        params={"limit": 200},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 20


def test_two_rotations_at_once_leave_one_current_secret(
    client: TestClient, factory: Factory, app: Any
) -> None:
    """The first rotation holds its transaction open while the second starts; on
    PostgreSQL the second used to expire nothing and both new secrets stayed current."""
    state = app.state.bastion
    org = factory.org()
    first_secret, s1, s2 = (new_secret("github") for _ in range(3))
    endpoint = create_endpoint(client, org, "github", first_secret)
    admin = Principal(
        "api_key", "key_x", org.id, "admin", CredentialKind.API_KEY, frozenset(Permission),
        actor=Actor("api_key", "key_x"),
    )  # fmt: skip

    def rotate(secret: str) -> Callable[[Session], object]:
        return lambda db: webhooks.rotate_secret(
            db, state.vault, admin, org.id, endpoint["id"], secret, 0
        )

    assert second_while_first_is_open(state.write_sessions, rotate(s1), rotate(s2)) is None
    with state.sessions() as db:
        current = db.execute(
            select(WebhookEndpointSecret.version).where(
                WebhookEndpointSecret.endpoint_id == endpoint["id"],
                WebhookEndpointSecret.expires_at.is_(None),
            )
        ).all()
    assert len(current) == 1
    body = body_for("github")
    assert post_hook(client, endpoint["url"], body, sign("github", s2, body)).status_code == 202
    for stale in (first_secret, s1):
        assert_refused(post_hook(client, endpoint["url"], body, sign("github", stale, body)))


def test_a_signed_linear_body_with_an_absurd_timestamp_is_401(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    secret = new_secret("linear")
    endpoint = create_endpoint(client, org, "linear", secret)
    body = json.dumps({"action": "x", "webhookTimestamp": 10**400}).encode()
    assert_refused(post_hook(client, endpoint["url"], body, sign("linear", secret, body)))
