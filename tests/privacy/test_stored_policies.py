"""Data policies on what Bastion itself stores and sends: audit metadata (redacted
before the hash covers it, so the chain verifies) and webhook payloads (redacted before
the delivery is queued); another organisation's events are untouched."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.core.db import begin_write
from bastion.webhooks import outbound
from bastion.webhooks.models import WebhookDelivery
from tests.factories import Factory, Org, unique_email


def _policy(client: TestClient, org: Org, applies_to: str) -> None:
    body = {"name": "mails", "applies_to": applies_to, "types": ["EMAIL"], "action": "redact"}
    r = client.post(f"/v1/orgs/{org.id}/privacy/policies", json=body, headers=org.headers)
    assert r.status_code == 201, r.text


def _created(client: TestClient, org: Org) -> dict[str, Any]:
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "user.created"}, headers=org.headers
    ).json()["data"]
    return dict(events[0]["metadata"])


def test_audit_metadata_is_redacted_and_the_chain_verifies(
    client: TestClient, factory: Factory
) -> None:
    org, other = factory.org(), factory.org()
    _policy(client, org, "audit_metadata")
    for who in (org, other):
        body = {"email": unique_email("person"), "role": "viewer", "name": "P"}
        assert (
            client.post(f"/v1/orgs/{who.id}/users", json=body, headers=who.headers).status_code
            == 201
        )
    assert _created(client, org)["email"] == "<EMAIL>"
    assert "@" in _created(client, other)["email"]  # no policy there
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.json()["valid"] is True


def test_webhook_payloads_are_redacted_before_they_are_queued(
    client: TestClient, factory: Factory
) -> None:
    org, other = factory.org(), factory.org()
    for who in (org, other):
        r = client.post(
            f"/v1/orgs/{who.id}/webhook-subscriptions",
            json={"url": "http://127.0.0.1:9/hook", "events": ["test.*"]},
            headers=who.headers,
        )
        assert r.status_code == 201, r.text
    _policy(client, org, "webhook_payloads")
    payload = {"note": "reach me at sentinel.hook@example.com", "n": 1}
    with factory.state.sessions() as db:
        begin_write(db)
        outbound.enqueue(db, org.id, "test.event", payload)
        outbound.enqueue(db, other.id, "test.event", payload)
        db.commit()
    with factory.state.sessions() as db:
        bodies = {
            d.org_id: json.loads(d.body)["data"]
            for d in db.execute(
                select(WebhookDelivery).where(WebhookDelivery.event_type == "test.event")
            ).scalars()
            if d.org_id in (org.id, other.id)
        }
    assert bodies[org.id] == {"note": "reach me at <EMAIL>", "n": 1}
    assert bodies[other.id] == payload
