"""Data policies on agent traffic: managed over HTTP (audited, 404 across organisations,
bad bodies 422 naming the field), and applied by the tool-call gate: deny names the
policy, require_approval holds the call, redact keeps every stored copy (the call, its
approval as approvers see it, the audit event) free of the value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.privacy import policies
from bastion.privacy.policies import Policies, Rule
from bastion.privacy.types import EntityType
from tests.factories import Factory, Org, bearer

SSN = "536-22-8726"
EMAIL = "sentinel.subject@example.com"


def _url(org: Org, path: str = "") -> str:
    return f"/v1/orgs/{org.id}/privacy/policies{path}"


def _policy(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    base = {"name": "p", "applies_to": "tool_arguments", "types": ["US_SSN"], "action": "deny"}
    r = client.post(_url(org), json={**base, **body}, headers=org.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _run(client: TestClient, org: Org, risk: str = "low") -> tuple[str, dict[str, str]]:
    base = f"/v1/orgs/{org.id}"
    tools = [{"name": "lookup", "risk": risk, "input_schema": {"type": "object"}}]
    agent = client.post(
        f"{base}/agents", json={"name": "a", "visibility": "org", "tools": tools},
        headers=org.headers,
    ).json()["id"]  # fmt: skip
    started = client.post(f"{base}/agents/{agent}/runs", json={}, headers=org.admin.headers)
    assert started.status_code == 201, started.text
    return started.json()["run_id"], bearer(started.json()["token"])


def _call(client: TestClient, run: tuple[str, dict[str, str]], arguments: Any) -> Any:
    r = client.post(
        f"/v1/runs/{run[0]}/tool-calls", json={"tool": "lookup", "arguments": arguments},
        headers=run[1],
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def _everything_stored(app: Any, org_id: str) -> str:
    """Every audit event of the organisation and every stored tool call and approval, as
    text: what must never hold a redacted value."""
    from bastion.agents.models import ToolCall
    from bastion.approvals.models import Approval

    with app.state.bastion.sessions() as db:
        events = db.execute(select(AuditEvent).where(AuditEvent.chain == org_id)).scalars()
        calls = db.execute(select(ToolCall).where(ToolCall.org_id == org_id)).scalars()
        approvals = db.execute(select(Approval).where(Approval.org_id == org_id)).scalars()
        return json.dumps(
            [
                [(e.event_metadata, e.reason) for e in events],
                [(c.arguments, c.reason) for c in calls],
                [a.reason for a in approvals],
            ]
        )


def test_crud_is_audited_and_scoped(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    made = _policy(client, org, name="no ssn")
    assert made["id"].startswith("dpol_")
    assert made["types"] == ["US_SSN"]
    listed = client.get(_url(org), headers=org.headers).json()["data"]
    assert [p["id"] for p in listed] == [made["id"]]
    assert client.get(_url(other), headers=other.headers).json()["data"] == []
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "patch" else {}
        r = getattr(client, method)(_url(org, f"/{made['id']}"), headers=other.headers, **kwargs)
        assert r.status_code == 404, (method, r.text)
        r = getattr(client, method)(_url(other, f"/{made['id']}"), headers=other.headers, **kwargs)
        assert r.status_code == 404, (method, r.text)
    patched = client.patch(
        _url(org, f"/{made['id']}"), json={"types": ["EMAIL", "US_SSN"]}, headers=org.headers
    )
    assert patched.status_code == 200
    assert patched.json()["types"] == ["EMAIL", "US_SSN"]
    assert client.delete(_url(org, f"/{made['id']}"), headers=org.headers).status_code == 204
    assert client.get(_url(org, f"/{made['id']}"), headers=org.headers).status_code == 404
    types = [
        e["type"]
        for e in client.get(
            f"/v1/orgs/{org.id}/audit-events?type=privacy_policy.created", headers=org.headers
        ).json()["data"]
    ]
    assert types == ["privacy_policy.created"]
    member = factory.member(org, "member")
    assert client.get(_url(org), headers=member.headers).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"applies_to": "elsewhere"}, "applies_to"),
        ({"types": []}, "types"),
        ({"types": ["NOPE"]}, "types"),
        ({"action": "shrug"}, "action"),
        ({"name": ""}, "name"),
        ({"applies_to": "audit_metadata", "action": "deny"}, "action"),
        ({"applies_to": "tool_results", "action": "require_approval"}, "action"),
    ],
)
def test_bad_bodies_are_4xx_naming_the_field(
    client: TestClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    org = factory.org()
    base = {"name": "p", "applies_to": "tool_arguments", "types": ["US_SSN"], "action": "deny"}
    r = client.post(_url(org), json={**base, **body}, headers=org.headers)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_deny_names_the_policy_and_nothing_keeps_the_value(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    run = _run(client, org)
    assert _call(client, run, {"q": f"ssn {SSN}"})["decision"] == "allow"  # no policy yet
    denied = _policy(client, org, name="no ssn")
    call = _call(client, run, {"q": f"customer ssn {SSN}", "n": 3})
    assert call["decision"] == "deny"
    assert call["reason"] == f"privacy_policy:{denied['id']}"
    assert _call(client, run, {"q": "nothing personal"})["decision"] == "allow"
    stored = _everything_stored(app, org.id)
    # The call before the policy existed keeps its value (no policy said otherwise).
    assert stored.count(SSN) == 1
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events?type=tool_call.decided", headers=org.headers
    ).json()["data"]
    noted = [e["metadata"].get("privacy") for e in events if e["outcome"] == "denied"]
    assert noted == [{"action": "deny", "policy_id": denied["id"], "types": ["US_SSN"]}]


def test_require_approval_holds_and_approvers_see_the_redacted_form(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    run = _run(client, org)
    _policy(client, org, types=["EMAIL"], action="require_approval")
    call = _call(client, run, {"to": EMAIL, "body": f"write to {EMAIL} today"})
    assert call["decision"] == "pending"
    approval = client.get(
        f"/v1/orgs/{org.id}/approvals/{call['approval_id']}", headers=org.headers
    ).json()
    assert approval["arguments"] == {"to": "<EMAIL>", "body": "write to <EMAIL> today"}
    assert EMAIL not in _everything_stored(app, org.id)


def test_redact_allows_and_stores_the_redacted_form(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    run = _run(client, org)
    _policy(client, org, types=["EMAIL", "US_SSN"], action="redact")
    call = _call(client, run, {"q": [f"mail {EMAIL}", {"ssn": SSN}], "n": 1})
    assert call["decision"] == "allow"
    assert EMAIL not in _everything_stored(app, org.id)
    assert SSN not in _everything_stored(app, org.id)


def test_another_orgs_policies_do_not_apply(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    _policy(client, other)
    assert _call(client, _run(client, org), {"q": SSN})["decision"] == "allow"


def test_apply_without_policies_scans_nothing() -> None:
    value = {"q": SSN}
    out = policies.apply(policies.NONE, "tool_arguments", value)
    assert out.action is None
    assert out.value is value
    rule = Rule("dpol_x", "r", "tool_results", frozenset({EntityType.US_SSN}), "redact")
    rules = Policies({"tool_results": (rule,)})
    assert policies.apply(rules, "tool_arguments", value).value is value  # another place
    redacted = policies.apply(rules, "tool_results", {"a": [f"x {SSN}", 1, None]})
    assert redacted.action == "redact"
    assert redacted.value == {"a": ["x <US_SSN>", 1, None]}
