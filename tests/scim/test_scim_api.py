"""SCIM over HTTP: tokens, isolation, de-provisioning, the last admin, Okta's and
Entra's PATCH payloads, errors as SCIM documents, ETags, paging and projection."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import notifier
from tests.factories import PASSWORD, Factory, bearer, unique_email
from tests.scim.conftest import ERROR_URN, GROUP_URN, USER_URN, Scim, new_token


def _error(response: Any, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = dict(response.json())
    assert body["schemas"] == [ERROR_URN]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


# --- tokens -------------------------------------------------------------------------


def test_token_is_listed_without_its_secret_and_revoked_at_once(scim: Scim) -> None:
    org = scim.org
    listed = scim.client.get(f"/v1/orgs/{org.id}/scim-tokens", headers=org.headers)
    assert listed.status_code == 200
    assert scim.token not in listed.text
    assert [t["id"] for t in listed.json()["data"]] == [scim.token_id]
    assert scim.get("/Users").status_code == 200
    revoked = scim.client.delete(
        f"/v1/orgs/{org.id}/scim-tokens/{scim.token_id}", headers=org.headers
    )
    assert revoked.status_code == 204
    _error(scim.get("/Users"), 401)


def test_member_cannot_create_tokens(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    response = client.post(f"/v1/orgs/{org.id}/scim-tokens", json={}, headers=member.headers)
    assert response.status_code == 403


def test_token_creation_needs_step_up_for_a_person(client: TestClient, factory: Factory) -> None:
    from bastion.core.clock import clock

    org = factory.org()
    clock.advance(601)
    response = client.post(f"/v1/orgs/{org.id}/scim-tokens", json={}, headers=org.admin.headers)
    assert response.status_code == 401
    assert response.json()["code"] == "step_up_required"


def test_scim_token_acts_nowhere_else_and_other_credentials_are_refused(scim: Scim) -> None:
    org = scim.org
    for path in ("/v1/me", f"/v1/orgs/{org.id}/users", f"/v1/orgs/{org.id}/scim-tokens"):
        assert scim.client.get(path, headers=bearer(scim.token)).status_code == 403
    for other in (org.admin_key, org.admin.token):
        _error(scim.client.get("/scim/v2/Users", headers=bearer(other)), 401)
    _error(scim.client.get("/scim/v2/Users"), 401)


def test_cross_org_isolation(client: TestClient, factory: Factory, scim: Scim) -> None:
    other_org = factory.org()
    other_token, _ = new_token(client, other_org)
    other = Scim(client, other_org, other_token, "")
    theirs = other.user(unique_email("b"))
    _error(scim.get(f"/Users/{theirs['id']}"), 404)
    _error(
        scim.patch(f"/Users/{theirs['id']}", [{"op": "replace", "path": "active", "value": False}]),
        404,
    )
    _error(scim.delete(f"/Users/{theirs['id']}"), 404)
    _error(scim.get(f"/Users/{other_org.admin.user_id}"), 404)
    listed = scim.get("/Users", params={"filter": f'userName eq "{theirs["userName"]}"'})
    assert listed.json()["totalResults"] == 0
    group = other.post("/Groups", {"schemas": [GROUP_URN], "displayName": "Theirs"}).json()
    _error(scim.get(f"/Groups/{group['id']}"), 404)
    # and a member of another org cannot be added to one's group
    _error(
        scim.post(
            "/Groups",
            {"schemas": [GROUP_URN], "displayName": "Mine", "members": [{"value": theirs["id"]}]},
        ),
        400,
        "invalidValue",
    )


# --- de-provisioning ------------------------------------------------------------------


def test_deactivation_ends_sessions_and_keys_at_once(scim: Scim, factory: Factory) -> None:
    org, client = scim.org, scim.client
    member = factory.member(org, role="admin")
    key = factory.api_key(org, role="member", headers=member.headers)["key"]
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert client.get("/v1/me", headers=bearer(key)).status_code == 200
    response = scim.patch(
        f"/Users/{member.user_id}", [{"op": "replace", "value": {"active": False}}]
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert client.get("/v1/me", headers=member.headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(key)).status_code == 401
    assert (
        client.post(
            "/v1/auth/login", json={"email": member.email, "password": PASSWORD}
        ).status_code
        == 401
    )
    # reactivated: signs in again (the old session stays ended)
    back = scim.patch(
        f"/Users/{member.user_id}", [{"op": "replace", "path": "active", "value": True}]
    )
    assert back.json()["active"] is True
    assert client.get("/v1/me", headers=member.headers).status_code == 401
    factory.login(member.email)


def test_delete_ends_sessions_and_keys(scim: Scim, factory: Factory) -> None:
    org, client = scim.org, scim.client
    member = factory.member(org, role="admin")
    key = factory.api_key(org, role="member", headers=member.headers)["key"]
    assert scim.delete(f"/Users/{member.user_id}").status_code == 204
    assert client.get("/v1/me", headers=member.headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(key)).status_code == 401
    _error(scim.get(f"/Users/{member.user_id}"), 404)


def test_last_admin_is_kept_and_admin_deprovisioning_alerts(scim: Scim, factory: Factory) -> None:
    org, client = scim.org, scim.client
    rule = {"name": "scim", "kind": "scim_admin_deprovisioned", "params": {}}
    assert (
        client.post(f"/v1/orgs/{org.id}/alert-rules", json=rule, headers=org.headers).status_code
        == 201
    )
    admin = org.admin.user_id
    body = _error(
        scim.patch(f"/Users/{admin}", [{"op": "replace", "path": "active", "value": False}]), 409
    )
    assert "admin" in body["detail"]
    _error(scim.delete(f"/Users/{admin}"), 409)
    assert client.get("/v1/me", headers=org.admin.headers).status_code == 200
    second = factory.member(org, role="admin")
    assert (
        scim.patch(
            f"/Users/{admin}", [{"op": "replace", "path": "active", "value": False}]
        ).status_code
        == 200
    )
    _error(scim.delete(f"/Users/{second.user_id}"), 409)  # now the last one
    state = factory.state
    alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    found = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"]
    assert [a["kind"] for a in found] == ["scim_admin_deprovisioned"]
    assert found[0]["key"] == f"user:{admin}"
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "scim_user.deprovisioned"},
        headers=second.headers,
    ).json()["data"]
    assert events[0]["actor"] == {**events[0]["actor"], "type": "scim_token", "id": scim.token_id}


# --- Okta and Entra payloads ----------------------------------------------------------


def test_okta_user_lifecycle(scim: Scim) -> None:
    # What Okta sends (developer.okta.com "SCIM 2.0 protocol reference"): a lookup by
    # userName, a create, a PUT on profile change and a PATCH of active.
    email = unique_email("okta")
    found = scim.get(
        "/Users", params={"filter": f'userName eq "{email}"', "startIndex": 1, "count": 100}
    )
    assert found.json()["totalResults"] == 0
    created = scim.user(
        email,
        name={"givenName": "Ann", "familyName": "Lee"},
        emails=[{"primary": True, "value": email, "type": "work"}],
        displayName="Ann Lee",
        locale="en-US",
        externalId="00u1abc",
        groups=[],
    )
    uid = created["id"]
    full = dict(created)
    full["name"] = {"givenName": "Ann", "familyName": "Smith"}
    put = scim.put(f"/Users/{uid}", {k: v for k, v in full.items() if k != "meta"})
    assert put.status_code == 200, put.text
    assert put.json()["name"]["familyName"] == "Smith"
    off = scim.patch(f"/Users/{uid}", [{"op": "replace", "value": {"active": False}}])
    assert off.json()["active"] is False
    listed = scim.get("/Users", params={"filter": 'externalId eq "00u1abc"'}).json()
    assert [r["id"] for r in listed["Resources"]] == [uid]


def test_entra_patch_payloads(scim: Scim) -> None:
    # What Microsoft Entra sends (learn.microsoft.com "Develop a SCIM endpoint"):
    # capitalised ops, "False" strings, filtered paths and URN paths.
    email = unique_email("entra")
    created = scim.user(
        email, externalId="e-1", emails=[{"value": email, "type": "work", "primary": True}]
    )
    uid = created["id"]
    new_mail = unique_email("entra2")
    ops = [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": new_mail},
        {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0100"},
        {"op": "Replace", "path": "name.givenName", "value": "Ann"},
        {
            "op": "Add",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "value": "R&D",
        },
        {"op": "Replace", "path": "displayName", "value": "Ann E."},
        {"op": "Replace", "path": "active", "value": "False"},
    ]
    response = scim.patch(f"/Users/{uid}", ops)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["emails"][0]["value"] == new_mail
    assert doc["phoneNumbers"] == [{"type": "mobile", "value": "+1 555 0100"}]
    assert doc["name"]["givenName"] == "Ann"
    assert doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] == {
        "department": "R&D"
    }
    assert doc["active"] is False
    # Entra's filter form: emails[type eq "work"].value eq "x"
    found = scim.get("/Users", params={"filter": f'emails[type eq "work"].value eq "{new_mail}"'})
    assert [r["id"] for r in found.json()["Resources"]] == [uid]
    removed = scim.patch(
        f"/Users/{uid}", [{"op": "Remove", "path": 'phoneNumbers[type eq "mobile"]'}]
    )
    assert "phoneNumbers" not in removed.json() or removed.json()["phoneNumbers"] == []


def test_group_members_add_remove_like_okta_and_entra(scim: Scim) -> None:
    a, b = scim.user(unique_email("a")), scim.user(unique_email("b"))
    group = scim.post(
        "/Groups",
        {
            "schemas": [GROUP_URN],
            "displayName": "Eng",
            "externalId": "g-1",
            "members": [{"value": a["id"]}],
        },
    )
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    added = scim.patch(
        f"/Groups/{gid}",
        [{"op": "add", "path": "members", "value": [{"value": b["id"], "display": "B"}]}],
    )
    assert sorted(m["value"] for m in added.json()["members"]) == sorted([a["id"], b["id"]])
    # Okta: remove with a filtered path; Entra: remove with a value list
    gone = scim.patch(
        f"/Groups/{gid}", [{"op": "remove", "path": f'members[value eq "{a["id"]}"]'}]
    )
    assert [m["value"] for m in gone.json()["members"]] == [b["id"]]
    gone2 = scim.patch(
        f"/Groups/{gid}", [{"op": "Remove", "path": "members", "value": [{"value": b["id"]}]}]
    )
    assert gone2.json()["members"] == []
    # Okta's group rename: a path-less replace whose value carries the group's id
    okta = [{"op": "replace", "value": {"id": gid, "displayName": "Eng Team"}}]
    renamed = scim.patch(f"/Groups/{gid}", okta)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["displayName"] == "Eng Team"
    renamed = scim.patch(
        f"/Groups/{gid}", [{"op": "replace", "path": "displayName", "value": "Engineering"}]
    )
    assert renamed.json()["displayName"] == "Engineering"
    user = scim.get(f"/Users/{b['id']}").json()
    assert "groups" not in user
    teams = scim.client.get(f"/v1/orgs/{scim.org.id}/teams", headers=scim.org.headers).json()
    assert "Engineering" in [t["name"] for t in teams["data"]]
    no_members = scim.get("/Groups", params={"excludedAttributes": "members"}).json()
    assert all("members" not in r for r in no_members["Resources"])
    _error(
        scim.post("/Groups", {"schemas": [GROUP_URN], "displayName": "Engineering"}),
        409,
        "uniqueness",
    )
    assert scim.delete(f"/Groups/{gid}").status_code == 204
    _error(scim.get(f"/Groups/{gid}"), 404)


# --- protocol details -----------------------------------------------------------------


def test_etags_and_if_match(scim: Scim) -> None:
    created = scim.user(unique_email("etag"))
    uid, etag = created["id"], created["meta"]["version"]
    got = scim.get(f"/Users/{uid}")
    assert got.headers["etag"] == etag
    changed = scim.patch(
        f"/Users/{uid}", [{"op": "replace", "path": "title", "value": "CTO"}], **{"If-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["meta"]["version"] != etag
    _error(
        scim.patch(
            f"/Users/{uid}",
            [{"op": "replace", "path": "title", "value": "CEO"}],
            **{"If-Match": etag},
        ),
        412,
    )
    assert scim.get(f"/Users/{uid}").json()["title"] == "CTO"


def test_paging_and_projection(scim: Scim) -> None:
    made = [scim.user(unique_email("page"))["id"] for _ in range(3)]
    first = scim.get("/Users", params={"startIndex": 2, "count": 2}).json()
    assert first["totalResults"] == 4  # three and the org's admin
    assert first["startIndex"] == 2
    assert first["itemsPerPage"] == 2
    assert [r["id"] for r in first["Resources"]] == made[:2]
    none = scim.get("/Users", params={"count": 0}).json()
    assert none["Resources"] == []
    assert none["totalResults"] == 4
    only = scim.get("/Users", params={"attributes": "userName"}).json()["Resources"][0]
    assert set(only) == {"id", "schemas", "meta", "userName"}
    _error(scim.get("/Users", params={"count": "x"}), 400, "invalidValue")


def test_errors_are_scim_documents(scim: Scim) -> None:
    _error(scim.get("/Users", params={"filter": "userName eq"}), 400, "invalidFilter")
    _error(scim.get("/Users", params={"filter": "(" * 5000}), 400, "invalidFilter")
    _error(scim.get("/Nope"), 404)
    bad = scim.client.post("/scim/v2/Users", content=b"{not json", headers=scim.headers)
    _error(bad, 400, "invalidSyntax")
    _error(scim.post("/Users", {"schemas": [USER_URN]}), 400, "invalidValue")
    _error(scim.post("/Users", ["x"]), 400, "invalidSyntax")
    _error(scim.patch(f"/Users/{scim.org.admin.user_id}", [{"op": "jump"}]), 400, "invalidSyntax")
    _error(
        scim.patch(
            f"/Users/{scim.org.admin.user_id}", [{"op": "replace", "path": "id", "value": "x"}]
        ),
        400,
        "mutability",
    )
    _error(
        scim.patch(
            f"/Users/{scim.org.admin.user_id}", [{"op": "remove", "path": 'emails[type eq "home"]'}]
        ),
        400,
        "noTarget",
    )
    email = unique_email("dup")
    scim.user(email)
    _error(scim.post("/Users", {"schemas": [USER_URN], "userName": email}), 409, "uniqueness")
    huge = scim.client.post(
        "/scim/v2/Users", content=b"x" * (3 * 1024 * 1024), headers=scim.headers
    )
    _error(huge, 413)
    wrong = scim.client.post(
        "/scim/v2/Users", content=b"x", headers={**bearer(scim.token), "Content-Type": "text/plain"}
    )
    _error(wrong, 415)


def test_every_scim_change_is_audited_with_the_token_as_actor(scim: Scim) -> None:
    created = scim.user(unique_email("audit"))
    scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "X"}])
    events = scim.client.get(
        f"/v1/orgs/{scim.org.id}/audit-events",
        params={"actor": scim.token_id},
        headers=scim.org.headers,
    ).json()["data"]
    types = {e["type"] for e in events}
    assert {"user.created", "user.updated"} <= types


def test_indexed_lookups_answer_as_a_full_scan(scim: Scim, factory: Factory) -> None:
    # userName/externalId eq are answered from indexes; `not (not (…))` forces the scan.
    a = scim.user(unique_email("idx"), externalId="ext-A")
    scim.user(unique_email("idx"), externalId="ext-B")
    plain = factory.member(scim.org)  # made by the API: no SCIM attributes
    odd = scim.user(
        "not-an-email-" + unique_email("x").split("@")[0],
        emails=[{"value": unique_email("odd"), "primary": True}],
    )
    filters = [
        f'userName eq "{a["userName"].upper()}"',
        f'userName eq "{plain.email}"',
        f'userName eq "{odd["userName"]}"',
        f'userName eq "{odd["emails"][0]["value"]}"',
        'externalId eq "ext-A"',
        'externalId eq "EXT-A"',
        f'userName eq "{a["userName"]}" and active eq true',
        f'userName eq "{a["userName"]}" or externalId eq "ext-B"',
        f'userName eq "{plain.email}" or userName eq "{a["userName"]}"',
        'userName eq "nobody@example.com"',
    ]
    for text in filters:
        fast = scim.get("/Users", params={"filter": text}).json()
        slow = scim.get("/Users", params={"filter": f"not (not ({text}))"}).json()
        assert [r["id"] for r in fast["Resources"]] == [r["id"] for r in slow["Resources"]], text
        assert fast["totalResults"] == slow["totalResults"]
    found = scim.get("/Users", params={"filter": f'userName eq "{plain.email}"'}).json()
    assert [r["id"] for r in found["Resources"]] == [plain.user_id]


def test_a_user_deleted_outside_scim_frees_its_user_name(scim: Scim) -> None:
    email = unique_email("gone")
    created = scim.user(email)
    deleted = scim.client.delete(
        f"/v1/orgs/{scim.org.id}/users/{created['id']}", headers=scim.org.headers
    )
    assert deleted.status_code == 204
    _error(scim.get(f"/Users/{created['id']}"), 404)
    again = scim.user(email)
    assert again["id"] != created["id"]


def test_a_put_without_active_does_not_reactivate(scim: Scim) -> None:
    created = scim.user(unique_email("put"))
    uid = created["id"]
    off = scim.patch(f"/Users/{uid}", [{"op": "replace", "path": "active", "value": False}])
    assert off.json()["active"] is False
    body = {"schemas": [USER_URN], "userName": created["userName"], "title": "Ex"}
    put = scim.put(f"/Users/{uid}", body)
    assert put.status_code == 200, put.text
    assert put.json()["active"] is False


def test_removing_active_never_reactivates(scim: Scim) -> None:
    created = scim.user(unique_email("rm"))
    uid = created["id"]
    scim.patch(f"/Users/{uid}", [{"op": "replace", "path": "active", "value": False}])
    removed = scim.patch(f"/Users/{uid}", [{"op": "remove", "path": "active"}])
    assert removed.status_code == 200, removed.text
    assert "active" not in removed.json()
    users = scim.client.get(f"/v1/orgs/{scim.org.id}/users/{uid}", headers=scim.org.headers)
    assert users.json()["status"] == "suspended"


def test_group_put_and_user_groups(scim: Scim) -> None:
    a, b = scim.user(unique_email("ga")), scim.user(unique_email("gb"))
    body = {"schemas": [GROUP_URN], "displayName": "Ops", "members": [{"value": a["id"]}]}
    gid = scim.post("/Groups", body).json()["id"]
    user = scim.get(f"/Users/{a['id']}").json()
    assert [(g["value"], g["display"]) for g in user["groups"]] == [(gid, "Ops")]
    listed = scim.get("/Users", params={"filter": f'groups.value eq "{gid}"'}).json()
    assert [r["id"] for r in listed["Resources"]] == [a["id"]]
    put = scim.put(f"/Groups/{gid}", {**body, "members": [{"value": b["id"]}]})
    assert put.status_code == 200, put.text
    assert [m["value"] for m in put.json()["members"]] == [b["id"]]
    assert "groups" not in scim.get(f"/Users/{a['id']}").json()
    found = scim.get("/Groups", params={"filter": 'displayName eq "ops"'}).json()
    assert [r["id"] for r in found["Resources"]] == [gid]
