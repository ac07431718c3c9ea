"""The agent registry, runs, the tool-call gate and approvals, over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.approvals import service as approvals
from bastion.core.clock import clock
from tests.factories import Factory, Member, Org, bearer, step_up

REFUND_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number", "minimum": 0}, "order": {"type": "string"}},
    "required": ["amount", "order"],
    "additionalProperties": False,
}


def _tools() -> list[dict[str, Any]]:
    return [
        {"name": "lookup_order", "input_schema": {"type": "object"}, "risk": "low"},
        {
            "name": "refund_payment",
            "description": "Refund an order",
            "input_schema": REFUND_SCHEMA,
            "risk": "high",
        },
        {"name": "push_code", "risk": "medium", "connection": "github"},
    ]


class World:
    def __init__(self, client: TestClient, factory: Factory) -> None:
        self.client = client
        self.factory = factory
        self.org: Org = factory.org()
        self.user: Member = factory.member(self.org, "member")
        self.managers = [factory.member(self.org, "manager") for _ in range(3)]
        self.agent = self.post(
            "agents", {"name": "support", "visibility": "org", "tools": _tools()}
        )["id"]

    def url(self, path: str) -> str:
        return f"/v1/orgs/{self.org.id}/{path}"

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        response = self.client.post(self.url(path), json=body, headers=headers or self.org.headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def policy(self, **body: Any) -> str:
        return str(self.post("approval-policies", {"name": "p", **body})["id"])

    def run(self, **body: Any) -> tuple[str, dict[str, str]]:
        started = self.post(f"agents/{self.agent}/runs", body, headers=self.user.headers)
        assert started["token"].startswith("bat_run_")
        return started["run_id"], bearer(started["token"])

    def call(self, run: tuple[str, dict[str, str]], tool: str, arguments: Any = None) -> Any:
        response = self.client.post(
            f"/v1/runs/{run[0]}/tool-calls",
            json={"tool": tool, "arguments": arguments or {}},
            headers=run[1],
        )
        assert response.status_code == 201, response.text
        return response.json()

    def decide(self, approval: str, who: Member, decision: str = "approve") -> Any:
        return self.client.post(
            self.url(f"approvals/{approval}/decisions"),
            json={"decision": decision, "comment": "looked at it"},
            headers=who.headers,
        )

    def poll(self, run: tuple[str, dict[str, str]], call: str, wait: float = 0) -> Any:
        response = self.client.get(
            f"/v1/runs/{run[0]}/tool-calls/{call}", params={"wait": wait}, headers=run[1]
        )
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, type_: str) -> list[dict[str, Any]]:
        found = self.client.get(
            self.url("audit-events"), params={"type": type_}, headers=self.org.headers
        )
        return list(found.json()["data"])


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def test_low_risk_declared_tool_is_allowed_and_audited_by_digest(w: World) -> None:
    run = w.run()
    decided = w.call(run, "lookup_order", {"order": "A-1", "note": "secret-ish"})
    assert decided["decision"] == "allow"
    assert w.poll(run, decided["id"])["decision"] == "allow"
    [event] = [e for e in w.events("tool_call.decided") if e["resource"]["id"] == decided["id"]]
    assert event["metadata"]["arguments_digest"] == decided["arguments_digest"]
    assert "A-1" not in str(event)
    assert "secret-ish" not in str(event)


def test_undeclared_tool_and_schema_failure_are_denied(w: World) -> None:
    run = w.run()
    assert w.call(run, "drop_database")["reason"] == "undeclared_tool"
    bad = w.call(run, "refund_payment", {"amount": "lots", "order": "A-1"})
    assert bad["decision"] == "deny"
    assert bad["reason"].startswith("invalid_arguments at $.amount")
    assert "lots" not in bad["reason"]


def test_connection_not_given_is_denied(w: World) -> None:
    run = w.run()
    denied = w.call(run, "push_code")
    assert (denied["decision"], denied["reason"]) == ("deny", "connection_not_granted:github")
    w.client.patch(
        w.url(f"agents/{w.agent}"), json={"connections": ["github"]}, headers=w.org.headers
    )
    assert w.call(run, "push_code")["decision"] == "allow"


def test_deny_policy_wins_and_its_condition_sees_the_arguments(w: World) -> None:
    w.policy(
        match={"tools": ["lookup_order"], "condition": "arguments.order.startsWith('VIP')"},
        decision="deny",
    )
    run = w.run()
    assert w.call(run, "lookup_order", {"order": "VIP-1"})["decision"] == "deny"
    assert w.call(run, "lookup_order", {"order": "A-1"})["decision"] == "allow"


def test_a_policy_condition_that_fails_at_evaluation_denies(w: World) -> None:
    w.policy(match={"condition": "arguments.missing.field == 1"}, decision="allow")
    run = w.run()
    denied = w.call(run, "lookup_order", {"order": "A-1"})
    assert denied["decision"] == "deny"
    assert denied["reason"].startswith("policy_error:")


def test_a_policy_that_does_not_compile_is_a_422(w: World) -> None:
    response = w.client.post(
        w.url("approval-policies"),
        json={"name": "bad", "match": {"condition": "arguments.("}, "decision": "deny"},
        headers=w.org.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "match.condition"


def test_high_risk_without_policy_waits_for_approval(w: World) -> None:
    run = w.run()
    pending = w.call(run, "refund_payment", {"amount": 5, "order": "A-1"})
    assert (pending["decision"], pending["reason"]) == ("pending", "high_risk_default")
    assert w.decide(pending["approval_id"], w.managers[0]).status_code == 200
    assert w.poll(run, pending["id"])["decision"] == "allow"


def test_quorum_of_two_distinct_approvers(w: World) -> None:
    w.policy(
        match={"tools": ["refund_payment"], "condition": "arguments.amount > 100"},
        decision="require_approval",
        approvers={"roles": ["manager"]},
        quorum=2,
    )
    run = w.run()
    small = w.call(run, "refund_payment", {"amount": 20, "order": "A-1"})
    assert small["reason"] == "high_risk_default"  # the policy does not match below 100
    call = w.call(run, "refund_payment", {"amount": 250, "order": "A-2"})
    assert call["decision"] == "pending"
    approval = call["approval_id"]
    inbox = w.client.get(
        w.url("approvals"),
        params={"status": "pending", "mine": "true"},
        headers=w.managers[0].headers,
    ).json()["data"]
    assert approval in [a["id"] for a in inbox]
    shown = w.client.get(w.url(f"approvals/{approval}"), headers=w.managers[0].headers).json()
    assert shown["arguments"] == {"amount": 250, "order": "A-2"}
    assert shown["quorum"] == 2
    first = w.decide(approval, w.managers[0])
    assert first.json()["status"] == "pending"
    assert first.json()["approvals"] == 1
    assert w.decide(approval, w.managers[0]).status_code == 409  # the same person twice
    assert w.poll(run, call["id"])["decision"] == "pending"
    assert w.decide(approval, w.managers[1]).json()["status"] == "approved"
    assert w.poll(run, call["id"])["decision"] == "allow"
    assert w.decide(approval, w.managers[2]).status_code == 409  # already decided
    assert w.events("approval.approved")[0]["resource"]["id"] == approval


def test_one_deny_ends_it(w: World) -> None:
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval", quorum=2)
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 250, "order": "A-2"})
    w.decide(call["approval_id"], w.managers[0])
    assert w.decide(call["approval_id"], w.managers[1], "deny").json()["status"] == "denied"
    polled = w.poll(run, call["id"])
    assert (polled["decision"], polled["reason"]) == ("deny", "approval_denied")


def test_the_user_the_run_acts_for_cannot_approve_unless_the_policy_allows(w: World) -> None:
    approver = w.factory.member(w.org, "manager")
    w.user = approver  # the run acts for a manager, who could otherwise approve
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval")
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 250, "order": "A-2"})
    refused = w.decide(call["approval_id"], approver)
    assert refused.status_code == 403
    assert w.events("authz.denied")[0]["actor"]["id"] == approver.user_id
    w.policy(
        match={"tools": ["lookup_order"]},
        decision="require_approval",
        allow_self_approval=True,
    )
    own = w.call(run, "lookup_order", {"order": "A-3"})
    assert w.decide(own["approval_id"], approver).json()["status"] == "approved"


def test_only_named_approvers_decide(w: World) -> None:
    chosen = w.managers[0]
    w.policy(
        match={"tools": ["refund_payment"]},
        decision="require_approval",
        approvers={"users": [chosen.user_id]},
    )
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A-2"})
    assert w.decide(call["approval_id"], w.managers[1]).status_code == 403
    assert w.decide(call["approval_id"], w.user).status_code == 403  # lacks approvals:decide
    assert w.decide(call["approval_id"], chosen).json()["status"] == "approved"


def test_expiry_denies_at_the_deadline_and_the_sweeper_records_it(w: World) -> None:
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval", expires_in=60)
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A-2"})
    clock.advance(61)
    polled = w.poll(run, call["id"])
    assert (polled["decision"], polled["reason"]) == ("deny", "approval_expired")
    assert w.decide(call["approval_id"], w.managers[0]).status_code == 409
    with w.factory.state.write_sessions() as db:
        approvals.sweep(db)
        db.commit()
    assert [e["resource"]["id"] for e in w.events("approval.expired")] == [call["approval_id"]]
    shown = w.client.get(w.url(f"approvals/{call['approval_id']}"), headers=w.org.headers)
    assert shown.json()["status"] == "expired"


def test_escalation_lets_other_approvers_decide_after_the_delay(w: World) -> None:
    first, backup = w.managers[0], w.managers[1]
    w.policy(
        match={"tools": ["refund_payment"]},
        decision="require_approval",
        approvers={"users": [first.user_id]},
        expires_in=3600,
        escalate_after=600,
        escalate_to={"users": [backup.user_id]},
    )
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A-2"})
    assert w.decide(call["approval_id"], backup).status_code == 403
    clock.advance(601)
    with w.factory.state.write_sessions() as db:
        approvals.sweep(db)
        db.commit()
    assert w.events("approval.escalated")[0]["resource"]["id"] == call["approval_id"]
    step_up(w.client, backup.headers)  # a high-risk call, decided 601 s after sign-in
    assert w.decide(call["approval_id"], backup).json()["status"] == "approved"


def test_a_changed_tool_definition_needs_re_approval(w: World) -> None:
    policy = w.policy(match={"tools": ["refund_payment"]}, decision="allow")
    run = w.run()
    assert w.call(run, "refund_payment", {"amount": 1, "order": "A"})["decision"] == "allow"
    tools = _tools()
    tools[1]["input_schema"] = {"type": "object"}  # now accepts anything
    changed = w.client.patch(
        w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers
    )
    assert changed.json()["version"] == 2
    after = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    assert (after["decision"], after["reason"]) == ("pending", "tool_changed_since_approved")
    w.post(f"approval-policies/{policy}/reapprove", {})
    assert w.call(run, "refund_payment", {"amount": 1, "order": "A"})["decision"] == "allow"


def test_budgets_of_calls_and_pending_approvals(w: World) -> None:
    run = w.run(max_tool_calls=2)
    assert w.call(run, "lookup_order")["decision"] == "allow"
    assert w.call(run, "lookup_order")["decision"] == "allow"
    assert w.call(run, "lookup_order")["reason"] == "budget_exhausted"
    other = w.run(max_pending_approvals=1)
    assert w.call(other, "refund_payment", {"amount": 1, "order": "A"})["decision"] == "pending"
    blocked = w.call(other, "refund_payment", {"amount": 2, "order": "B"})
    assert blocked["reason"] == "too_many_pending_approvals"


def test_long_poll_wakes_when_the_approver_decides(w: World) -> None:
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    timer = threading.Timer(0.5, lambda: w.decide(call["approval_id"], w.managers[0]))
    started = time.monotonic()
    timer.start()
    polled = w.poll(run, call["id"], wait=10)
    waited = time.monotonic() - started
    timer.join()
    assert polled["decision"] == "allow"
    assert 0.4 < waited < 3


def _stream(w: World, run: tuple[str, dict[str, str]], call: str, **params: Any) -> list[Any]:
    """The `tool_call` events of the call's stream, read to its end."""
    import json

    response = w.client.get(
        f"/v1/runs/{run[0]}/tool-calls/{call}/stream", params=params, headers=run[1]
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    assert all(f.startswith(("id: ", ": ")) for f in frames), frames
    return [json.loads(f.split("data: ", 1)[1]) for f in frames if "event: tool_call" in f]


def test_the_call_stream_sends_the_state_then_the_decision(w: World) -> None:
    run = w.run()
    allowed = w.call(run, "lookup_order")
    [only] = _stream(w, run, allowed["id"])  # decided: one event, and the stream ends
    assert (only["id"], only["decision"]) == (allowed["id"], "allow")

    pending = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    timer = threading.Timer(0.5, lambda: w.decide(pending["approval_id"], w.managers[0]))
    started = time.monotonic()
    timer.start()
    first, then = _stream(w, run, pending["id"], duration=10)
    waited = time.monotonic() - started
    timer.join()
    assert (first["decision"], then["decision"]) == ("pending", "allow")
    assert 0.4 < waited < 3


def test_the_call_stream_ends_after_its_duration_or_at_expiry(w: World) -> None:
    run = w.run()
    pending = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    started = time.monotonic()
    assert [e["decision"] for e in _stream(w, run, pending["id"], duration=1)] == ["pending"]
    assert time.monotonic() - started >= 0.95
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval", expires_in=60)
    expiring = w.call(run, "refund_payment", {"amount": 2, "order": "B"})
    clock.advance(61)
    [expired] = _stream(w, run, expiring["id"], duration=10)
    assert (expired["decision"], expired["reason"]) == ("deny", "approval_expired")


def test_another_runs_token_finds_no_call_stream(w: World) -> None:
    run, other = w.run(), w.run()
    call = w.call(run, "lookup_order")
    response = w.client.get(f"/v1/runs/{run[0]}/tool-calls/{call['id']}/stream", headers=other[1])
    assert response.status_code == 404


def test_long_poll_returns_after_wait_when_nobody_decides(w: World) -> None:
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    started = time.monotonic()
    assert w.poll(run, call["id"], wait=0.5)["decision"] == "pending"
    assert time.monotonic() - started >= 0.45


def test_run_token_acts_only_on_its_own_run(w: World, client: TestClient) -> None:
    run = w.run()
    other = w.run()
    mine = w.call(run, "lookup_order")
    # Another run's calls and status are invisible.
    assert client.get(f"/v1/runs/{other[0]}", headers=run[1]).status_code == 404
    assert (
        client.post(
            f"/v1/runs/{other[0]}/tool-calls", json={"tool": "lookup_order"}, headers=run[1]
        ).status_code
        == 404
    )
    assert (
        client.get(f"/v1/runs/{run[0]}/tool-calls/{mine['id']}", headers=other[1]).status_code
        == 404
    )
    # Its own status works; nothing of the organisation does.
    assert client.get(f"/v1/runs/{run[0]}", headers=run[1]).json()["status"] == "active"
    me = client.get("/v1/me", headers=run[1]).json()
    assert (me["principal_type"], me["permissions"]) == ("agent_run", [])
    for path in ("users", "agents", "approvals", "secrets", f"agents/{w.agent}"):
        assert client.get(w.url(path), headers=run[1]).status_code == 403
    assert client.post(w.url("agents"), json={"name": "x"}, headers=run[1]).status_code == 403
    assert client.post(w.url(f"agents/{w.agent}/runs"), json={}, headers=run[1]).status_code == 403
    # Revoked: the token stops at once.
    assert client.post(w.url(f"runs/{run[0]}/revoke"), headers=w.user.headers).status_code == 200
    assert client.get(f"/v1/runs/{run[0]}", headers=run[1]).status_code == 401


def test_run_token_expires(w: World, client: TestClient) -> None:
    run = w.run(ttl_seconds=60)
    clock.advance(61)
    assert client.get(f"/v1/runs/{run[0]}", headers=run[1]).status_code == 401


def test_a_token_of_org_a_is_useless_in_org_b(
    w: World, client: TestClient, factory: Factory
) -> None:
    run = w.run()
    b = World(client, factory)
    b_run = b.run()
    assert client.get(f"/v1/runs/{b_run[0]}", headers=run[1]).status_code == 404
    assert (
        client.post(
            f"/v1/runs/{b_run[0]}/tool-calls", json={"tool": "lookup_order"}, headers=run[1]
        ).status_code
        == 404
    )
    assert client.get(b.url("agents"), headers=run[1]).status_code == 403  # not a run route
    # And B's people cannot see A's runs or approvals.
    assert client.get(f"/v1/runs/{run[0]}", headers=b.org.headers).status_code == 404
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    assert w.decide(call["approval_id"], b.managers[0]).status_code == 404


def test_runs_act_for_a_user_who_may_use_the_agent(w: World, client: TestClient) -> None:
    viewer = w.factory.member(w.org, "viewer")
    refused = client.post(
        w.url(f"agents/{w.agent}/runs"),
        json={"on_behalf_of": viewer.user_id},
        headers=w.org.headers,
    )
    assert refused.status_code == 403  # viewers read agents but do not use them
    # A member may not start runs for someone else.
    other = client.post(
        w.url(f"agents/{w.agent}/runs"),
        json={"on_behalf_of": w.managers[0].user_id},
        headers=w.user.headers,
    )
    assert other.status_code == 403


def test_run_token_reveals_only_its_agents_secrets_inside_its_run(
    w: World, client: TestClient, factory: Factory
) -> None:
    def put(name: str, value: str, **scope: str) -> None:
        body: dict[str, Any] = {"value": value, **({"scope": scope} if scope else {})}
        response = client.put(w.url(f"secrets/{name}"), json=body, headers=w.org.headers)
        assert response.status_code == 200, response.text

    put("github-token", "org-value")
    put("stripe-key", "not-for-agents")
    changed = client.patch(
        w.url(f"agents/{w.agent}"), json={"secrets": ["github-token"]}, headers=w.org.headers
    )
    assert changed.status_code == 200
    wf = w.post("workflows", {"name": "payments", "agent_ids": [w.agent]})["id"]

    def start(**body: Any) -> tuple[str, dict[str, str]]:
        # Started by, and for, someone who may reveal secrets (the admin): a run never
        # reveals what its starter or its user may not (tests/agents/test_handing_on.py).
        started = w.post(f"agents/{w.agent}/runs", body, headers=w.org.admin.headers)
        return started["run_id"], bearer(started["token"])

    run, other = start(workflow_id=wf), start()

    def reveal(token: dict[str, str], name: str, **body: Any) -> Any:
        return client.post(w.url(f"secrets/{name}/reveal"), json=body, headers=token)

    assert reveal(run[1], "github-token").json()["value"] == "org-value"
    put("github-token", "workflow-value", workflow_id=wf)
    assert reveal(run[1], "github-token").json()["value"] == "workflow-value"
    put("github-token", "run-value", run_id=run[0])
    answer = reveal(run[1], "github-token").json()
    assert (answer["value"], answer["scope"]) == ("run-value", "run")
    assert reveal(other[1], "github-token").json()["value"] == "org-value"
    assert reveal(run[1], "stripe-key").status_code == 403  # not given to the agent
    assert reveal(other[1], "github-token", run_id=run[0]).status_code == 404  # another run
    assert reveal(run[1], "github-token", workflow_id="wf-2").status_code == 404
    b = factory.org()
    assert (
        client.post(
            f"/v1/orgs/{b.id}/secrets/github-token/reveal", json={}, headers=run[1]
        ).status_code
        == 404
    )
    revealed = [e for e in w.events("secret.revealed") if e["actor"]["type"] == "agent_run"]
    assert {e["actor"]["id"] for e in revealed} == {run[0], other[0]}
    assert "run-value" not in str(revealed)


# The gate validates arguments with a compiled validator (jsonschema-rs) and names the
# first error as the reference validator (`jsonschema`) would:
# "invalid_arguments at <JSON path> (<keyword>)".
SCHEMA_CASES: list[tuple[dict[str, Any], list[Any]]] = [
    (
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 1}},
            "required": ["a"],
            "additionalProperties": False,
        },
        [{}, {"a": 0}, {"a": 1, "b": 2}, {"a": "x"}, {"a": 3}, [], None],
    ),
    (
        {
            "$defs": {"p": {"type": "string", "maxLength": 3}},
            "properties": {"n": {"$ref": "#/$defs/p"}},
        },
        [{"n": "abcd"}, {"n": "ab"}, {"n": 5}],
    ),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1, 1.5, None]),
    (
        {"properties": {"e": {"enum": ["x", "y"]}, "c": {"const": 3}, "a b": {"type": "string"}}},
        [{"e": "z"}, {"c": 4}, {"e": "x", "c": 3}, {"a b": 1}, {"a b": "ok"}],
    ),
    (
        {
            "properties": {
                "xs": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}
            }
        },
        [{"xs": ["ab", "Cd"]}, {"xs": ["ab", 2]}, {"xs": []}],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "instances"), SCHEMA_CASES)
def test_argument_validation_agrees_with_the_reference_validator(
    schema: dict[str, Any], instances: list[Any]
) -> None:
    from jsonschema import Draft202012Validator

    from bastion.agents.gate.arguments import _checker

    check, reference = _checker(schema), Draft202012Validator(schema)
    for instance in instances:
        error = next(iter(reference.iter_errors(instance)), None)
        expected = (
            None if error is None else f"invalid_arguments at {error.json_path} ({error.validator})"
        )
        assert check(instance) == expected, instance


def test_a_tool_schema_the_validator_cannot_compile_denies_every_call() -> None:
    # Saving refuses such a pattern (422); one stored before that check, or edited in the
    # database, fails closed instead of failing the request, and no second validator
    # (Python's `re` on an agent's strings) is tried.
    from bastion.agents.gate.arguments import _checker

    for pattern in ("(?P=n)", "a\\Z"):
        check = _checker({"properties": {"s": {"pattern": pattern}}})
        assert check({"s": "ba"}) == "invalid_tool_schema"
        assert check({}) == "invalid_tool_schema"


def test_a_validator_that_fails_while_checking_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.agents.gate import arguments as gate

    class Broken:
        def is_valid(self, arguments: Any) -> bool:
            raise RuntimeError("engine fault")

    monkeypatch.setattr(gate.agents, "arguments_validator", lambda schema: Broken())
    assert gate._checker({"type": "object"})({}) == "invalid_tool_schema"


def test_a_stored_schema_saving_would_refuse_denies_its_calls_over_http(w: World) -> None:
    # As an agent saved before saving checked patterns: the tool is kept, its calls deny
    # with a reason that says why, and re-saving it shows the 422 that names the schema.
    from sqlalchemy import update

    from bastion.agents.models import Agent
    from bastion.agents.service import tool_digest
    from bastion.core.db import begin_write

    legacy: dict[str, Any] = {
        "name": "legacy",
        "description": "",
        "input_schema": {"properties": {"s": {"type": "string", "pattern": "a\\Z"}}},
        "risk": "low",
        "connection": None,
    }
    legacy["digest"] = tool_digest(legacy)
    with w.factory.state.write_sessions() as db:
        begin_write(db)
        db.execute(update(Agent).where(Agent.id == w.agent).values(tools=[legacy]))
        db.commit()
    run = w.run()
    denied = w.call(run, "legacy", {"s": "ba"})
    assert (denied["decision"], denied["reason"]) == ("deny", "invalid_tool_schema")
    tools = [{k: legacy[k] for k in ("name", "input_schema", "risk")}]
    resaved = w.client.patch(
        w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers
    )
    assert resaved.status_code == 422, resaved.text
    assert resaved.json()["errors"][0]["field"] == "tools[0].input_schema"


def test_arguments_nested_too_deeply_for_the_compiled_validator_are_still_decided() -> None:
    # jsonschema-rs cannot describe an error in a value nested this deep (ValueError
    # "Recursion limit reached"). The edge refuses such arguments (see the test of
    # `MAX_DEPTH`); should any reach the checker, it denies.
    from bastion.agents.gate.arguments import _checker

    deep: Any = []
    for _ in range(950):
        deep = [deep]
    check = _checker({"properties": {"a": {"type": "integer"}}})
    assert check({"a": deep}) == "invalid_arguments at $ (nesting)"
    assert check({"a": 1}) is None
    recursive = {"$defs": {"n": {"items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    assert _checker(recursive)(deep) in (None, "invalid_arguments at $ (nesting)")


def test_the_call_stream_ends_once_its_run_is_revoked(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.api.routers import agents as router

    monkeypatch.setattr(router, "RECHECK_SECONDS", 0.2)
    run = w.run()
    pending = w.call(run, "refund_payment", {"amount": 1, "order": "A"})
    revoke = threading.Timer(
        0.5,
        lambda: w.client.post(w.url(f"runs/{run[0]}/revoke"), headers=w.user.headers),
    )
    started = time.monotonic()
    revoke.start()
    events = _stream(w, run, pending["id"], duration=20)
    revoke.join()
    assert [e["decision"] for e in events] == ["pending"]
    assert time.monotonic() - started < 5  # ended by the revocation, not by `duration`


def test_a_schema_reference_outside_the_schema_is_refused_and_never_fetched(w: World) -> None:
    import socket

    from bastion.agents.gate.arguments import _checker

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        for ref in (f"http://127.0.0.1:{port}/schema.json", "file:///etc/hostname"):
            tools = [{"name": "t", "input_schema": {"$ref": ref}}]
            refused = w.client.patch(
                w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["field"] == "tools[0].input_schema"
            # One stored before this check (or edited in the database) denies, unfetched.
            assert _checker({"$ref": ref})({}) == "invalid_tool_schema"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()


def test_a_python_only_pattern_is_refused_when_the_tool_is_saved(w: World) -> None:
    tools = [{"name": "t", "input_schema": {"properties": {"s": {"pattern": "^(a+)+\\Z"}}}}]
    refused = w.client.patch(
        w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "tools[0].input_schema"


def test_nan_and_infinity_in_arguments_are_a_422_naming_them(w: World) -> None:
    run = w.run()
    for literal in ("Infinity", "-Infinity", "NaN"):
        response = w.client.post(
            f"/v1/runs/{run[0]}/tool-calls",
            content='{"tool": "refund_payment", "arguments": {"amount": LIT}}'.replace(
                "LIT", literal
            ),
            headers={**run[1], "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "arguments"


def test_unpaired_surrogates_are_a_422_on_every_backend(w: World) -> None:
    run = w.run()
    for body in (
        '{"tool": "lookup_order", "arguments": {"order": "A\\ud800"}}',
        '{"tool": "lookup_order", "arguments": {"\\udfff": 1}}',
    ):
        response = w.client.post(
            f"/v1/runs/{run[0]}/tool-calls",
            content=body,
            headers={**run[1], "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"].startswith("arguments")
    paired = w.call(run, "lookup_order", {"order": "A-\U0001f600"})  # an emoji: a pair in JSON
    assert paired["decision"] == "allow"


def test_arguments_nested_past_the_limit_are_a_422_and_within_it_are_decided(w: World) -> None:
    # The edge bounds nesting (`core.schemas.MAX_DEPTH`), so an agent cannot push the
    # validators to their recursion limits (jsonschema-rs gives up describing an error
    # about 250 deep) or make every check walk hundreds of levels.
    from bastion.core.schemas import MAX_DEPTH

    tools = [{"name": "t", "input_schema": {"properties": {"order": {"type": "string"}}}}]
    saved = w.client.patch(w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers)
    assert saved.status_code == 200, saved.text
    run = w.run()

    def nested(levels: int) -> Any:
        value: Any = "x"
        for _ in range(levels):
            value = [value]
        return value

    within = w.call(run, "t", {"order": nested(MAX_DEPTH - 1)})
    assert (within["decision"], within["reason"]) == ("deny", "invalid_arguments at $.order (type)")
    for levels in (MAX_DEPTH, 300):
        refused = w.client.post(
            f"/v1/runs/{run[0]}/tool-calls",
            json={"tool": "t", "arguments": {"order": nested(levels)}},
            headers=run[1],
        )
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["field"] == "arguments"
        assert f"deeper than {MAX_DEPTH}" in error["message"]


def test_a_long_argument_name_still_gets_its_decision_recorded_and_audited(w: World) -> None:
    tools = [{"name": "t", "input_schema": {"additionalProperties": {"type": "integer"}}}]
    saved = w.client.patch(w.url(f"agents/{w.agent}"), json={"tools": tools}, headers=w.org.headers)
    assert saved.status_code == 200, saved.text
    run = w.run()
    name = "k" * 400  # an agent-chosen key: the reason names it, cut to fit
    denied = w.call(run, "t", {name: "x"})
    assert denied["decision"] == "deny"
    assert denied["reason"].startswith("invalid_arguments at $.kkk")
    assert denied["reason"].endswith("… (type)")
    assert len(denied["reason"]) <= 300
    assert w.poll(run, denied["id"])["reason"] == denied["reason"]
    [event] = [e for e in w.events("tool_call.decided") if e["resource"]["id"] == denied["id"]]
    assert event["reason"] == denied["reason"]


def test_a_false_subschema_is_named_false() -> None:
    from bastion.agents.gate.arguments import _checker

    assert _checker({"properties": {"x": False}})({"x": 1}) == "invalid_arguments at $.x (false)"
    typed = {"properties": {"properties": {"type": "string"}}}
    assert _checker(typed)({"properties": 1}) == "invalid_arguments at $.properties (type)"


def test_a_batch_of_concurrent_calls_spends_a_runs_budget_exactly(w: World) -> None:
    """Calls committed in one group-commit batch count the run's budget together (one
    read of the run and one UPDATE per batch): exactly the budget is allowed."""
    state = w.client.app.state.bastion  # type: ignore[attr-defined]
    run = w.run(max_tool_calls=5)
    answers: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        answer = w.call(run, "lookup_order")
        with lock:
            answers.append(answer)

    writer = state.writer
    batches_before, linger = writer.batches, writer._linger
    writer._linger = 0.2  # the calls join one batch
    try:
        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        writer._linger = linger
    assert len(answers) == 8
    assert writer.batches - batches_before < 8  # some calls shared a batch
    decisions = [a["decision"] for a in answers]
    assert decisions.count("allow") == 5, answers
    denied = [a["reason"] for a in answers if a["decision"] == "deny"]
    assert denied == ["budget_exhausted"] * 3, answers
    status = w.client.get(f"/v1/runs/{run[0]}", headers=run[1]).json()
    assert status["tool_calls"] == 5
    assert w.call(run, "lookup_order")["reason"] == "budget_exhausted"
