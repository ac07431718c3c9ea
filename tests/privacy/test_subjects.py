"""Data subject requests: an access package (a ZIP of JSON files with every record
naming the person), erasure (sessions and keys dead, the person gone, their tool calls'
arguments emptied) after which the audit chain still verifies; 404 across
organisations, 4xx naming the field."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, Member, Org, bearer, step_up

FILES = {
    "manifest.json",
    "profile.json",
    "memberships.json",
    "sessions.json",
    "keys.json",
    "factors.json",
    "approvals.json",
    "tool_calls.json",
    "audit_events.json",
}


def _url(org: Org, path: str = "") -> str:
    return f"/v1/orgs/{org.id}/privacy/subject-requests{path}"


def _request(client: TestClient, org: Org, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(_url(org), json=body, headers=org.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _person(client: TestClient, factory: Factory, org: Org) -> tuple[Member, str, str]:
    """An admin in a team, with an API key of their own and a run whose tool call
    carries their phone number: (member, their key's token, the call's id)."""
    member = factory.member(org, "admin")  # may make a key of their own
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "ops"}, headers=org.headers)
    added = client.put(
        f"/v1/orgs/{org.id}/teams/{team.json()['id']}/members/{member.user_id}",
        headers=org.headers,
    )
    assert added.status_code == 204, added.text
    key = factory.api_key(org, role="member", headers=member.headers)
    tools = [{"name": "call_me", "risk": "low"}]
    agent = client.post(
        f"/v1/orgs/{org.id}/agents",
        json={"name": "a", "visibility": "org", "tools": tools},
        headers=org.headers,
    ).json()["id"]
    run = client.post(
        f"/v1/orgs/{org.id}/agents/{agent}/runs", json={}, headers=member.headers
    ).json()
    call = client.post(
        f"/v1/runs/{run['run_id']}/tool-calls",
        json={"tool": "call_me", "arguments": {"phone": "+44 20 7946 0958"}},
        headers=bearer(run["token"]),
    ).json()
    return member, str(key["key"]), str(call["id"])


def _package(client: TestClient, org: Org, request_id: str) -> dict[str, Any]:
    r = client.get(_url(org, f"/{request_id}/package"), headers=org.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


def test_access_package_holds_every_record_naming_the_person(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member, _, call_id = _person(client, factory, org)
    made = _request(client, org, {"kind": "access", "email": member.email.upper()})
    assert made["id"].startswith("dsr_")
    assert made["status"] == "completed"
    assert made["subject_id"] == member.user_id
    files = _package(client, org, made["id"])
    assert set(files) == FILES
    assert files["profile.json"][0]["email"] == member.email
    assert [m["name"] for m in files["memberships.json"]] == ["ops"]
    assert len(files["sessions.json"]) == 1
    assert len(files["keys.json"]) == 1
    assert [c["id"] for c in files["tool_calls.json"]] == [call_id]
    assert any(e["type"] == "user.created" for e in files["audit_events.json"])
    assert all(
        member.user_id in (e["actor"]["id"], e["resource"]["id"])
        for e in files["audit_events.json"]
    )
    assert "token_hash" not in json.dumps(files)
    assert "secret_hash" not in json.dumps(files)
    again = client.get(_url(org, f"/{made['id']}"), headers=org.headers).json()
    assert again["result"]["records"]["tool_calls"] == 1
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"q": member.user_id}, headers=org.headers
    ).json()["data"]
    types = {e["type"] for e in events}
    assert {"privacy_subject.access", "privacy_subject.package_read"} <= types


def test_erasure_kills_access_and_the_chain_still_verifies(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member, key, call_id = _person(client, factory, org)
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    made = _request(client, org, {"kind": "erasure", "user_id": member.user_id})
    assert made["status"] == "completed"
    assert made["result"]["erased"]["sessions"] == 1
    assert made["result"]["erased"]["keys"] == 1
    assert made["result"]["erased"]["tool_calls"] == 1
    # Their session and key are dead, and they are gone.
    assert client.get("/v1/me", headers=member.headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(key)).status_code == 401
    users = client.get(f"/v1/orgs/{org.id}/users", headers=org.headers).json()["data"]
    assert member.user_id not in {u["id"] for u in users}
    assert member.email not in json.dumps(users)
    # An erasure has no package, and the person can no longer be asked for.
    assert client.get(_url(org, f"/{made['id']}/package"), headers=org.headers).status_code == 404
    r = client.post(_url(org), json={"kind": "access", "email": member.email}, headers=org.headers)
    assert r.status_code == 404
    # The chain still verifies; the erasure's own event names only the user id.
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True
    erased = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "privacy_subject.erased"},
        headers=org.headers,
    ).json()["data"]
    assert erased[0]["metadata"]["subject_id"] == member.user_id
    assert member.email not in json.dumps(erased)
    assert call_id  # the call stays (a security record), its arguments emptied


def test_erasure_needs_a_recent_verification(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    body = {"kind": "erasure", "user_id": member.user_id}
    clock.advance(601)  # past the default step_up_max_age (600)
    refused = client.post(_url(org), json=body, headers=org.admin.headers)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "step_up_required"
    assert client.get("/v1/me", headers=member.headers).status_code == 200  # still there
    step_up(client, org.admin.headers)
    done = client.post(_url(org), json=body, headers=org.admin.headers)
    assert done.status_code == 201, done.text


def test_another_organisation_gets_404(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    member = factory.member(org)
    made = _request(client, org, {"kind": "access", "user_id": member.user_id})
    for path in (f"/{made['id']}", f"/{made['id']}/package"):
        assert client.get(_url(other, path), headers=other.headers).status_code == 404
        assert client.get(_url(org, path), headers=other.headers).status_code == 404
    for body in ({"kind": "access", "user_id": member.user_id},
                 {"kind": "erasure", "email": member.email}):  # fmt: skip
        r = client.post(_url(other), json=body, headers=other.headers)
        assert r.status_code == 404, r.text
    assert client.get("/v1/me", headers=member.headers).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "delete", "user_id": "usr_x"}, "kind"),
        ({"kind": "access"}, "user_id"),
        ({"kind": "access", "user_id": "usr_x", "email": "a@example.com"}, "email"),
        ({"kind": "access", "user_id": 5}, "user_id"),
        ({"kind": "access", "email": "x" * 400}, "email"),
    ],
)
def test_bad_bodies_are_4xx_naming_the_field(
    client: TestClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    org = factory.org()
    r = client.post(_url(org), json=body, headers=org.headers)
    assert r.status_code == 422, r.text
    assert field in r.text


def _events_about(client: TestClient, org: Org, user_id: str) -> list[dict[str, Any]]:
    r = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"resource": user_id}, headers=org.headers
    )
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _export(client: TestClient, org: Org, fmt: str) -> str:
    r = client.get(
        f"/v1/orgs/{org.id}/audit-events/export", params={"format": fmt}, headers=org.headers
    )
    assert r.status_code == 200, r.text
    return r.text


def test_erasure_pseudonymises_the_email_in_the_audit_trail_and_it_still_verifies(
    client: TestClient, factory: Factory
) -> None:
    org, other_org = factory.org(), factory.org()
    person, bystander = factory.member(org), factory.member(org)
    stranger = factory.member(other_org)
    (created,) = [
        e for e in _events_about(client, org, person.user_id) if e["type"] == "user.created"
    ]
    # Before: the email reads as it was, its commitment beside it (what the hash covers).
    assert created["metadata"]["email"] == person.email
    commitment = created["metadata"]["_pii"]["email"]["c"]
    made = _request(client, org, {"kind": "erasure", "user_id": person.user_id})
    assert made["result"]["erased"]["audit_events"] >= 1
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True, verified.json()
    # After: a pseudonym, the commitment kept, no salt; nowhere in search or export.
    (after,) = [
        e for e in _events_about(client, org, person.user_id) if e["type"] == "user.created"
    ]
    assert after["metadata"]["email"] == "pii_" + commitment[:16]
    assert after["metadata"]["_pii"] == {"email": {"c": commitment}}
    assert after["hash"] == created["hash"]
    for fmt in ("jsonl", "csv"):
        exported = _export(client, org, fmt)
        assert person.email not in exported
        assert "pii_" + commitment[:16] in exported
        assert bystander.email in exported  # other users' events untouched
    # Another organisation's events are untouched, and its chain verifies.
    theirs = _events_about(client, other_org, stranger.user_id)
    assert stranger.email in json.dumps(theirs)
    verified = client.post(
        f"/v1/orgs/{other_org.id}/audit-events/verify", headers=other_org.headers
    )
    assert verified.json()["valid"] is True
    # A second erasure request for the same id finds no one (the person is gone).
    again = client.post(
        _url(org), json={"kind": "erasure", "user_id": person.user_id}, headers=org.headers
    )
    assert again.status_code == 404
