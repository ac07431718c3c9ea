"""Each console page's actions over HTTP (in process), checked through the API: what
the console does is what the API then reports, and a refusal changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from bastion.core.clock import clock, utcnow
from tests.console.helpers import csrf_of, sign_in
from tests.factories import PASSWORD, Factory, Org, bearer


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _post(client: TestClient, page: str, action: str, **data: Any) -> httpx.Response:
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf": token, **data}, follow_redirects=False)


def _api(factory: Factory, org: Org, path: str) -> Any:
    answer = factory.client.get(f"/v1/orgs/{org.id}{path}", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_users_invite_role_suspend_reactivate(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    client = _signed_in(factory, org.admin.email)
    invited = _post(client, "/console/users", "/console/users", email="new@example.com",
                    name="New", role="viewer")  # fmt: skip
    assert invited.status_code == 200
    assert "setup token" in invited.text
    users = {u["email"]: u for u in _api(factory, org, "/users")["data"]}
    assert users["new@example.com"]["status"] == "invited"
    assert users["new@example.com"]["role"] == "viewer"
    # The setup token appears on that answer only.
    assert re.search(r"bst_\w+", client.get("/console/users").text) is None

    moved = _post(client, "/console/users", f"/console/users/{member.user_id}/role", role="manager")
    assert moved.status_code == 303
    assert _api(factory, org, f"/users/{member.user_id}")["role"] == "manager"
    suspended = _post(client, "/console/users", f"/console/users/{member.user_id}/suspend")
    assert suspended.status_code == 303
    assert _api(factory, org, f"/users/{member.user_id}")["status"] == "suspended"
    assert factory.client.get("/v1/me", headers=member.headers).status_code == 401
    back = _post(client, "/console/users", f"/console/users/{member.user_id}/reactivate")
    assert back.status_code == 303
    assert _api(factory, org, f"/users/{member.user_id}")["status"] == "active"


def test_resetting_factors_asks_for_step_up_then_works(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    started = factory.client.post("/v1/me/mfa/totp", json={}, headers=member.headers)
    assert started.status_code == 200
    client = _signed_in(factory, org.admin.email)
    clock.advance(601)  # the admin's sign-in is older than step_up_max_age
    action = f"/console/users/{member.user_id}/reset-factors"
    prompt = _post(client, "/console/users", action)
    assert prompt.status_code == 401
    assert "insufficient_user_authentication" in prompt.headers["www-authenticate"]
    assert "Confirm it" in prompt.text
    verified = client.post(
        "/console/step-up",
        data={"csrf": csrf_of(prompt.text), "password": PASSWORD, "back": "/console/users"},
        follow_redirects=False,
    )
    assert verified.status_code == 303
    assert verified.headers["location"].startswith("/console/users?notice=")
    assert _post(client, "/console/users", action).status_code == 303
    factors = factory.client.get("/v1/me/mfa", headers=member.headers).json()["data"]
    assert factors == []


def test_teams_create_members_delete(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    client = _signed_in(factory, org.admin.email)
    assert _post(client, "/console/teams", "/console/teams", name="Ops").status_code == 303
    team = next(t for t in _api(factory, org, "/teams")["data"] if t["name"] == "Ops")
    added = _post(client, "/console/teams", f"/console/teams/{team['id']}/members",
                  user=member.user_id)  # fmt: skip
    assert added.status_code == 303
    assert _api(factory, org, f"/teams/{team['id']}")["member_ids"] == [member.user_id]
    assert member.email in client.get("/console/teams").text
    removed = _post(
        client, "/console/teams", f"/console/teams/{team['id']}/members/{member.user_id}/remove"
    )
    assert removed.status_code == 303
    assert _api(factory, org, f"/teams/{team['id']}")["member_ids"] == []
    assert _post(client, "/console/teams", f"/console/teams/{team['id']}/delete").status_code == 303
    assert team["id"] not in {t["id"] for t in _api(factory, org, "/teams")["data"]}


def test_custom_roles_and_temporary_grants(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "viewer")
    client = _signed_in(factory, org.admin.email)
    made = client.post(
        "/console/roles",
        data={
            "csrf": csrf_of(client.get("/console/roles").text),
            "name": "auditor",
            "permissions": ["audit:read", "users:read"],
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    role = next(r for r in _api(factory, org, "/roles")["data"] if r["name"] == "auditor")
    assert role["permissions"] == ["audit:read", "users:read"]
    unknown = _post(client, "/console/roles", "/console/roles", name="bad", permissions="nope")
    assert unknown.status_code == 422
    until = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    granted = _post(client, "/console/roles", "/console/roles/grants", user=member.user_id,
                    role="manager", expires_at=until, reason="incident 42")  # fmt: skip
    assert granted.status_code == 303, granted.text
    grants = _api(factory, org, f"/users/{member.user_id}/role-grants")["data"]
    assert grants[0]["role"] == "manager"
    assert grants[0]["expires_at"] == until + ":00Z"
    assert "incident 42" in client.get("/console/roles").text
    revoked = _post(client, "/console/roles",
                    f"/console/roles/grants/{member.user_id}/{grants[0]['id']}/revoke")  # fmt: skip
    assert revoked.status_code == 303
    assert _api(factory, org, f"/users/{member.user_id}/role-grants")["data"][0]["active"] is False
    deleted = _post(client, "/console/roles", f"/console/roles/{role['id']}/delete")
    assert deleted.status_code == 303
    assert "auditor" not in {r["name"] for r in _api(factory, org, "/roles")["data"]}


def test_api_keys_shown_once_rotated_revoked(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    created = _post(client, "/console/api-keys", "/console/api-keys", name="ci", role="member")
    assert created.status_code == 201
    key = re.search(r"bsk_[A-Za-z0-9_-]+", created.text)
    assert key is not None
    assert factory.client.get("/v1/me", headers=bearer(key.group(0))).status_code == 200
    page = client.get("/console/api-keys").text
    assert key.group(0) not in page
    key_id = next(k["id"] for k in _api(factory, org, "/api-keys")["data"] if k["name"] == "ci")
    rotated = _post(client, "/console/api-keys", f"/console/api-keys/{key_id}/rotate",
                    overlap_seconds="0")  # fmt: skip
    assert rotated.status_code == 201
    successor = re.search(r"bsk_[A-Za-z0-9_-]+", rotated.text)
    assert successor is not None
    assert successor.group(0) != key.group(0)
    assert factory.client.get("/v1/me", headers=bearer(key.group(0))).status_code == 401
    assert factory.client.get("/v1/me", headers=bearer(successor.group(0))).status_code == 200
    new_id = next(
        k["id"] for k in _api(factory, org, "/api-keys")["data"]
        if k["name"] == "ci" and k["status"] == "active"
    )  # fmt: skip
    revoked = _post(client, "/console/api-keys", f"/console/api-keys/{new_id}/revoke")
    assert revoked.status_code == 303
    assert factory.client.get("/v1/me", headers=bearer(successor.group(0))).status_code == 401


def test_service_accounts(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    made = _post(client, "/console/api-keys", "/console/service-accounts", name="deployer",
                 role="member", description="CI")  # fmt: skip
    assert made.status_code == 303
    account = _api(factory, org, "/service-accounts")["data"][0]
    assert (account["name"], account["role"]) == ("deployer", "member")
    suspended = _post(client, "/console/api-keys",
                      f"/console/service-accounts/{account['id']}/suspend")  # fmt: skip
    assert suspended.status_code == 303
    assert _api(factory, org, f"/service-accounts/{account['id']}")["status"] == "suspended"
    gone = _post(client, "/console/api-keys", f"/console/service-accounts/{account['id']}/delete")
    assert gone.status_code == 303
    assert _api(factory, org, "/service-accounts")["data"] == []


def test_settings_sections(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    saved = _post(client, "/console/settings", "/console/settings/sessions",
                  session_idle_timeout="900", max_sessions_per_user="5")  # fmt: skip
    assert saved.status_code == 303
    settings = _api(factory, org, "")
    assert settings["session_idle_timeout"] == 900
    assert settings["max_sessions_per_user"] == 5
    assert settings["session_absolute_timeout"] is None
    periods = {"audit_events_days": "90", "tool_calls_days": "90", "webhook_events_days": "30",
               "deleted_objects_days": "30", "run_artifacts_hours": "24"}  # fmt: skip
    wrong = {**periods, "audit_events_days": "zq-bogus", "run_artifacts_hours": "0"}
    bad = _post(client, "/console/settings", "/console/settings/retention", **wrong)
    assert bad.status_code == 422
    # The page again, each message next to its field (and never what was typed in it).
    assert (
        'id="ret-audit_events_days-error">Audit events must be a whole number from 30 to 3650'
        in bad.text
    )
    assert (
        'id="ret-run_artifacts_hours-error">Run artifacts must be a whole number from 1 to 8760'
        in bad.text
    )
    assert 'aria-describedby="ret-tool_calls_days-error"' not in bad.text
    assert (
        "must be a whole number"
        not in bad.text.split('id="ret-tool_calls_days"')[1].split("</div>")[0]
    )
    assert 'name="back" value="/console/settings"' in bad.text  # step-up returns there
    assert _api(factory, org, "/retention")["run_artifacts_hours"] == 24
    right = {**periods, "audit_events_days": "400", "run_artifacts_hours": "48"}
    kept = _post(client, "/console/settings", "/console/settings/retention", **right)
    assert kept.status_code == 303
    assert _api(factory, org, "")["audit_retention_days"] == 400
    assert _api(factory, org, "/retention") == {
        "audit_events_days": 400, "tool_calls_days": 90, "webhook_events_days": 30,
        "deleted_objects_days": 30, "run_artifacts_hours": 48,
    }  # fmt: skip
    policy = _post(client, "/console/settings", "/console/settings/passwords",
                   min_length="14", breached_check="yes")  # fmt: skip
    assert policy.status_code == 303
    assert _api(factory, org, "")["password_policy"] == {"min_length": 14, "breached_check": True}


def test_settings_mfa_needs_step_up_and_allowlist_guards_lockout(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    clock.advance(601)
    values = {"mfa_policy": "all", "mfa_methods": ["totp"], "step_up_max_age": "300"}
    token = csrf_of(client.get("/console/settings").text)
    prompt = client.post("/console/settings/mfa", data={"csrf": token, **values})
    assert prompt.status_code == 401
    assert _api(factory, org, "")["mfa_policy"] == "optional"
    client.post("/console/step-up", data={"csrf": token, "password": PASSWORD})
    saved = client.post(
        "/console/settings/mfa", data={"csrf": token, **values}, follow_redirects=False
    )
    assert saved.status_code == 303
    after = _api(factory, org, "")
    assert (after["mfa_policy"], after["mfa_methods"], after["step_up_max_age"]) == (
        "all", ["totp"], 300,
    )  # fmt: skip
    # The admin now owes a factor: the console sends them to enrol, as the API refuses.
    assert client.get("/console/settings", follow_redirects=False).headers["location"] == (
        "/console/security"
    )


def test_an_allowlist_that_excludes_the_admin_is_refused_without_confirmation(
    factory: Factory,
) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    refused = _post(client, "/console/settings", "/console/settings/ip-allowlist",
                    ip_allowlist="203.0.113.0/24")  # fmt: skip
    assert refused.status_code in (409, 422), refused.text
    assert _api(factory, org, "")["ip_allowlist"] == []
