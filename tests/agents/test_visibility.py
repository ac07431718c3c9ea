"""Who may read, use and edit an agent (each visibility and role), the public hub and
cloning, and agents acting for users on data (`on_behalf_of`)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Member, Org

VISIBILITIES = ["private", "team", "org", "public"]
ROLES = ["manager", "member", "viewer"]


def _expected(visibility: str, role: str, in_team: bool, action: str) -> bool:
    """The model of docs/authorization.md, written out plainly."""
    visible = visibility in ("org", "public") or (visibility == "team" and in_team)
    if not visible:
        return False
    if action == "read":
        return True
    if action == "use":
        return role != "viewer"
    return False  # edit, share, delete: owner and agents:manage only


class Setting:
    def __init__(self, client: TestClient, factory: Factory) -> None:
        self.client, self.factory = client, factory
        self.org: Org = factory.org()
        self.owner: Member = factory.member(self.org, "member")
        self.team = self.post("teams", {"name": "support"})["id"]

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        response = self.client.post(
            f"/v1/orgs/{self.org.id}/{path}", json=body, headers=headers or self.org.headers
        )
        assert response.status_code == 201, response.text
        return response.json()

    def join(self, member: Member) -> None:
        url = f"/v1/orgs/{self.org.id}/teams/{self.team}/members/{member.user_id}"
        assert self.client.put(url, headers=self.org.headers).status_code in (200, 201, 204)

    def agent(self, visibility: str) -> str:
        body = {
            "name": f"agent-{visibility}",
            "visibility": visibility,
            "team_ids": [self.team] if visibility == "team" else [],
            "tools": [{"name": "search", "risk": "low"}],
            "connections": ["github"],
        }
        return str(self.post("agents", body, headers=self.owner.headers)["id"])

    def check(self, subject: str, action: str, resource: str, **extra: Any) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/orgs/{self.org.id}/authz/check",
            json={"subject": subject, "action": action, "resource": resource, **extra},
            headers=self.org.headers,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def matrix_world(app) -> Any:  # type: ignore[no-untyped-def]
    with TestClient(app, raise_server_exceptions=False) as client:
        s = Setting(client, Factory(app.state.bastion, client))
        people = {}
        for role in ROLES:
            for in_team in (True, False):
                member = s.factory.member(s.org, role)
                if in_team:
                    s.join(member)
                people[(role, in_team)] = member
        agents = {v: s.agent(v) for v in VISIBILITIES}
        yield s, people, agents


@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("in_team", [True, False])
def test_visibility_by_role(matrix_world: Any, visibility: str, role: str, in_team: bool) -> None:
    s, people, agents = matrix_world
    who: Member = people[(role, in_team)]
    agent = agents[visibility]
    base = f"/v1/orgs/{s.org.id}/agents/{agent}"
    read = s.client.get(base, headers=who.headers)
    assert (read.status_code == 200) == _expected(visibility, role, in_team, "read")
    if read.status_code != 200:
        assert read.status_code == 404  # not visible: it does not exist for them
    listed = s.client.get(f"/v1/orgs/{s.org.id}/agents", headers=who.headers).json()["data"]
    assert (agent in [a["id"] for a in listed]) == _expected(visibility, role, in_team, "read")
    run = s.client.post(f"{base}/runs", json={}, headers=who.headers)
    assert (run.status_code == 201) == _expected(visibility, role, in_team, "use"), run.text
    edit = s.client.patch(base, json={"description": "mine now"}, headers=who.headers)
    assert edit.status_code == (403 if read.status_code == 200 else 404)
    for action in ("read", "use", "edit", "share", "delete"):
        answer = s.check(who.user_id, action, f"agent:{agent}")
        assert answer["allowed"] == _expected(visibility, role, in_team, action), (action, answer)


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_owner_and_admin_do_everything(matrix_world: Any, visibility: str) -> None:
    s, _, agents = matrix_world
    agent = agents[visibility]
    for who in (s.owner.user_id, s.org.admin.user_id):
        for action in ("read", "use", "edit", "share", "delete"):
            assert s.check(who, action, agent)["allowed"], (who, action)
    base = f"/v1/orgs/{s.org.id}/agents/{agent}"
    assert (
        s.client.patch(base, json={"description": "x"}, headers=s.owner.headers).status_code == 200
    )
    assert s.client.post(f"{base}/runs", json={}, headers=s.owner.headers).status_code == 201


def test_hub_lists_public_agents_across_orgs_read_only(
    client: TestClient, factory: Factory
) -> None:
    a = Setting(client, factory)
    public, private = a.agent("public"), a.agent("org")
    b = factory.org()
    hub = client.get("/v1/hub/agents", params={"limit": 200}, headers=b.headers).json()["data"]
    listed = {h["id"]: h for h in hub}
    assert public in listed
    assert private not in listed
    assert "secrets" not in listed[public]
    assert "connections" not in listed[public]
    assert listed[public]["tools"][0]["name"] == "search"
    # Nothing else crosses: B cannot read, use or edit A's public agent through A's org.
    base = f"/v1/orgs/{a.org.id}/agents/{public}"
    assert client.get(base, headers=b.headers).status_code == 404
    assert client.patch(base, json={"name": "x"}, headers=b.headers).status_code == 404
    assert client.post(f"{base}/runs", json={}, headers=b.headers).status_code == 404
    # B clones it into its own org: definition only, private to B's cloner.
    clone = client.post(
        f"/v1/orgs/{b.id}/agents", json={"from_hub": public}, headers=b.headers
    ).json()
    assert clone["org_id"] == b.id
    assert clone["cloned_from"] == public
    assert clone["visibility"] == "private"
    assert clone["secrets"] == []
    assert clone["connections"] == []
    assert [t["digest"] for t in clone["tools"]] == [t["digest"] for t in listed[public]["tools"]]
    refused = client.post(f"/v1/orgs/{b.id}/agents", json={"from_hub": private}, headers=b.headers)
    assert refused.status_code == 422


def test_agent_acting_for_a_user_needs_both(client: TestClient, factory: Factory) -> None:
    s = Setting(client, factory)
    reader = factory.member(s.org, "member")
    outsider = factory.member(s.org, "member")
    connected = s.post("sources", {"name": "wiki"})["id"]
    other = s.post("sources", {"name": "hr"})["id"]
    for source in (connected, other):
        url = f"/v1/orgs/{s.org.id}/sources/{source}/acl/{reader.user_id}"
        client.put(url, json={"relation": "reader"}, headers=s.org.headers)
    docs = {
        src: s.post(f"sources/{src}/documents", {"external_id": src, "metadata": {}})["id"]
        for src in (connected, other)
    }
    agent = s.post("agents", {"name": "rag", "visibility": "org", "connections": [connected]})["id"]
    assert s.check(agent, "read", docs[connected])["allowed"]
    assert not s.check(agent, "read", docs[other])["allowed"]
    both = s.check(agent, "read", docs[connected], on_behalf_of=reader.user_id, explain=True)
    assert both["allowed"]
    assert both["reason"].startswith("agent:connection:")
    assert not s.check(agent, "read", docs[other], on_behalf_of=reader.user_id)["allowed"]
    denied = s.check(agent, "read", docs[connected], on_behalf_of=outsider.user_id)
    assert not denied["allowed"]
    assert denied["reason"].startswith("on_behalf_of:")
    filtered = client.post(
        f"/v1/orgs/{s.org.id}/authz/filter",
        json={
            "subject": agent,
            "action": "read",
            "resource_type": "document",
            "resource_ids": [docs[other], docs[connected]],
            "on_behalf_of": reader.user_id,
        },
        headers=s.org.headers,
    ).json()
    assert filtered["allowed_ids"] == [docs[connected]]
    sf = client.post(
        f"/v1/orgs/{s.org.id}/authz/search-filter",
        json={"subject": agent, "on_behalf_of": reader.user_id},
        headers=s.org.headers,
    ).json()
    for src, doc in docs.items():
        tokens = set(
            client.get(
                f"/v1/orgs/{s.org.id}/documents/{doc}/acl-tokens", headers=s.org.headers
            ).json()["tokens"]
        )
        passes = bool(tokens & set(sf["acl_tokens"])) and bool(tokens & set(sf["required_tokens"]))
        assert passes == (src == connected)
    bad = client.post(
        f"/v1/orgs/{s.org.id}/authz/check",
        json={
            "subject": reader.user_id,
            "action": "read",
            "resource": docs[connected],
            "on_behalf_of": outsider.user_id,
        },
        headers=s.org.headers,
    )
    assert bad.status_code == 422
