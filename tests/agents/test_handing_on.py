"""An agent never holds more than whoever configured it, whoever started its run and the
user it acts for: secrets, connected sources and workflows are checked when they are
configured and again when they are used (issue 12, findings 1 and 3)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Member, Org, bearer


class World:
    def __init__(self, client: TestClient, factory: Factory) -> None:
        self.client, self.factory = client, factory
        self.org: Org = factory.org()
        self.admin: Member = self.org.admin
        self.second_admin = factory.member(self.org, "admin")
        self.member = factory.member(self.org, "member")
        assert self.put("secrets/stripe-key", {"value": "org-value"}).status_code == 200

    def url(self, path: str) -> str:
        return f"/v1/orgs/{self.org.id}/{path}"

    def post(self, path: str, body: dict[str, Any], who: Member | None = None) -> Any:
        headers = who.headers if who else self.org.headers
        return self.client.post(self.url(path), json=body, headers=headers)

    def put(self, path: str, body: dict[str, Any], who: Member | None = None) -> Any:
        headers = who.headers if who else self.org.headers
        return self.client.put(self.url(path), json=body, headers=headers)

    def patch(self, path: str, body: dict[str, Any], who: Member | None = None) -> Any:
        headers = who.headers if who else self.org.headers
        return self.client.patch(self.url(path), json=body, headers=headers)

    def agent(self, who: Member, **body: Any) -> str:
        created = self.post("agents", {"name": "a", "visibility": "org", **body}, who)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def run(self, agent: str, who: Member, **body: Any) -> Any:
        return self.post(f"agents/{agent}/runs", body, who)

    def reveal(self, token: str, name: str = "stripe-key") -> Any:
        return self.client.post(self.url(f"secrets/{name}/reveal"), json={}, headers=bearer(token))

    def set_role(self, who: Member, role: str) -> None:
        changed = self.patch(f"users/{who.user_id}", {"role": role})
        assert changed.status_code == 200, changed.text

    def events(self, kind: str) -> list[dict[str, Any]]:
        found = self.client.get(
            self.url("audit-events"), params={"type": kind}, headers=self.org.headers
        )
        return list(found.json()["data"])


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


# --- secrets ---------------------------------------------------------------------------


def test_a_member_cannot_give_an_agent_secrets(w: World) -> None:
    created = w.post("agents", {"name": "mine", "secrets": ["stripe-key"]}, w.member)
    assert created.status_code == 403
    assert created.json()["detail"] == "giving an agent secrets needs the right to reveal them"
    own = w.agent(w.member)
    assert w.patch(f"agents/{own}", {"secrets": ["stripe-key"]}, w.member).status_code == 403
    assert w.client.get(w.url(f"agents/{own}"), headers=w.org.headers).json()["secrets"] == []


def test_a_member_running_an_agent_cannot_reveal_its_secrets(w: World) -> None:
    agent = w.agent(w.admin, secrets=["stripe-key"])
    started = w.run(agent, w.member)
    assert started.status_code == 201  # the agent is usable, its secrets are not theirs
    refused = w.reveal(started.json()["token"])
    assert refused.status_code == 403
    assert "whoever started the run" in refused.json()["detail"]
    assert "org-value" not in refused.text
    (event,) = [
        e for e in w.events("run.started") if e["resource"]["id"] == started.json()["run_id"]
    ]
    assert event["metadata"]["reveal_withheld"] == "whoever started the run may not reveal secrets"


def test_acting_for_a_user_who_may_not_reveal_withholds_secrets(w: World) -> None:
    agent = w.agent(w.admin, secrets=["stripe-key"])
    started = w.run(agent, w.admin, on_behalf_of=w.member.user_id)
    assert started.status_code == 201
    refused = w.reveal(started.json()["token"])
    assert refused.status_code == 403
    assert "the user it acts for" in refused.json()["detail"]


def test_a_configurer_who_loses_the_right_no_longer_passes_it_on(w: World) -> None:
    agent = w.agent(w.second_admin, secrets=["stripe-key"])
    before = w.run(agent, w.admin)
    assert w.reveal(before.json()["token"]).json()["value"] == "org-value"
    w.set_role(w.second_admin, "manager")
    # The running run loses it at once, and a new run starts without it.
    assert w.reveal(before.json()["token"]).status_code == 403
    after = w.run(agent, w.admin)
    refused = w.reveal(after.json()["token"])
    assert refused.status_code == 403
    assert "its configurer" in refused.json()["detail"]
    w.set_role(w.second_admin, "admin")
    assert w.reveal(after.json()["token"]).json()["value"] == "org-value"


def test_an_editor_becomes_the_configurer_of_the_whole_set(w: World) -> None:
    source = w.post("sources", {"name": "wiki"}).json()["id"]
    agent = w.agent(w.admin, secrets=["stripe-key"])
    manager = w.factory.member(w.org, "manager")
    # A manager may connect sources (sources:manage) but may not take over secrets.
    assert w.patch(f"agents/{agent}", {"connections": [source]}, manager).status_code == 403
    assert w.patch(f"agents/{agent}", {"connections": [source]}, w.admin).status_code == 200


# --- workflows -------------------------------------------------------------------------


def test_a_run_binds_only_to_a_workflow_that_admits_its_agent(w: World) -> None:
    agent = w.agent(w.admin, secrets=["stripe-key"])
    free_text = w.run(agent, w.admin, workflow_id="payments")
    assert free_text.status_code == 422
    assert free_text.json()["errors"][0]["field"] == "workflow_id"
    wf = w.post("workflows", {"name": "payments"}).json()["id"]
    assert w.run(agent, w.admin, workflow_id=wf).status_code == 403  # does not admit it
    assert w.post("workflows", {"name": "ops"}, w.member).status_code == 403
    assert w.patch(f"workflows/{wf}", {"agent_ids": [agent]}).status_code == 200
    assert w.put(
        "secrets/stripe-key", {"value": "wf-value", "scope": {"workflow_id": wf}}
    ).is_success
    started = w.run(agent, w.admin, workflow_id=wf)
    assert started.status_code == 201
    assert w.reveal(started.json()["token"]).json()["value"] == "wf-value"
    assert w.patch(f"workflows/{wf}", {"agent_ids": []}).status_code == 200
    refused = w.reveal(started.json()["token"])
    assert refused.status_code == 403
    assert "workflow" in refused.json()["detail"]


def test_workflows_are_tenant_scoped(w: World, factory: Factory) -> None:
    wf = w.post("workflows", {"name": "payments"}).json()["id"]
    other = factory.org()
    url = f"/v1/orgs/{other.id}/workflows/{wf}"
    assert w.client.get(url, headers=other.headers).status_code == 404
    assert w.client.get(w.url(f"workflows/{wf}"), headers=w.member.headers).status_code == 200
    mine = w.client.get(w.url("workflows"), headers=w.org.headers).json()["data"]
    assert [x["id"] for x in mine] == [wf]


# --- connected sources -----------------------------------------------------------------


def test_connecting_a_source_needs_edit_on_it(w: World) -> None:
    source = w.post("sources", {"name": "hr"}).json()["id"]
    doc = w.post(f"sources/{source}/documents", {"external_id": "d1", "metadata": {}}).json()["id"]
    acl = f"sources/{source}/acl/{w.member.user_id}"
    assert w.put(acl, {"relation": "reader"}).status_code == 200
    refused = w.post("agents", {"name": "rag", "connections": [source]}, w.member)
    assert refused.status_code == 403
    assert w.put(acl, {"relation": "editor"}).status_code == 200
    agent = w.agent(w.member, connections=[source])

    def agent_reads() -> bool:
        body = {"subject": agent, "action": "read", "resource": doc}
        answer = w.client.post(w.url("authz/check"), json=body, headers=w.org.headers)
        return bool(answer.json()["allowed"])

    assert agent_reads()
    assert w.put(acl, {"relation": "reader"}).status_code == 200  # the member is demoted
    assert not agent_reads()  # the agent lost what its configurer can no longer hand on
    sf = w.client.post(
        w.url("authz/search-filter"), json={"subject": agent}, headers=w.org.headers
    ).json()
    assert sf["acl_tokens"] == []  # its search filter matches nothing either


def test_the_gate_refuses_a_connection_its_configurer_lost(w: World) -> None:
    source = w.post("sources", {"name": "crm"}).json()["id"]
    acl = f"sources/{source}/acl/{w.member.user_id}"
    assert w.put(acl, {"relation": "owner"}).status_code == 200
    tools = [{"name": "lookup", "risk": "low", "connection": source}]
    agent = w.agent(w.member, connections=[source], tools=tools)
    token = w.run(agent, w.member).json()
    call = {"tool": "lookup", "arguments": {}}
    url = f"/v1/runs/{token['run_id']}/tool-calls"
    first = w.client.post(url, json=call, headers=bearer(token["token"]))
    assert first.json()["decision"] == "allow", first.text
    assert w.client.delete(w.url(acl), headers=w.org.headers).status_code == 204
    second = w.client.post(url, json=call, headers=bearer(token["token"]))
    assert (second.json()["decision"], second.json()["reason"]) == (
        "deny",
        f"connection_withheld:{source}",
    )
