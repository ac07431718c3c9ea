"""Nobody changes a user who outranks them: a user whose role, or any temporary grant
still in force, holds a permission the caller lacks is out of reach for every field
(name, role, status, attributes) and for deletion, 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, Member, Org


def _patch(client: TestClient, org: Org, target: str, who: Member, **body: Any) -> int:
    response = client.patch(f"/v1/orgs/{org.id}/users/{target}", json=body, headers=who.headers)
    assert response.status_code in (200, 403), response.text
    return response.status_code


def _grant(client: TestClient, org: Org, user: Member, role: str, seconds: int) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    response = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": role, "expires_at": expires, "reason": "on-call"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Renamed"},
        {"attributes": {"region": "eu"}},
        {"status": "suspended"},
        {"role": "admin"},
    ],
)
def test_a_manager_changes_no_field_of_an_admin(
    client: TestClient, factory: Factory, body: dict[str, Any]
) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    assert _patch(client, org, org.admin.user_id, manager, **body) == 403
    shown = client.get(f"/v1/orgs/{org.id}/users/{org.admin.user_id}", headers=org.headers)
    assert shown.json()["name"] == "Admin"
    assert shown.json()["status"] == "active"


def test_a_temporary_grant_counts_when_ranking_the_target(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    member = factory.member(org, "member")
    _grant(client, org, member, "admin", 60)
    assert _patch(client, org, member.user_id, manager, name="Renamed") == 403
    assert _patch(client, org, member.user_id, manager, status="suspended") == 403
    gone = client.delete(f"/v1/orgs/{org.id}/users/{member.user_id}", headers=manager.headers)
    assert gone.status_code == 403, gone.text
    clock.advance(61)  # the grant has ended: the member is within reach again
    assert _patch(client, org, member.user_id, manager, name="Renamed") == 200


def test_equals_and_below_stay_in_reach_and_anyone_renames_themselves(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    other = factory.member(org, "manager")
    member = factory.member(org, "member")
    assert _patch(client, org, member.user_id, manager, name="M", attributes={"a": 1}) == 200
    assert _patch(client, org, other.user_id, manager, name="Peer") == 200
    assert _patch(client, org, manager.user_id, manager, name="Me") == 200
    assert _patch(client, org, member.user_id, member, name="Also me") == 200
    assert _patch(client, org, manager.user_id, org.admin, name="By admin") == 200


def test_a_viewer_renames_nobody_else(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    other = factory.member(org, "viewer")
    assert _patch(client, org, other.user_id, viewer, name="Renamed") == 403
