"""Targeted behaviour of the authorization engine: freshness across workers, expiry to
the second, who may ask, tenant isolation, invalid and failing rules, explain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.core.clock import clock, utcnow
from tests.conftest import make_settings
from tests.factories import Factory, Org


@pytest.fixture
def other(data_dir: Path, database_url: str) -> Iterator[TestClient]:
    """A second worker with its own engine and indexes, on the same database."""
    app = create_app(make_settings(data_dir, database_url))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _doc(client: TestClient, org: Org, **acl: Any) -> tuple[str, str]:
    base = f"/v1/orgs/{org.id}"
    source = client.post(f"{base}/sources", json={"name": "drive"}, headers=org.headers).json()
    body = {"external_id": "x", "metadata": {"level": 1}, "acl": acl or {"inherit": True}}
    doc = client.post(f"{base}/sources/{source['id']}/documents", json=body, headers=org.headers)
    assert doc.status_code == 201, doc.text
    return source["id"], doc.json()["id"]


def _can(client: TestClient, org: Org, subject: str, action: str, resource: str) -> bool:
    response = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": subject, "action": action, "resource": resource},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["allowed"])


def test_a_grant_on_one_worker_is_seen_by_the_next_check_on_another(
    client: TestClient, other: TestClient, factory: Factory
) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    source, doc = _doc(client, org)
    assert not _can(other, org, viewer.user_id, "read", doc)  # the other worker's index is warm
    url = f"/v1/orgs/{org.id}/sources/{source}/acl/{viewer.user_id}"
    assert client.put(url, json={"relation": "reader"}, headers=org.headers).status_code == 200
    assert _can(other, org, viewer.user_id, "read", doc)
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "eng"}, headers=org.headers)
    team_id = team.json()["id"]
    client.delete(url, headers=org.headers)
    assert not _can(other, org, viewer.user_id, "read", doc)
    client.put(
        f"/v1/orgs/{org.id}/sources/{source}/acl/{team_id}",
        json={"relation": "editor"},
        headers=org.headers,
    )
    assert not _can(other, org, viewer.user_id, "edit", doc)
    client.put(f"/v1/orgs/{org.id}/teams/{team_id}/members/{viewer.user_id}", headers=org.headers)
    assert _can(other, org, viewer.user_id, "edit", doc)  # membership counts at once


def test_expiry_is_enforced_to_the_second(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    until = (utcnow() + timedelta(seconds=30)).isoformat()
    entry = {"principal": viewer.user_id, "relation": "reader", "expires_at": until}
    _, doc = _doc(client, org, inherit=False, entries=[entry])
    assert _can(client, org, viewer.user_id, "read", doc)
    clock.advance(29)
    assert _can(client, org, viewer.user_id, "read", doc)
    clock.advance(1)
    assert not _can(client, org, viewer.user_id, "read", doc)


def test_own_acl_replaces_inheritance(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    reader = factory.member(org, "viewer")
    source, doc = _doc(client, org, inherit=False, entries=[])
    client.put(
        f"/v1/orgs/{org.id}/sources/{source}/acl/{reader.user_id}",
        json={"relation": "owner"},
        headers=org.headers,
    )
    assert _can(client, org, reader.user_id, "share", f"source:{source}")
    assert not _can(client, org, reader.user_id, "read", doc)
    client.patch(f"/v1/orgs/{org.id}/documents/{doc}", json={"inherit": True}, headers=org.headers)
    assert _can(client, org, reader.user_id, "share", doc)


def test_who_may_ask(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    other = factory.member(org, "viewer")
    _, doc = _doc(client, org)
    url = f"/v1/orgs/{org.id}/authz/check"
    mine = {"subject": viewer.user_id, "action": "read", "resource": doc}
    assert client.post(url, json=mine, headers=viewer.headers).status_code == 200
    theirs = {"subject": other.user_id, "action": "read", "resource": doc}
    refused = client.post(url, json=theirs, headers=viewer.headers)
    assert refused.status_code == 403  # needs authz:check, and the 403 is audited


def test_other_tenants_ids_are_unknown(client: TestClient, factory: Factory) -> None:
    a, b = factory.org("A"), factory.org("B")
    _, doc_a = _doc(client, a)
    _, doc_b = _doc(client, b)
    # B's admin asking in B about A's document, or about A's admin: refused as unknown.
    check = client.post(
        f"/v1/orgs/{b.id}/authz/check",
        json={"subject": b.admin.user_id, "action": "read", "resource": doc_a},
        headers=b.headers,
    ).json()
    assert check == {"allowed": False, "reason": "unknown_resource", "trace": None}
    assert not _can(client, b, a.admin.user_id, "read", doc_b)
    filtered = client.post(
        f"/v1/orgs/{b.id}/authz/filter",
        json={
            "subject": b.admin.user_id,
            "action": "read",
            "resource_type": "document",
            "resource_ids": [doc_a, doc_b],
        },
        headers=b.headers,
    ).json()
    assert filtered == {"allowed_ids": [doc_b]}


def test_rules_compile_at_write_and_fail_closed(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    manager = factory.member(org, "manager")
    _, doc = _doc(client, org)
    url = f"/v1/orgs/{org.id}/authz/rules"
    bad = {"effect": "deny", "action": "read", "resource_type": "document", "condition": "a ==="}
    response = client.post(url, json=bad, headers=org.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "condition"
    assert client.get(url, headers=org.headers).json()["data"] == []  # nothing half-written
    assert _can(client, org, manager.user_id, "read", doc)
    errors_before = app.state.bastion.authz.stats.rule_errors
    failing = {**bad, "effect": "allow", "condition": "resource.metadata.nope > 1"}
    assert client.post(url, json=failing, headers=org.headers).status_code == 201
    explained = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": manager.user_id, "action": "read", "resource": doc, "explain": True},
        headers=org.headers,
    ).json()
    assert explained["allowed"] is False
    assert explained["reason"].startswith("rule_error:")
    assert explained["trace"]
    assert app.state.bastion.authz.stats.rule_errors == errors_before + 1


def test_a_deny_rule_that_does_not_give_true_or_false_refuses(
    client: TestClient, factory: Factory
) -> None:
    """`resource.metadata.level` holds 1, not true: the deny rule is of the wrong type,
    and a rule that cannot answer refuses (it used to count as no match: allowed)."""
    org = factory.org()
    viewer = factory.member(org, "viewer")
    source, doc = _doc(client, org)
    grant = f"/v1/orgs/{org.id}/sources/{source}/acl/{viewer.user_id}"
    assert client.put(grant, json={"relation": "reader"}, headers=org.headers).status_code == 200
    assert _can(client, org, viewer.user_id, "read", doc)
    rule = {
        "effect": "deny",
        "action": "read",
        "resource_type": "document",
        "condition": "resource.metadata.level",
    }
    made = client.post(f"/v1/orgs/{org.id}/authz/rules", json=rule, headers=org.headers)
    assert made.status_code == 201, made.text
    checked = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": viewer.user_id, "action": "read", "resource": doc},
        headers=org.headers,
    ).json()
    assert (checked["allowed"], checked["reason"]) == (False, f"rule_error:{made.json()['id']}")
    kept = client.post(
        f"/v1/orgs/{org.id}/authz/filter",
        json={
            "subject": viewer.user_id,
            "action": "read",
            "resource_type": "document",
            "resource_ids": [doc],
        },
        headers=org.headers,
    )
    assert kept.status_code == 200, kept.text
    assert kept.json() == {"allowed_ids": []}


def test_deny_beats_allow_and_explain_names_the_rule(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    _, doc = _doc(client, org)
    url = f"/v1/orgs/{org.id}/authz/rules"
    common = {"action": "read", "resource_type": "document"}
    allow = client.post(
        url, json={**common, "effect": "allow", "condition": "subject.attributes.role == 'viewer'"},
        headers=org.headers,
    ).json()  # fmt: skip
    assert _can(client, org, viewer.user_id, "read", doc)
    deny = client.post(
        url, json={**common, "effect": "deny", "condition": "resource.metadata.level == 1"},
        headers=org.headers,
    ).json()  # fmt: skip
    result = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": viewer.user_id, "action": "read", "resource": doc, "explain": True},
        headers=org.headers,
    ).json()
    assert result["allowed"] is False
    assert result["reason"] == f"rule:{deny['id']}"
    assert any(allow["id"] in line for line in result["trace"])


def test_a_documents_entry_is_not_deleted_through_the_sources_path(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    _, doc = _doc(
        client,
        org,
        **{"inherit": True, "entries": [{"principal": viewer.user_id, "relation": "reader"}]},
    )
    wrong = f"/v1/orgs/{org.id}/sources/{doc}/acl/{viewer.user_id}"
    assert client.put(wrong, json={"relation": "reader"}, headers=org.headers).status_code == 404
    assert client.delete(wrong, headers=org.headers).status_code == 404
    assert _can(client, org, viewer.user_id, "read", doc)  # the document's entry is still there


def test_an_agent_acts_on_behalf_of_a_user_only(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "t"}, headers=org.headers)
    agent = client.post(
        f"/v1/orgs/{org.id}/agents", json={"name": "a", "visibility": "org"}, headers=org.headers
    ).json()["id"]
    _, doc = _doc(client, org)
    for who in (team.json()["id"], agent):
        refused = client.post(
            f"/v1/orgs/{org.id}/authz/check",
            json={"subject": agent, "on_behalf_of": who, "action": "read", "resource": doc},
            headers=org.headers,
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "on_behalf_of"


def test_an_index_is_built_from_one_state_of_the_database(
    client: TestClient, factory: Factory, app: Any
) -> None:
    """While a build reads, a member leaves a team and then the team is granted the
    source: no state ever let the member read, so the index must not either."""
    from sqlalchemy import event

    from bastion.authz import engine

    org = factory.org()
    base, headers = f"/v1/orgs/{org.id}", org.headers
    member = factory.member(org, "viewer").user_id
    team = client.post(f"{base}/teams", json={"name": "x"}, headers=headers).json()["id"]
    joined = client.put(f"{base}/teams/{team}/members/{member}", headers=headers)
    assert joined.status_code in (200, 201, 204), joined.text
    source, doc = _doc(client, org)
    state = app.state.bastion
    bind = state.sessions.kw["bind"]
    fired: list[int] = []

    def meanwhile(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if fired or "FROM acl_entries" not in statement:
            return
        fired.append(1)  # the build has read the memberships, and now reads the grants
        left = client.delete(f"{base}/teams/{team}/members/{member}", headers=headers)
        granted = client.put(
            f"{base}/sources/{source}/acl/{team}", json={"relation": "reader"}, headers=headers
        )
        assert (left.status_code, granted.status_code) == (204, 200)

    event.listen(bind, "before_cursor_execute", meanwhile)
    try:
        with state.sessions() as db:
            index = engine.build_index(db, org.id, (0,))
    finally:
        event.remove(bind, "before_cursor_execute", meanwhile)
    assert fired
    now = utcnow()
    decided = engine.decide(
        index, engine.subject_of(index, member, now), "read", "document", doc, now
    )
    assert not decided.allowed, decided
    assert not _can(client, org, member, "read", doc)  # and the state now agrees
