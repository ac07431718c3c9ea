"""Two fixes: the inbox (`mine=true`) drops what the caller already decided, and approval
policies can be changed (`PATCH …/approval-policies/{id}`, the SDK's
`approval_policies.update()`), validated as on create and audited."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.client import Client, ValidationError
from tests.agents.test_gate import World
from tests.factories import Factory, Member


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def _inbox(w: World, who: Member) -> list[str]:
    response = w.client.get(
        w.url("approvals"), params={"mine": "true", "status": "pending"}, headers=who.headers
    )
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["data"]]


def test_the_inbox_drops_what_the_caller_already_decided(w: World) -> None:
    first, second = w.managers[0], w.managers[1]
    w.policy(
        match={"tools": ["refund_payment"]},
        decision="require_approval",
        approvers={"users": [first.user_id, second.user_id]},
        quorum=2,
    )
    call = w.call(w.run(), "refund_payment", {"amount": 5, "order": "I-1"})
    approval = call["approval_id"]
    assert approval in _inbox(w, first)
    assert w.decide(approval, first, "approve").status_code == 200
    assert approval not in _inbox(w, first)  # decided: nothing left for them to do
    assert approval in _inbox(w, second)  # still waits for the second approver
    # Without `mine`, the caller still sees it (history, progress).
    listed = w.client.get(w.url("approvals"), params={"status": "pending"}, headers=first.headers)
    assert approval in [a["id"] for a in listed.json()["data"]]


def _policy(w: World) -> dict[str, Any]:
    body = {
        "name": "refunds",
        "match": {"tools": ["refund_payment"]},
        "decision": "require_approval",
        "approvers": {"roles": ["manager"]},
        "expires_in": 600,
    }
    return dict(w.post("approval-policies", body))


def test_a_policy_is_updated_validated_as_on_create_and_audited(w: World) -> None:
    policy = _policy(w)
    url = w.url(f"approval-policies/{policy['id']}")
    team = w.post("teams", {"name": "ops"})["id"]
    changed = w.client.patch(
        url,
        json={
            "quorum": 2,
            "approvers": {"teams": [team]},
            "escalate_after": 300,
            "escalate_to": {"roles": ["admin"]},
        },
        headers=w.org.headers,
    )
    assert changed.status_code == 200, changed.text
    got = changed.json()
    assert got["quorum"] == 2
    assert got["approvers"]["teams"] == [team]
    assert got["escalate_after"] == 300
    assert got["name"] == "refunds"  # untouched fields are kept
    assert got["match"] == {"tools": ["refund_payment"]}
    # The new rules apply to the next request.
    call = w.call(w.run(), "refund_payment", {"amount": 5, "order": "U-1"})
    shown = w.client.get(w.url(f"approvals/{call['approval_id']}"), headers=w.org.headers)
    assert shown.json()["quorum"] == 2
    events = w.client.get(
        w.url("audit-events"),
        params={"type": "approval_policy.updated", "resource": policy["id"]},
        headers=w.org.headers,
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["metadata"]["quorum"] == 2
    # Escalation removed (both together).
    cleared = w.client.patch(
        url, json={"escalate_after": None, "escalate_to": None}, headers=w.org.headers
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["escalate_after"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quorum": 0}, "quorum"),
        ({"decision": "maybe"}, "decision"),
        ({"name": None}, "name"),
        ({"approvers": {"teams": ["team_01ZZZZZZZZZZZZZZZZZZZZZZZZ"]}}, "approvers.teams"),
        ({"approvers": {"users": ["usr_01ZZZZZZZZZZZZZZZZZZZZZZZZ"]}}, "approvers.users"),
        ({"escalate_after": 900}, "escalate"),  # without escalate_to
        ({"escalate_after": 900, "escalate_to": {"roles": ["admin"]}}, "escalate"),  # > expiry
        ({"match": {"condition": "arguments.amount >"}}, "match.condition"),
        ({"unknown": 1}, "*"),
    ],
)
def test_a_bad_update_is_422_naming_the_field_and_changes_nothing(
    w: World, body: dict[str, Any], field: str
) -> None:
    policy = _policy(w)
    url = w.url(f"approval-policies/{policy['id']}")
    response = w.client.patch(url, json=body, headers=w.org.headers)
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json().get("errors", [])]
    assert any(field in f for f in fields) or field in response.json()["detail"], response.text
    assert w.client.get(url, headers=w.org.headers).json() == policy


def test_updating_needs_the_right_and_another_orgs_policy_is_404(
    w: World, factory: Factory
) -> None:
    policy = _policy(w)
    url = w.url(f"approval-policies/{policy['id']}")
    assert w.client.patch(url, json={"quorum": 2}, headers=w.user.headers).status_code == 403
    other = factory.org()
    response = w.client.patch(
        f"/v1/orgs/{other.id}/approval-policies/{policy['id']}",
        json={"quorum": 2},
        headers=other.headers,
    )
    assert response.status_code == 404


def test_the_sdk_updates_a_policy(w: World, client: TestClient) -> None:
    policy = _policy(w)
    sdk = Client(http_client=client, token=w.org.admin_key)
    updated = sdk.approval_policies.update(w.org.id, policy["id"], quorum=3, name="big refunds")
    assert updated["quorum"] == 3
    assert updated["name"] == "big refunds"
    with pytest.raises(ValidationError):
        sdk.approval_policies.update(w.org.id, policy["id"], quorum=99)
