"""Approval requests and decisions reach webhook subscribers, signed per Standard
Webhooks, through the outbox (nothing is announced unless the change commits)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from bastion.api.state import AppState
from bastion.webhooks import outbound, verify
from tests.factories import Factory
from tests.receivers import StartHttp


def _deliver(state: AppState) -> int:
    policy = outbound.DeliveryPolicy.from_settings(state.settings)
    return outbound.deliver_due(state.write_sessions, state.vault, policy)


def test_approval_lifecycle_is_announced_to_subscribers(
    client: TestClient, factory: Factory, start_http: StartHttp
) -> None:
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    receiver = start_http()
    sub = client.post(
        f"{base}/webhook-subscriptions",
        json={"url": receiver.url("/approvals"), "events": ["approval.*"]},
        headers=org.headers,
    ).json()
    manager = factory.member(org, "manager")
    call = factory.pending_tool_call(org)
    decided = client.post(
        f"{base}/approvals/{call['approval_id']}/decisions",
        json={"decision": "approve"},
        headers=manager.headers,
    )
    assert decided.status_code == 200
    while _deliver(factory.state):  # until nothing is due
        pass
    bodies: list[dict[str, Any]] = []
    for request in receiver.requests:
        at = float(request.headers["webhook-timestamp"])
        verify("standard", sub["secret"], request.headers, request.body, now=at)
        bodies.append(json.loads(request.body))
    # Delivery order is not promised (as with every webhook sender); each event arrives.
    assert sorted(b["type"] for b in bodies) == ["approval.approved", "approval.requested"]
    assert {b["data"]["id"] for b in bodies} == {call["approval_id"]}
    assert "amount" not in json.dumps(bodies)  # the arguments stay in Bastion
