"""Every endpoint, four ways: anonymous → 401, another organisation → 404, a role that
lacks the permission → 403 (and audited), the permitted caller → 2xx.

One table drives it; a test fails when the app serves a /v1 operation without a row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import notifier
from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.core.permissions import Permission
from tests.factories import PASSWORD, Factory, Org, bearer, in_org_region, unique_email
from tests.secrets.keypeers import shared_openbao

P = Permission
Params = dict[str, str]


@dataclass
class World:
    """Organisation A with one object of each kind, built fresh for each case."""

    client: TestClient
    factory: Factory
    org: Org
    run_token: str = ""
    last_workspace: str = ""  # the workspace of the latest `sandbox_run`
    reviewer: dict[str, str] = field(default_factory=dict)  # an access review's reviewer

    def user(self) -> str:
        body = {"email": unique_email(), "role": "viewer", "password": PASSWORD}
        return str(self.post("users", body)["id"])

    def signed_in(self) -> dict[str, str]:
        """A user with a session: the ids of both."""
        email = unique_email()
        body = {"email": email, "role": "viewer", "password": PASSWORD}
        user = str(self.post("users", body)["id"])
        self.factory.login(email)
        listed = self.client.get(
            f"/v1/orgs/{self.org.id}/users/{user}/sessions", headers=self.org.headers
        )
        return {"user": user, "session": str(listed.json()["data"][0]["id"])}

    def team(self) -> str:
        return str(self.post("teams", {"name": unique_name("team")})["id"])

    def role(self) -> str:
        return str(
            self.post("roles", {"name": unique_name("role"), "permissions": ["users:read"]})["id"]
        )

    def key(self) -> str:
        return str(self.post("api-keys", {"name": "k", "role": "viewer"})["id"])

    def workspace(self) -> str:
        return str(self.post("workspaces", {"name": unique_name("wks")})["id"])

    def sandbox_run(self) -> Params:
        """A run (started by the admin) of an agent given a workspace that has no files
        yet: the permitted exec passes the gate and stops at the missing base (409;
        tests/sandboxes execute for real)."""
        wks = self.workspace()
        body = {
            "name": unique_name("agent"),
            "visibility": "org",
            "tools": [{"name": "sandbox.exec", "connection": wks}],
            "connections": [wks],
        }
        agent = str(self.post("agents", body)["id"])
        started = self.client.post(
            f"/v1/orgs/{self.org.id}/agents/{agent}/runs", json={}, headers=self.org.admin.headers
        )
        assert started.status_code == 201, started.text
        self.run_token = str(started.json()["token"])
        self.last_workspace = wks
        return {"run": str(started.json()["run_id"]), "wks": wks}

    def mcp_server(self) -> str:
        body = {"name": unique_name("mcp"), "url": "http://127.0.0.1:9/mcp"}
        return str(self.post("mcp-servers", body)["id"])

    def scim_token(self) -> str:
        return str(self.post("scim-tokens", {"name": "idp"})["id"])

    def account(self) -> str:
        return str(self.post("service-accounts", {"name": "sa", "role": "viewer"})["id"])

    def oauth_client(self) -> Params:
        account = self.account()
        made = self.post(f"service-accounts/{account}/oauth-clients", {"name": "c"})
        return {"account": account, "client": str(made["client_id"])}

    def grant(self, user: str) -> str:
        body = {"role": "member", "expires_at": _in_an_hour(), "reason": "matrix"}
        return str(self.post(f"users/{user}/role-grants", body)["id"])

    def sink(self) -> str:
        body = {"name": "siem", "type": "syslog", "format": "json", "host": "127.0.0.1", "port": 9}
        return str(self.post("audit-sinks", body)["id"])

    def rule(self) -> str:
        body = {"name": "exports", "kind": "data_export"}
        return str(self.post("alert-rules", body)["id"])

    def alert(self) -> str:
        self.rule()
        export = f"/v1/orgs/{self.org.id}/audit-events/export"
        assert self.client.get(export, headers=self.org.headers).status_code == 200
        state = self.factory.state
        with in_org_region(state, self.org.id):
            alerts.run_round(state.sessions, state.write_sessions, notifier(state), self.org.id)
        found = self.client.get(f"/v1/orgs/{self.org.id}/alerts", headers=self.org.headers)
        return str(found.json()["data"][0]["id"])

    def source(self) -> str:
        return str(self.post("sources", {"name": unique_name("src")})["id"])

    def document(self) -> str:
        body = {"external_id": unique_name("doc"), "metadata": {"k": "v"}}
        return str(self.post(f"sources/{self.source()}/documents", body)["id"])

    def source_acl(self) -> Params:
        source, user = self.source(), self.user()
        url = f"/v1/orgs/{self.org.id}/sources/{source}/acl/{user}"
        response = self.client.put(url, json={"relation": "reader"}, headers=self.org.headers)
        assert response.status_code == 200, response.text
        return {"src": source, "member": user}

    def authz_rule(self) -> str:
        body = {
            "effect": "deny",
            "action": "read",
            "resource_type": "document",
            "condition": "resource.metadata.k == 'x'",
        }
        return str(self.post("authz/rules", body)["id"])

    def secret(self) -> str:
        name = unique_name("api-token")
        url = f"/v1/orgs/{self.org.id}/secrets/{name}"
        response = self.client.put(url, json={"value": "s3cr3t"}, headers=self.org.headers)
        assert response.status_code == 200, response.text
        return name

    def webhook_endpoint(self) -> str:
        body = {"name": "gh", "provider": "github", "secret": "matrix-provider-secret"}
        return str(self.post("webhook-endpoints", body)["id"])

    def webhook_subscription(self) -> str:
        body = {"url": "http://127.0.0.1:9/hook", "events": ["approval.*"]}
        return str(self.post("webhook-subscriptions", body)["id"])

    def failed_delivery(self) -> Params:
        """A subscription with a delivery the delivery loop gave up on."""
        from sqlalchemy import update

        from bastion.core.db import begin_write
        from bastion.webhooks import outbound
        from bastion.webhooks.models import WebhookDelivery

        sub = self.webhook_subscription()
        with in_org_region(self.factory.state, self.org.id):
            db = self.factory.state.write_sessions()
            begin_write(db)
            with db:
                (delivery,) = outbound.enqueue(db, self.org.id, "approval.requested", {"id": "x"})
                failed = {"status": "failed", "attempts": 8}
                db.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id == delivery).values(failed)
                )
                db.commit()
        return {"subscription": sub, "delivery": delivery}

    def event(self) -> str:
        events = self.client.get(f"/v1/orgs/{self.org.id}/audit-events", headers=self.org.headers)
        return str(events.json()["data"][0]["id"])

    def agent(self) -> str:
        tool = {"name": "refund", "input_schema": {"type": "object"}, "risk": "high"}
        body = {"name": unique_name("agent"), "visibility": "org", "tools": [tool]}
        return str(self.post("agents", body)["id"])

    def run(self) -> Params:
        """A run acting for a member; its token is kept for the run's own calls."""
        member = self.factory.member(self.org, "member")
        started = self.client.post(
            f"/v1/orgs/{self.org.id}/agents/{self.agent()}/runs", json={}, headers=member.headers
        )
        assert started.status_code == 201, started.text
        self.run_token = str(started.json()["token"])
        return {"run": str(started.json()["run_id"])}

    def tool_call(self) -> Params:
        params = self.run()
        response = self.client.post(
            f"/v1/runs/{params['run']}/tool-calls",
            json={"tool": "refund", "arguments": {}},
            headers=bearer(self.run_token),
        )
        assert response.status_code == 201, response.text
        return {**params, "call": response.json()["id"], "apr": response.json()["approval_id"]}

    def workflow(self) -> str:
        return str(self.post("workflows", {"name": unique_name("wf")})["id"])

    def privacy_policy(self) -> str:
        body = {"name": "p", "applies_to": "tool_arguments", "types": ["EMAIL"], "action": "deny"}
        return str(self.post("privacy/policies", body)["id"])

    def subject_request(self) -> str:
        return str(
            self.post("privacy/subject-requests", {"kind": "access", "user_id": self.user()})["id"]
        )

    def approval_policy(self) -> str:
        body = {"name": "refunds", "match": {"tools": ["refund"]}, "decision": "deny"}
        return str(self.post("approval-policies", body)["id"])

    def sso_connection(self) -> str:
        return str(self.post("sso-connections", _SSO_CONNECTION)["id"])

    def integration(self) -> str:
        return str(self.post("integrations", _INTEGRATION())["id"])

    def connected_run(self) -> Params:
        """A run whose agent (configured by the admin key) is connected to an integration
        that is registered but not connected: the permitted caller reaches the token
        lookup, which has no token (409; tests/integrations fetch real ones)."""
        name = str(self.post("integrations", _INTEGRATION())["name"])
        body = {"name": unique_name("agent"), "visibility": "org", "connections": [name]}
        agent = str(self.post("agents", body)["id"])
        started = self.client.post(
            f"/v1/orgs/{self.org.id}/agents/{agent}/runs", json={}, headers=self.org.admin.headers
        )
        assert started.status_code == 201, started.text
        self.run_token = str(started.json()["token"])
        return {"run": str(started.json()["run_id"]), "name": name}

    def domain(self) -> str:
        return str(self.post("domains", {"domain": f"{unique_name('d')}.example.org"})["id"])

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/orgs/{self.org.id}/{path}", json=body, headers=self.org.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


_SSO_CONNECTION = {
    "type": "oidc",
    "name": "idp",
    "issuer": "https://idp.example.com",
    "client_id": "bastion",
    "client_secret": "matrix-client-secret",
}


def unique_name(prefix: str) -> str:
    return unique_email(prefix).split("@")[0]


def _in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    permission: Permission | None  # None: any authenticated caller
    ok: int
    params: Callable[[World], Params] = lambda w: {}
    body: Callable[[World], Any] = lambda w: None
    org_scoped: bool = True
    creates_by_name: bool = False  # PUT by name: under another org's path it creates there
    query: dict[str, Any] = field(default_factory=dict)
    # The permitted caller, when it is not the org's admin key (a run token, a person).
    caller: Callable[[World], dict[str, str]] | None = None


def _INTEGRATION() -> dict[str, Any]:  # noqa: N802 - a fresh body each call
    return {
        "name": unique_name("int"),
        "provider": "linear",
        "client_id": "matrix",
        "client_secret": "matrix-secret",
    }


def _cmk() -> dict[str, Any]:
    """A customer-managed key in the test process's OpenBao dev server (a real peer)."""
    bao = shared_openbao()
    key = bao.new_key()
    return {"provider": "vault_transit", "config": bao.config(key, bao.token_for(key))}


def _user_and_grant(w: World) -> Params:
    user = w.user()
    return {"user": user, "grant": w.grant(user)}


def _access_review(w: World) -> Params:
    """A campaign over users reviewed by a new manager, and an item not their own."""
    manager = w.factory.member(w.org, "manager")
    w.reviewer = manager.headers
    body = {
        "name": unique_name("review"),
        "scope": ["users"],
        "reviewers": {"users": [manager.user_id]},
        "due_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        "on_due": "keep",
    }
    review = str(w.post("access-reviews", body)["id"])
    items = w.client.get(
        f"/v1/orgs/{w.org.id}/access-reviews/{review}/items", headers=w.org.headers
    ).json()["data"]
    item = next(i["id"] for i in items if i["subject_id"] != manager.user_id)
    return {"review": review, "item": item}


def _team_and_member(w: World) -> Params:
    team, user = w.team(), w.user()
    w.client.put(f"/v1/orgs/{w.org.id}/teams/{team}/members/{user}", headers=w.org.headers)
    return {"team": team, "user": user}


ROWS: list[Row] = [
    Row(
        "DELETE",
        "/v1/orgs/{org}/users/{user}/mfa",
        P.USERS_MANAGE,
        204,
        params=lambda w: {"user": w.user()},
    ),
    Row("GET", "/v1/permissions", None, 200, org_scoped=False),
    Row("GET", "/v1/audit/signing-keys", None, 200, org_scoped=False),
    Row("POST", "/v1/auth/logout", None, 204, org_scoped=False),
    Row("GET", "/v1/me", None, 200, org_scoped=False),
    Row(
        "PATCH",
        "/v1/me",
        None,
        200,
        org_scoped=False,
        body=lambda w: {"slack_user_id": "U" + uuid.uuid4().hex[:10].upper()},
    ),
    Row("GET", "/v1/me/sessions", None, 200, org_scoped=False),
    Row("DELETE", "/v1/me/sessions", None, 204, org_scoped=False),
    Row(
        "DELETE",
        "/v1/me/sessions/{session_id}",
        None,
        404,
        org_scoped=False,
        params=lambda w: {"session_id": "ses_01ZZZZZZZZZZZZZZZZZZZZZZZZ"},
    ),
    Row(
        "POST",
        "/v1/auth/step-up",
        None,
        200,
        org_scoped=False,
        body=lambda w: {"method": "password", "password": PASSWORD},
    ),
    Row("GET", "/v1/me/mfa", None, 200, org_scoped=False),
    Row("POST", "/v1/me/mfa/totp", None, 200, org_scoped=False),
    Row(
        "POST",
        "/v1/me/mfa/totp/{factor}/confirm",
        None,
        404,
        org_scoped=False,
        params=lambda w: {"factor": "mfa_01ZZZZZZZZZZZZZZZZZZZZZZZZ"},
        body=lambda w: {"code": "123456"},
    ),
    Row("POST", "/v1/me/mfa/recovery-codes", None, 409, org_scoped=False),  # no factor yet
    Row("POST", "/v1/me/mfa/webauthn/registration-options", None, 200, org_scoped=False),
    Row(
        "POST",
        "/v1/me/mfa/webauthn",
        None,
        422,  # a well-formed response to no challenge of Bastion's
        org_scoped=False,
        body=lambda w: {
            "name": "key",
            "credential": {
                "id": "AA",
                "rawId": "AA",
                "type": "public-key",
                "response": {"clientDataJSON": "e30", "attestationObject": "oA"},
            },
        },
    ),
    Row("POST", "/v1/auth/step-up/webauthn-options", None, 409, org_scoped=False),  # no key
    Row(
        "DELETE",
        "/v1/me/mfa/{factor}",
        None,
        404,
        org_scoped=False,
        params=lambda w: {"factor": "mfa_01ZZZZZZZZZZZZZZZZZZZZZZZZ"},
    ),
    Row(
        "POST",
        "/v1/me/password",
        None,
        204,
        org_scoped=False,
        body=lambda w: {"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        caller=lambda w: w.org.admin.headers,
    ),
    Row("GET", "/v1/orgs/{org}", P.ORG_READ, 200),
    Row("PATCH", "/v1/orgs/{org}", P.ORG_MANAGE, 200, body=lambda w: {"name": "Renamed"}),
    Row(
        "POST",
        "/v1/orgs/{org}/users",
        P.USERS_MANAGE,
        201,
        body=lambda w: {"email": unique_email(), "role": "viewer"},
    ),
    Row("GET", "/v1/orgs/{org}/users", P.USERS_READ, 200),
    Row(
        "GET", "/v1/orgs/{org}/users/{user}", P.USERS_READ, 200, params=lambda w: {"user": w.user()}
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/users/{user}",
        P.USERS_MANAGE,
        200,
        params=lambda w: {"user": w.user()},
        body=lambda w: {"status": "suspended"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/users/{user}",
        P.USERS_MANAGE,
        204,
        params=lambda w: {"user": w.user()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/users/{user}/sessions",
        P.USERS_MANAGE,
        200,
        params=lambda w: {"user": w.org.admin.user_id},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/users/{user}/sessions",
        P.USERS_MANAGE,
        204,
        params=lambda w: {"user": w.user()},
    ),
    Row("DELETE", "/v1/orgs/{org}/sessions", P.ORG_MANAGE, 204),
    Row(
        "DELETE",
        "/v1/orgs/{org}/users/{user}/sessions/{session}",
        P.USERS_MANAGE,
        204,
        params=lambda w: w.signed_in(),
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/users/{user}/role-grants",
        P.GRANTS_MANAGE,
        201,
        params=lambda w: {"user": w.user()},
        body=lambda w: {"role": "member", "expires_at": _in_an_hour(), "reason": "test"},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/users/{user}/role-grants",
        P.USERS_READ,
        200,
        params=lambda w: {"user": w.user()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/users/{user}/role-grants/{grant}",
        P.GRANTS_MANAGE,
        204,
        params=_user_and_grant,
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/teams",
        P.TEAMS_MANAGE,
        201,
        body=lambda w: {"name": unique_name("t")},
    ),
    Row("GET", "/v1/orgs/{org}/teams", P.TEAMS_READ, 200),
    Row(
        "GET", "/v1/orgs/{org}/teams/{team}", P.TEAMS_READ, 200, params=lambda w: {"team": w.team()}
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/teams/{team}",
        P.TEAMS_MANAGE,
        200,
        params=lambda w: {"team": w.team()},
        body=lambda w: {"description": "d"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/teams/{team}",
        P.TEAMS_MANAGE,
        204,
        params=lambda w: {"team": w.team()},
    ),
    Row(
        "PUT",
        "/v1/orgs/{org}/teams/{team}/members/{user}",
        P.TEAMS_MANAGE,
        204,
        params=lambda w: {"team": w.team(), "user": w.user()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/teams/{team}/members/{user}",
        P.TEAMS_MANAGE,
        204,
        params=_team_and_member,
    ),
    Row("GET", "/v1/orgs/{org}/roles", P.ROLES_READ, 200),
    Row(
        "POST",
        "/v1/orgs/{org}/roles",
        P.ROLES_MANAGE,
        201,
        body=lambda w: {"name": unique_name("r"), "permissions": ["teams:read"]},
    ),
    Row(
        "GET", "/v1/orgs/{org}/roles/{role}", P.ROLES_READ, 200, params=lambda w: {"role": w.role()}
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/roles/{role}",
        P.ROLES_MANAGE,
        200,
        params=lambda w: {"role": w.role()},
        body=lambda w: {"description": "d"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/roles/{role}",
        P.ROLES_MANAGE,
        204,
        params=lambda w: {"role": w.role()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/api-keys",
        P.APIKEYS_MANAGE,
        201,
        body=lambda w: {"name": "k", "role": "viewer"},
    ),
    Row("GET", "/v1/orgs/{org}/api-keys", P.APIKEYS_READ, 200),
    Row("POST", "/v1/orgs/{org}/scim-tokens", P.ORG_MANAGE, 201, body=lambda w: {"name": "idp"}),
    Row("GET", "/v1/orgs/{org}/scim-tokens", P.ORG_READ, 200),
    Row(
        "DELETE",
        "/v1/orgs/{org}/scim-tokens/{token}",
        P.ORG_MANAGE,
        204,
        params=lambda w: {"token": w.scim_token()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/api-keys/{key}",
        P.APIKEYS_READ,
        200,
        params=lambda w: {"key": w.key()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/api-keys/{key}",
        P.APIKEYS_MANAGE,
        204,
        params=lambda w: {"key": w.key()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/api-keys/{key}/rotate",
        P.APIKEYS_MANAGE,
        201,
        params=lambda w: {"key": w.key()},
        body=lambda w: {"overlap_seconds": 60},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/service-accounts",
        P.SERVICE_ACCOUNTS_MANAGE,
        201,
        body=lambda w: {"name": "sa", "role": "viewer"},
    ),
    Row("GET", "/v1/orgs/{org}/service-accounts", P.SERVICE_ACCOUNTS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/service-accounts/{account}",
        P.SERVICE_ACCOUNTS_READ,
        200,
        params=lambda w: {"account": w.account()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/service-accounts/{account}",
        P.SERVICE_ACCOUNTS_MANAGE,
        200,
        params=lambda w: {"account": w.account()},
        body=lambda w: {"description": "d"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/service-accounts/{account}",
        P.SERVICE_ACCOUNTS_MANAGE,
        204,
        params=lambda w: {"account": w.account()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/service-accounts/{account}/oauth-clients",
        P.APIKEYS_MANAGE,
        201,
        params=lambda w: {"account": w.account()},
        body=lambda w: {"name": "ci"},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/service-accounts/{account}/oauth-clients",
        P.SERVICE_ACCOUNTS_READ,
        200,
        params=lambda w: {"account": w.account()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/service-accounts/{account}/oauth-clients/{client}",
        P.SERVICE_ACCOUNTS_READ,
        200,
        params=lambda w: w.oauth_client(),
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/service-accounts/{account}/oauth-clients/{client}",
        P.SERVICE_ACCOUNTS_MANAGE,
        204,
        params=lambda w: w.oauth_client(),
    ),
    Row("GET", "/v1/orgs/{org}/audit-events", P.AUDIT_READ, 200),
    Row("GET", "/v1/orgs/{org}/audit-events/export", P.AUDIT_EXPORT, 200),
    Row("POST", "/v1/orgs/{org}/audit-events/verify", P.AUDIT_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/audit-events/{event}",
        P.AUDIT_READ,
        200,
        params=lambda w: {"event": w.event()},
    ),
    Row("POST", "/v1/orgs/{org}/audit-checkpoints", P.AUDIT_READ, 201),
    Row("GET", "/v1/orgs/{org}/audit-checkpoints", P.AUDIT_READ, 200),
    Row(
        "POST",
        "/v1/orgs/{org}/audit-sinks",
        P.ORG_MANAGE,
        201,
        body=lambda w: {
            "name": "siem",
            "type": "https",
            "format": "ocsf",
            "url": "https://127.0.0.1:9/ingest",
        },
    ),
    Row("GET", "/v1/orgs/{org}/audit-sinks", P.AUDIT_READ, 200),
    Row(
        "POST",
        "/v1/orgs/{org}/alert-rules",
        P.ORG_MANAGE,
        201,
        body=lambda w: {"name": "r", "kind": "failed_signins_ip", "params": {"threshold": 3}},
    ),
    Row("GET", "/v1/orgs/{org}/alert-rules", P.AUDIT_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/alert-rules/{rule}",
        P.AUDIT_READ,
        200,
        params=lambda w: {"rule": w.rule()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/alert-rules/{rule}",
        P.ORG_MANAGE,
        200,
        params=lambda w: {"rule": w.rule()},
        body=lambda w: {"name": "renamed", "params": {"window_seconds": 120}},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/alert-rules/{rule}",
        P.ORG_MANAGE,
        204,
        params=lambda w: {"rule": w.rule()},
    ),
    Row("GET", "/v1/orgs/{org}/alerts", P.AUDIT_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/alerts/{alert}",
        P.AUDIT_READ,
        200,
        params=lambda w: {"alert": w.alert()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/alerts/{alert}/resolve",
        P.ORG_MANAGE,
        200,
        params=lambda w: {"alert": w.alert()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/audit-sinks/{sink}",
        P.AUDIT_READ,
        200,
        params=lambda w: {"sink": w.sink()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/audit-sinks/{sink}",
        P.ORG_MANAGE,
        204,
        params=lambda w: {"sink": w.sink()},
    ),
    Row("POST", "/v1/orgs/{org}/sources", P.SOURCES_MANAGE, 201, body=lambda w: {"name": "s"}),
    Row("GET", "/v1/orgs/{org}/sources", P.SOURCES_READ, 200),
    Row(
        "PUT",
        "/v1/orgs/{org}/sources/{src}/acl/{member}",
        P.SOURCES_MANAGE,
        200,
        params=lambda w: {"src": w.source(), "member": w.user()},
        body=lambda w: {"relation": "editor"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/sources/{src}/acl/{member}",
        P.SOURCES_MANAGE,
        204,
        params=lambda w: w.source_acl(),
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/sources/{src}/documents",
        P.SOURCES_MANAGE,
        201,
        params=lambda w: {"src": w.source()},
        body=lambda w: {"external_id": unique_name("d"), "metadata": {}},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/documents/{doc}",
        P.SOURCES_READ,
        200,
        params=lambda w: {"doc": w.document()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/documents/{doc}",
        P.SOURCES_MANAGE,
        200,
        params=lambda w: {"doc": w.document()},
        body=lambda w: {"metadata": {"k": "w"}},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/documents/{doc}",
        P.SOURCES_MANAGE,
        204,
        params=lambda w: {"doc": w.document()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/documents/{doc}/acl-tokens",
        P.SOURCES_READ,
        200,
        params=lambda w: {"doc": w.document()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/rules",
        P.SOURCES_MANAGE,
        201,
        body=lambda w: {
            "effect": "allow",
            "action": "read",
            "resource_type": "document",
            "condition": "'eng' in subject.teams",
        },
    ),
    Row("GET", "/v1/orgs/{org}/authz/rules", P.SOURCES_READ, 200),
    Row(
        "DELETE",
        "/v1/orgs/{org}/authz/rules/{rule}",
        P.SOURCES_MANAGE,
        204,
        params=lambda w: {"rule": w.authz_rule()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/check",
        P.AUTHZ_CHECK,
        200,
        body=lambda w: {"subject": w.user(), "action": "read", "resource": w.document()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/check-batch",
        P.AUTHZ_CHECK,
        200,
        body=lambda w: {
            "checks": [{"subject": w.user(), "action": "read", "resource": w.document()}]
        },
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/filter",
        P.AUTHZ_CHECK,
        200,
        body=lambda w: {
            "subject": w.user(),
            "action": "read",
            "resource_type": "document",
            "resource_ids": [w.document()],
        },
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/list",
        P.AUTHZ_CHECK,
        200,
        body=lambda w: {"subject": w.user(), "action": "read", "resource_type": "source"},
    ),
    Row("GET", "/v1/orgs/{org}/authz/stats", P.AUTHZ_CHECK, 200),
    Row(
        "PUT",
        "/v1/orgs/{org}/secrets/{name}",
        P.SECRETS_MANAGE,
        200,
        params=lambda w: {"name": unique_name("new")},
        body=lambda w: {"value": "v"},
        creates_by_name=True,
    ),
    Row("GET", "/v1/orgs/{org}/secrets", P.SECRETS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/secrets/{name}",
        P.SECRETS_READ,
        200,
        params=lambda w: {"name": w.secret()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/secrets/{name}/reveal",
        P.SECRETS_REVEAL,
        200,
        params=lambda w: {"name": w.secret()},
        body=lambda w: {},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/secrets/{name}",
        P.SECRETS_MANAGE,
        204,
        params=lambda w: {"name": w.secret()},
    ),
    Row("GET", "/v1/privacy/types", None, 200, org_scoped=False),
    Row(
        "POST",
        "/v1/orgs/{org}/privacy/scan",
        P.PRIVACY_SCAN,
        200,
        body=lambda w: {"texts": ["mail jane@example.com"]},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/privacy/redact",
        P.PRIVACY_SCAN,
        200,
        body=lambda w: {"texts": ["mail jane@example.com"], "mode": "tokenize"},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/privacy/detokenize",
        P.PRIVACY_DETOKENIZE,
        200,
        body=lambda w: {"texts": ["no tokens here"]},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/privacy/policies",
        P.PRIVACY_MANAGE,
        201,
        body=lambda w: {
            "name": "p",
            "applies_to": "tool_results",
            "types": ["US_SSN"],
            "action": "redact",
        },
    ),
    Row("GET", "/v1/orgs/{org}/privacy/policies", P.PRIVACY_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/privacy/policies/{policy}",
        P.PRIVACY_READ,
        200,
        params=lambda w: {"policy": w.privacy_policy()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/privacy/policies/{policy}",
        P.PRIVACY_MANAGE,
        200,
        params=lambda w: {"policy": w.privacy_policy()},
        body=lambda w: {"name": "renamed"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/privacy/policies/{policy}",
        P.PRIVACY_MANAGE,
        204,
        params=lambda w: {"policy": w.privacy_policy()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/privacy/subject-requests",
        P.PRIVACY_SUBJECT_REQUESTS,
        201,
        body=lambda w: {"kind": "access", "user_id": w.user()},
    ),
    Row("GET", "/v1/orgs/{org}/privacy/subject-requests", P.PRIVACY_SUBJECT_REQUESTS, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/privacy/subject-requests/{request}",
        P.PRIVACY_SUBJECT_REQUESTS,
        200,
        params=lambda w: {"request": w.subject_request()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/privacy/subject-requests/{request}/package",
        P.PRIVACY_SUBJECT_REQUESTS,
        200,
        params=lambda w: {"request": w.subject_request()},
    ),
    Row("GET", "/v1/orgs/{org}/retention", P.PRIVACY_READ, 200),
    Row(
        "PUT",
        "/v1/orgs/{org}/retention",
        P.PRIVACY_MANAGE,
        200,
        body=lambda w: {"tool_calls_days": 60},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/authz/search-filter",
        P.AUTHZ_CHECK,
        200,
        body=lambda w: {"subject": w.user()},
    ),
    Row("GET", "/v1/orgs/{org}/secrets-key", P.SECRETS_READ, 200),
    Row("GET", "/v1/orgs/{org}/encryption-key", P.ORG_READ, 200),
    Row("PUT", "/v1/orgs/{org}/encryption-key", P.ORG_MANAGE, 200, body=lambda w: _cmk()),
    Row("POST", "/v1/orgs/{org}/encryption-key/lock", P.ORG_MANAGE, 200),
    Row("DELETE", "/v1/orgs/{org}/encryption-key", P.ORG_MANAGE, 200),
    Row("POST", "/v1/orgs/{org}/secrets-key/rotate", P.SECRETS_MANAGE, 202),
    Row("DELETE", "/v1/orgs/{org}", P.ORG_MANAGE, 204),  # a fresh org per case: safe to delete
    Row(
        "POST",
        "/v1/orgs/{org}/mcp-servers",
        P.MCP_SERVERS_MANAGE,
        201,
        body=lambda w: {"name": "files", "url": "http://127.0.0.1:9/mcp"},
    ),
    Row("GET", "/v1/orgs/{org}/mcp-servers", P.MCP_SERVERS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/mcp-servers/{mcs}",
        P.MCP_SERVERS_READ,
        200,
        params=lambda w: {"mcs": w.mcp_server()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/mcp-servers/{mcs}",
        P.MCP_SERVERS_MANAGE,
        200,
        params=lambda w: {"mcs": w.mcp_server()},
        body=lambda w: {"url": "http://127.0.0.1:10/mcp"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/mcp-servers/{mcs}",
        P.MCP_SERVERS_MANAGE,
        204,
        params=lambda w: {"mcs": w.mcp_server()},
    ),
    # Nothing listens at the matrix's server: the permitted caller reaches the upstream
    # and hears 502 (tests/mcp asks a real upstream for its tools).
    Row(
        "GET",
        "/v1/orgs/{org}/mcp-servers/{mcs}/tools",
        P.MCP_SERVERS_READ,
        502,
        params=lambda w: {"mcs": w.mcp_server()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/webhook-endpoints",
        P.WEBHOOKS_MANAGE,
        201,
        body=lambda w: {"name": "gh", "provider": "github", "secret": "matrix-provider-secret"},
    ),
    Row("GET", "/v1/orgs/{org}/webhook-endpoints", P.WEBHOOKS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/webhook-endpoints/{endpoint}",
        P.WEBHOOKS_READ,
        200,
        params=lambda w: {"endpoint": w.webhook_endpoint()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/webhook-endpoints/{endpoint}",
        P.WEBHOOKS_MANAGE,
        204,
        params=lambda w: {"endpoint": w.webhook_endpoint()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/webhook-endpoints/{endpoint}/rotate-secret",
        P.WEBHOOKS_MANAGE,
        200,
        params=lambda w: {"endpoint": w.webhook_endpoint()},
        body=lambda w: {"secret": "matrix-rotated-secret", "overlap_seconds": 60},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/webhook-endpoints/{endpoint}/events",
        P.WEBHOOKS_READ,
        200,
        params=lambda w: {"endpoint": w.webhook_endpoint()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/webhook-subscriptions",
        P.WEBHOOKS_MANAGE,
        201,
        body=lambda w: {"url": "http://127.0.0.1:9/hook", "events": ["approval.*"]},
    ),
    Row("GET", "/v1/orgs/{org}/webhook-subscriptions", P.WEBHOOKS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}",
        P.WEBHOOKS_READ,
        200,
        params=lambda w: {"subscription": w.webhook_subscription()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}",
        P.WEBHOOKS_MANAGE,
        204,
        params=lambda w: {"subscription": w.webhook_subscription()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}/enable",
        P.WEBHOOKS_MANAGE,
        200,
        params=lambda w: {"subscription": w.webhook_subscription()},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}/deliveries",
        P.WEBHOOKS_READ,
        200,
        params=lambda w: {"subscription": w.webhook_subscription()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}/deliveries/{delivery}/replay",
        P.WEBHOOKS_MANAGE,
        200,
        params=lambda w: w.failed_delivery(),
    ),
    # ^ webhooks rows go above this line
    Row("POST", "/v1/orgs/{org}/agents", P.AGENTS_CREATE, 201, body=lambda w: {"name": "a"}),
    Row("GET", "/v1/orgs/{org}/agents", P.AGENTS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/agents/{agt}",
        P.AGENTS_READ,
        200,
        params=lambda w: {"agt": w.agent()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/agents/{agt}",
        P.AGENTS_MANAGE,
        200,
        params=lambda w: {"agt": w.agent()},
        body=lambda w: {"description": "changed"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/agents/{agt}",
        P.AGENTS_MANAGE,
        204,
        params=lambda w: {"agt": w.agent()},
    ),
    Row("GET", "/v1/hub/agents", None, 200, org_scoped=False),
    Row(
        "POST",
        "/v1/orgs/{org}/agents/{agt}/runs",
        P.AGENTS_USE,
        201,
        params=lambda w: {"agt": w.agent()},
        body=lambda w: {"on_behalf_of": w.org.admin.user_id},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/agents/{agt}/runs",
        P.AGENTS_READ,
        200,
        params=lambda w: {"agt": w.agent()},
    ),
    Row("POST", "/v1/orgs/{org}/runs/{run}/revoke", P.AGENTS_USE, 200, params=lambda w: w.run()),
    Row("GET", "/v1/runs/{run}", P.AGENTS_READ, 200, params=lambda w: w.run()),
    Row(
        "POST",
        "/v1/orgs/{org}/workflows",
        P.WORKFLOWS_MANAGE,
        201,
        body=lambda w: {"name": unique_name("wf"), "agent_ids": [w.agent()]},
    ),
    Row("GET", "/v1/orgs/{org}/workflows", P.WORKFLOWS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/workflows/{wf}",
        P.WORKFLOWS_READ,
        200,
        params=lambda w: {"wf": w.workflow()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/workflows/{wf}",
        P.WORKFLOWS_MANAGE,
        200,
        params=lambda w: {"wf": w.workflow()},
        body=lambda w: {"description": "d", "agent_ids": [w.agent()]},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/workflows/{wf}",
        P.WORKFLOWS_MANAGE,
        204,
        params=lambda w: {"wf": w.workflow()},
    ),
    Row(
        "POST",
        "/v1/runs/{run}/tool-calls",
        None,
        201,
        params=lambda w: w.run(),
        body=lambda w: {"tool": "refund", "arguments": {}},
        caller=lambda w: bearer(w.run_token),
    ),
    Row(
        "GET",
        "/v1/runs/{run}/tool-calls/{call}",
        P.AGENTS_READ,
        200,
        params=lambda w: w.tool_call(),
    ),
    Row(
        "GET",
        "/v1/runs/{run}/tool-calls/{call}/stream",
        P.AGENTS_READ,
        200,
        params=lambda w: w.tool_call(),
        query={"duration": 1},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/approval-policies",
        P.APPROVAL_POLICIES_MANAGE,
        201,
        body=lambda w: {"name": "p", "decision": "require_approval"},
    ),
    Row("GET", "/v1/orgs/{org}/approval-policies", P.APPROVALS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/approval-policies/{policy}",
        P.APPROVALS_READ,
        200,
        params=lambda w: {"policy": w.approval_policy()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/approval-policies/{policy}",
        P.APPROVAL_POLICIES_MANAGE,
        200,
        params=lambda w: {"policy": w.approval_policy()},
        body=lambda w: {"quorum": 2},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/approval-policies/{policy}/reapprove",
        P.APPROVAL_POLICIES_MANAGE,
        200,
        params=lambda w: {"policy": w.approval_policy()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/approval-policies/{policy}",
        P.APPROVAL_POLICIES_MANAGE,
        204,
        params=lambda w: {"policy": w.approval_policy()},
    ),
    Row("GET", "/v1/orgs/{org}/approvals", P.APPROVALS_READ, 200),
    Row("GET", "/v1/orgs/{org}/approvals/stream", P.APPROVALS_READ, 200, query={"duration": 1}),
    Row(
        "GET",
        "/v1/orgs/{org}/approvals/{apr}",
        P.APPROVALS_READ,
        200,
        params=lambda w: {"apr": w.tool_call()["apr"]},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/approvals/{apr}/decisions",
        P.APPROVALS_DECIDE,
        200,
        params=lambda w: {"apr": w.tool_call()["apr"]},
        body=lambda w: {"decision": "approve"},
        caller=lambda w: w.org.admin.headers,
    ),
    # ^ agents and approvals rows go above this line
    Row(
        "POST",
        "/v1/orgs/{org}/integrations",
        P.INTEGRATIONS_MANAGE,
        201,
        body=lambda w: _INTEGRATION(),
    ),
    Row("GET", "/v1/orgs/{org}/integrations", P.INTEGRATIONS_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/integrations/{integration}",
        P.INTEGRATIONS_READ,
        200,
        params=lambda w: {"integration": w.integration()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/integrations/{integration}",
        P.INTEGRATIONS_MANAGE,
        204,
        params=lambda w: {"integration": w.integration()},
    ),
    # Consent is a person's: the admin's session is sent to the provider (302).
    Row(
        "GET",
        "/v1/orgs/{org}/integrations/{integration}/connect",
        P.INTEGRATIONS_MANAGE,
        302,
        params=lambda w: {"integration": w.integration()},
        caller=lambda w: w.org.admin.headers,
    ),
    Row(
        "POST",
        "/v1/runs/{run}/integrations/{name}/token",
        None,
        409,
        params=lambda w: w.connected_run(),
        caller=lambda w: bearer(w.run_token),
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/sso-connections",
        P.ORG_MANAGE,
        201,
        body=lambda w: _SSO_CONNECTION,
    ),
    Row("GET", "/v1/orgs/{org}/sso-connections", P.ORG_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/sso-connections/{conn}",
        P.ORG_READ,
        200,
        params=lambda w: {"conn": w.sso_connection()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/sso-connections/{conn}",
        P.ORG_MANAGE,
        200,
        params=lambda w: {"conn": w.sso_connection()},
        body=lambda w: {"name": "renamed"},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/sso-connections/{conn}",
        P.ORG_MANAGE,
        204,
        params=lambda w: {"conn": w.sso_connection()},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/domains",
        P.ORG_MANAGE,
        201,
        body=lambda w: {"domain": f"{unique_name('d')}.example.org"},
    ),
    Row("GET", "/v1/orgs/{org}/domains", P.ORG_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/domains/{dom}",
        P.ORG_READ,
        200,
        params=lambda w: {"dom": w.domain()},
    ),
    # The matrix has no DNS server: the permitted caller reaches the lookup, which finds
    # no record (tests/sso/test_domains.py verifies against a real one).
    Row(
        "POST",
        "/v1/orgs/{org}/domains/{dom}/verify",
        P.ORG_MANAGE,
        422,
        params=lambda w: {"dom": w.domain()},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/domains/{dom}",
        P.ORG_MANAGE,
        204,
        params=lambda w: {"dom": w.domain()},
    ),
    Row("GET", "/v1/orgs/{org}/compliance/frameworks", P.COMPLIANCE_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/compliance/controls",
        P.COMPLIANCE_READ,
        200,
        query={"framework": "soc2"},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/compliance/history",
        P.COMPLIANCE_READ,
        200,
        query={"framework": "soc2", "control": "CC6.1"},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/compliance/attestations",
        P.COMPLIANCE_MANAGE,
        201,
        body=lambda w: {"framework": "soc2", "control": "CC7.4", "statement": "IR plan"},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/compliance/attestations",
        P.COMPLIANCE_READ,
        200,
        query={"framework": "soc2", "control": "CC7.4"},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/compliance/reports",
        P.COMPLIANCE_MANAGE,
        201,
        body=lambda w: {"framework": "soc2", "format": "json"},
    ),
    Row("GET", "/v1/orgs/{org}/compliance/gdpr/record-of-processing", P.COMPLIANCE_READ, 200),
    Row(
        "POST",
        "/v1/orgs/{org}/access-reviews",
        P.ACCESS_REVIEWS_MANAGE,
        201,
        body=lambda w: {
            "name": "r",
            "scope": ["api_keys"],
            "reviewers": {"roles": ["admin"]},
            "due_at": _in_an_hour(),
            "on_due": "keep",
        },
    ),
    # Reviewers see the campaigns they review without a permission: reads are scoped.
    Row("GET", "/v1/orgs/{org}/access-reviews", None, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/access-reviews/{review}",
        None,
        200,
        params=lambda w: {"review": _access_review(w)["review"]},
    ),
    Row(
        "GET",
        "/v1/orgs/{org}/access-reviews/{review}/items",
        None,
        200,
        params=lambda w: {"review": _access_review(w)["review"]},
    ),
    Row(
        "POST",
        "/v1/orgs/{org}/access-reviews/{review}/items/{item}/decision",
        None,
        200,
        params=_access_review,
        body=lambda w: {"decision": "keep"},
        caller=lambda w: w.reviewer,
    ),
    # Sandboxes (tests/sandboxes): workspaces, and a run's execs and diffs.
    Row(
        "POST",
        "/v1/orgs/{org}/workspaces",
        P.WORKSPACES_MANAGE,
        201,
        body=lambda w: {"name": unique_name("wks")},
    ),
    Row("GET", "/v1/orgs/{org}/workspaces", P.WORKSPACES_READ, 200),
    Row(
        "GET",
        "/v1/orgs/{org}/workspaces/{wks}",
        P.WORKSPACES_READ,
        200,
        params=lambda w: {"wks": w.workspace()},
    ),
    Row(
        "PATCH",
        "/v1/orgs/{org}/workspaces/{wks}",
        P.WORKSPACES_MANAGE,
        200,
        params=lambda w: {"wks": w.workspace()},
        body=lambda w: {"limits": {"pids": 64}},
    ),
    Row(
        "DELETE",
        "/v1/orgs/{org}/workspaces/{wks}",
        P.WORKSPACES_MANAGE,
        204,
        params=lambda w: {"wks": w.workspace()},
    ),
    # The matrix sends JSON: the permitted caller reaches the content check (415), after
    # the right and the workspace were checked (tests/sandboxes upload real tars).
    Row(
        "PUT",
        "/v1/orgs/{org}/workspaces/{wks}/files",
        P.WORKSPACES_MANAGE,
        415,
        params=lambda w: {"wks": w.workspace()},
        body=lambda w: {"not": "a tar"},
    ),
    Row(
        "POST",
        "/v1/runs/{run}/sandbox/exec",
        None,
        409,
        params=lambda w: w.sandbox_run(),
        body=lambda w: {"workspace": w.last_workspace, "argv": ["/bin/true"]},
        caller=lambda w: bearer(w.run_token),
    ),
    Row(
        "GET",
        "/v1/runs/{run}/sandbox/{wks}/diff",
        None,
        200,
        params=lambda w: w.sandbox_run(),
        caller=lambda w: bearer(w.run_token),
    ),
]

# Reachable without a credential by design.
PUBLIC = {
    # The provider's redirect back: the single-use state bound to the browser is the
    # credential (tests/integrations).
    ("GET", "/v1/integrations/oauth/callback"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/setup"),
    ("POST", "/v1/auth/mfa"),  # the mfa_token in the body is the credential
    ("POST", "/v1/auth/password-reset"),  # the same 202 for any email
    ("POST", "/v1/auth/password-reset/confirm"),  # the emailed token is the credential
    ("POST", "/v1/auth/mfa/webauthn-options"),  # likewise
    ("POST", "/v1/auth/passkey/options"),  # passwordless: the passkey is the credential
    ("POST", "/v1/auth/passkey"),
    ("POST", "/v1/hooks/{endpoint}"),  # the provider's signature is the credential
    # Slack's signature (the org's signing secret) is the credential (tests/approvals).
    ("POST", "/v1/integrations/slack/interactions"),
    # OAuth's own endpoints: the client's id and secret are the credential (tests/oauth).
    ("POST", "/v1/oauth/token"),
    ("POST", "/v1/oauth/introspect"),
    ("POST", "/v1/oauth/revoke"),
    # SSO: the identity provider's answer is the credential (tests/sso)
    ("GET", "/v1/auth/sso/start"),
    ("GET", "/v1/auth/sso/oidc/callback"),
    ("POST", "/v1/auth/sso/exchange"),
    ("POST", "/v1/auth/sso/{conn}/saml/acs"),  # the IdP's signed response
    ("GET", "/v1/auth/sso/{conn}/saml/metadata"),  # public: our SP metadata, for the IdP
}
ROW_IDS = [f"{r.method} {r.path}" for r in ROWS]


def test_every_v1_operation_has_a_row(app) -> None:  # type: ignore[no-untyped-def]
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    covered = {(r.method, r.path) for r in ROWS} | PUBLIC
    assert served - covered == set(), "endpoints without a matrix row"
    assert covered - served == set(), "rows for endpoints the app does not serve"


def _call(
    client: TestClient, row: Row, org_id: str, params: Params, headers: dict[str, str], body: Any
) -> Any:
    path = row.path.format(org=org_id, **params)
    return client.request(
        row.method, path, json=body, headers=headers, params=row.query, follow_redirects=False
    )


def _world(client: TestClient, factory: Factory) -> World:
    return World(client, factory, factory.org())


def _assert_problem(response: Any, status: int) -> None:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status
    assert {"type", "title", "detail", "code", "request_id", "errors"} <= set(doc)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_anonymous_gets_401(client: TestClient, factory: Factory, row: Row) -> None:
    w = _world(client, factory)
    response = _call(client, row, w.org.id, row.params(w), {}, row.body(w))
    _assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r.org_scoped],
    ids=[i for r, i in zip(ROWS, ROW_IDS, strict=True) if r.org_scoped],
)
def test_another_organisation_gets_404(client: TestClient, factory: Factory, row: Row) -> None:
    w = _world(client, factory)
    params = row.params(w)
    intruder = factory.org()
    # A's objects through A's path, with B's admin credential.
    _assert_problem(_call(client, row, w.org.id, params, intruder.headers, row.body(w)), 404)
    # A's object ids under B's own path are just as invisible.
    if params and not row.creates_by_name:
        _assert_problem(_call(client, row, intruder.id, params, intruder.headers, row.body(w)), 404)


def _denied_role(permission: Permission) -> str | None:
    for role in (BuiltinRole.MANAGER, BuiltinRole.MEMBER, BuiltinRole.VIEWER):
        if permission not in BUILTIN_PERMISSIONS[role]:
            return str(role)
    return None


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r.permission],
    ids=[i for r, i in zip(ROWS, ROW_IDS, strict=True) if r.permission],
)
def test_a_role_without_the_permission_gets_403_and_it_is_audited(
    client: TestClient, factory: Factory, row: Row
) -> None:
    w = _world(client, factory)
    assert row.permission is not None
    role = _denied_role(row.permission)
    if role is None:  # every built-in role holds it: use a custom role that holds nothing
        role = w.post("roles", {"name": unique_name("empty"), "permissions": []})["id"]
    member = factory.member(w.org, role)
    response = _call(client, row, w.org.id, row.params(w), member.headers, row.body(w))
    _assert_problem(response, 403)
    denied = client.get(
        f"/v1/orgs/{w.org.id}/audit-events",
        params={"type": "authz.denied", "actor": member.user_id},
        headers=w.org.headers,
    ).json()["data"]
    assert denied, "403 was not audited"
    assert denied[0]["outcome"] == "denied"
    assert denied[0]["metadata"]["permission"] == row.permission.value


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_the_permitted_caller_succeeds(client: TestClient, factory: Factory, row: Row) -> None:
    w = _world(client, factory)
    headers = w.org.headers if row.org_scoped else bearer(factory.login(w.org.admin.email))
    params = row.params(w)
    if row.caller is not None:
        headers = row.caller(w)
    response = _call(client, row, w.org.id, params, headers, row.body(w))
    assert response.status_code == row.ok, response.text


_RUN_TOKEN_OPERATIONS = {
    ("GET", "/v1/me"),
    ("GET", "/v1/runs/{run}"),
    ("POST", "/v1/runs/{run}/tool-calls"),
    ("GET", "/v1/runs/{run}/tool-calls/{call}"),
    ("GET", "/v1/runs/{run}/tool-calls/{call}/stream"),
    ("POST", "/v1/orgs/{org}/secrets/{name}/reveal"),
    ("POST", "/v1/runs/{run}/integrations/{name}/token"),
    ("POST", "/v1/runs/{run}/sandbox/exec"),
    ("GET", "/v1/runs/{run}/sandbox/{wks}/diff"),
}


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if (r.method, r.path) not in _RUN_TOKEN_OPERATIONS],
    ids=[
        i
        for r, i in zip(ROWS, ROW_IDS, strict=True)
        if (r.method, r.path) not in _RUN_TOKEN_OPERATIONS
    ],
)
def test_an_agent_run_token_can_call_nothing_outside_its_run(
    client: TestClient, factory: Factory, row: Row
) -> None:
    w = _world(client, factory)
    params = row.params(w)
    w.run()  # a fresh run of this organisation, whose token tries the operation
    response = _call(client, row, w.org.id, params, bearer(w.run_token), row.body(w))
    assert response.status_code == 403, f"{response.status_code}: {response.text}"


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_a_scim_token_can_call_nothing_in_v1(
    client: TestClient, factory: Factory, row: Row
) -> None:
    """A SCIM token acts only on /scim/v2: every /v1 operation refuses it (403)."""
    w = _world(client, factory)
    params = row.params(w)
    token = w.post("scim-tokens", {"name": "idp"})["token"]
    response = _call(client, row, w.org.id, params, bearer(token), row.body(w))
    assert response.status_code == 403, f"{response.status_code}: {response.text}"
