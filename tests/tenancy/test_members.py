"""Team members are users, which identity (a layer above) owns: tenancy checks a new
member only through the lookup identity registers, and refuses when there is none."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.tenancy import service as tenancy
from tests.factories import Factory


def _team(client: TestClient, factory: Factory) -> tuple[str, str, dict[str, str], str]:
    org = factory.org()
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "t"}, headers=org.headers)
    assert team.status_code == 201, team.text
    member = factory.member(org, "viewer")
    return f"/v1/orgs/{org.id}/teams/{team.json()['id']}", member.user_id, org.headers, org.id


def test_identity_vouches_for_members(client: TestClient, factory: Factory) -> None:
    team, user_id, headers, _ = _team(client, factory)
    assert client.put(f"{team}/members/{user_id}", headers=headers).status_code in (200, 201, 204)
    assert client.get(team, headers=headers).json()["member_ids"] == [user_id]
    stranger = client.put(f"{team}/members/usr_{'0' * 26}", headers=headers)
    assert stranger.status_code == 404


def test_without_a_user_lookup_nobody_is_added(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    team, user_id, headers, _ = _team(client, factory)
    monkeypatch.setattr(tenancy, "_user_lookup", [])
    assert client.put(f"{team}/members/{user_id}", headers=headers).status_code == 404
    assert client.get(team, headers=headers).json()["member_ids"] == []
