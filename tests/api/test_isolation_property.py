"""Tenant isolation as a property: whatever two organisations create, change or delete,
neither can see, reach or change anything of the other's. Hypothesis generates
interleaved sequences of writes in two orgs; after each sequence, every object of one
org is a 404 for the other's admin (through both orgs' URLs), and every listing and
audit trail holds only its own org's objects."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import PASSWORD, Factory, Org, unique_email

KINDS = {
    "teams": "/teams",
    "users": "/users",
    "api-keys": "/api-keys",
    "roles": "/roles",
    "service-accounts": "/service-accounts",
}
ROLES = ["admin", "manager", "member", "viewer"]
PERMISSIONS = ["users:read", "teams:read", "audit:read", "apikeys:manage", "teams:manage"]

action = st.one_of(
    st.tuples(st.just("teams"), st.sampled_from([0, 1])),
    st.tuples(st.just("users"), st.sampled_from([0, 1]), st.sampled_from(ROLES)),
    st.tuples(st.just("api-keys"), st.sampled_from([0, 1]), st.sampled_from(ROLES)),
    st.tuples(
        st.just("roles"),
        st.sampled_from([0, 1]),
        st.lists(st.sampled_from(PERMISSIONS), min_size=1, max_size=3, unique=True),
    ),
    st.tuples(st.just("service-accounts"), st.sampled_from([0, 1]), st.sampled_from(ROLES)),
    st.tuples(st.just("member"), st.sampled_from([0, 1])),
    st.tuples(st.just("rename"), st.sampled_from([0, 1])),
    st.tuples(st.just("delete"), st.sampled_from([0, 1])),
)
DELETABLE = ("teams", "api-keys", "service-accounts")


def _apply(
    client: TestClient, org: Org, step: tuple[Any, ...], mine: list[tuple[str, str]]
) -> tuple[str, str] | None:
    """Perform one step in `org`; returns what it created, if anything."""
    kind = step[0]
    base = f"/v1/orgs/{org.id}"
    tag = uuid.uuid4().hex[:8]
    if kind == "teams":
        body: dict[str, Any] = {"name": f"team-{tag}"}
    elif kind == "users":
        body = {"email": unique_email(), "name": "U", "role": step[2], "password": PASSWORD}
    elif kind == "api-keys":
        body = {"name": f"key-{tag}", "role": step[2]}
    elif kind == "roles":
        body = {"name": f"role-{tag}", "permissions": step[2]}
    elif kind == "service-accounts":
        body = {"name": f"sa-{tag}", "role": step[2]}
    elif kind in ("rename", "delete"):
        targets = [(k, i) for k, i in mine if k in DELETABLE]
        if targets:
            target_kind, target_id = targets[-1]
            url = f"{base}{KINDS[target_kind]}/{target_id}"
            if kind == "delete" or target_kind != "teams":
                response = client.delete(url, headers=org.headers)
                assert response.status_code in (204, 404), response.text  # 404: already gone
            else:
                response = client.patch(url, json={"name": f"renamed-{tag}"}, headers=org.headers)
                assert response.status_code in (200, 404), response.text
        return None
    else:  # add the newest user to the newest team, when both exist
        teams = client.get(f"{base}/teams", headers=org.headers).json()["data"]
        users = client.get(f"{base}/users", headers=org.headers).json()["data"]
        if teams and users:
            put = client.put(
                f"{base}/teams/{teams[0]['id']}/members/{users[0]['id']}", headers=org.headers
            )
            assert put.status_code == 204, put.text
        return None
    response = client.post(f"{base}{KINDS[kind]}", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    return kind, str(response.json()["id"])


@given(steps=st.lists(action, min_size=1, max_size=5))
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def _property(client: TestClient, orgs: tuple[Org, Org], steps: list[tuple[Any, ...]]) -> None:
    created: list[list[tuple[str, str]]] = [[], []]
    for step in steps:
        made = _apply(client, orgs[step[1]], step, created[step[1]])
        if made is not None:
            created[step[1]].append(made)
    for mine in (0, 1):
        me, them = orgs[mine], orgs[1 - mine]
        for kind, object_id in created[1 - mine]:
            # Through my own org's URL: not found. Through theirs: the org is not found.
            for org_id in (me.id, them.id):
                url = f"/v1/orgs/{org_id}{KINDS[kind]}/{object_id}"
                for method in ("GET", "PATCH", "DELETE"):
                    kw = {"json": {}} if method == "PATCH" else {}
                    response = client.request(method, url, headers=me.headers, **kw)
                    assert response.status_code in (404, 405), (method, url, response.text)
        theirs = {object_id for _, object_id in created[1 - mine]} | {them.id}
        for kind, path in KINDS.items():
            listed = client.get(f"/v1/orgs/{me.id}{path}?limit=200", headers=me.headers)
            assert listed.status_code == 200, listed.text
            assert not theirs & {item["id"] for item in listed.json()["data"]}, kind
        events = client.get(f"/v1/orgs/{me.id}/audit-events?limit=200", headers=me.headers).json()[
            "data"
        ]
        assert not theirs & {(e.get("resource") or {}).get("id") for e in events}
        assert not theirs & {(e.get("actor") or {}).get("id") for e in events}


def test_two_orgs_never_see_each_other(client: TestClient, factory: Factory) -> None:
    orgs = (factory.org("Alpha"), factory.org("Beta"))
    _property(client, orgs)
