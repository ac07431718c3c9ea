"""Approvals under concurrency and after their run ends: decisions that race close an
approval once, a revoked or expired run's actions cannot be approved, and policies that
cannot give an answer deny. The races are real on PostgreSQL (on SQLite writers are
serialised and these tests pass trivially)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from bastion.agents.models import Agent, Run
from bastion.approvals import service as approvals
from bastion.approvals.models import ApprovalPolicy
from bastion.audit import service as audit
from bastion.core.clock import clock, utcnow
from bastion.core.db import begin_write
from tests.agents.test_gate import World
from tests.factories import Factory, Member, bearer


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def _at_once(*work: Any) -> list[Any]:
    """Run the callables in threads released together; their results in order."""
    barrier = threading.Barrier(len(work))
    out: list[Any] = [None] * len(work)

    def go(i: int) -> None:
        barrier.wait()
        out[i] = work[i]()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return out


def _closings(w: World, approval_id: str) -> list[str]:
    return [
        kind
        for kind in ("approval.approved", "approval.denied", "approval.expired")
        for event in w.events(kind)
        if event["resource"]["id"] == approval_id
    ]


def test_two_approvers_deciding_at_once_close_it_once(w: World) -> None:
    for attempt in range(8):
        run = w.run()
        call = w.call(run, "refund_payment", {"amount": 5, "order": f"A-{attempt}"})
        approval = call["approval_id"]
        first, second = w.managers[0], w.managers[1]
        answers = _at_once(
            lambda a=approval, m=first: w.decide(a, m, "approve"),
            lambda a=approval, m=second: w.decide(a, m, "deny"),
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 409], [a.text for a in answers]
        [closed] = _closings(w, approval)  # one final state, recorded once
        final = w.client.get(w.url(f"approvals/{approval}"), headers=w.org.headers).json()
        assert f"approval.{final['status']}" == closed
        polled = w.poll(run, call["id"])["decision"]
        assert polled == ("allow" if final["status"] == "approved" else "deny")


def test_two_sweeps_at_once_expire_an_approval_once(w: World) -> None:
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 5, "order": "S-1"})
    clock.advance(3700)
    state = w.factory.state

    def sweep() -> int:
        with state.write_sessions() as db:
            done = approvals.sweep(db)
            db.commit()
            return done

    assert sorted(_at_once(sweep, sweep))[-1] >= 1
    assert _closings(w, call["approval_id"]) == ["approval.expired"]


def test_revoking_a_run_does_not_deadlock_with_the_gate(w: World) -> None:
    """The gate locks the chain's head, then spends the run's budget (its row). Revoking
    changes the run's row and records: it must take the head first too, or PostgreSQL
    finds a deadlock and aborts one of them."""
    run_id, _ = w.run()
    state = w.factory.state
    head_held, errors = threading.Event(), []

    def gate_like() -> None:
        try:
            with state.write_sessions() as db:
                begin_write(db)
                audit.lock_chain(db, w.org.id)
                head_held.set()
                threading.Event().wait(0.5)  # the revoke below is waiting by now
                db.execute(
                    update(Run).where(Run.id == run_id).values(tool_calls=Run.tool_calls + 1)
                )
                db.commit()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=gate_like)
    thread.start()
    assert head_held.wait(10)
    revoked = w.client.post(w.url(f"runs/{run_id}/revoke"), headers=w.org.headers)
    thread.join(timeout=30)
    assert revoked.status_code == 200, revoked.text
    assert errors == []


def test_revoking_a_run_denies_what_it_waits_for(w: World) -> None:
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 5, "order": "R-1"})
    assert call["decision"] == "pending"
    revoked = w.client.post(w.url(f"runs/{run[0]}/revoke"), headers=w.org.headers)
    assert revoked.status_code == 200, revoked.text
    shown = w.client.get(w.url(f"approvals/{call['approval_id']}"), headers=w.org.headers)
    assert (shown.json()["status"], shown.json()["reason"]) == ("denied", "the run was revoked")
    late = w.decide(call["approval_id"], w.managers[0], "approve")
    assert late.status_code == 409, late.text
    assert _closings(w, call["approval_id"]) == ["approval.denied"]


def test_a_waiting_agent_whose_run_is_revoked_hears_401_not_a_decision(w: World) -> None:
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 5, "order": "R-2"})
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer["response"] = w.client.get(
            f"/v1/runs/{run[0]}/tool-calls/{call['id']}", params={"wait": 20}, headers=run[1]
        )

    thread = threading.Thread(target=wait)
    thread.start()
    threading.Event().wait(0.5)
    assert w.client.post(w.url(f"runs/{run[0]}/revoke"), headers=w.org.headers).is_success
    thread.join(timeout=30)
    assert answer["response"].status_code == 401, answer["response"].text


def test_an_approval_never_outlives_its_run(w: World) -> None:
    run = w.run(ttl_seconds=120)
    call = w.call(run, "refund_payment", {"amount": 5, "order": "E-1"})
    shown = w.client.get(w.url(f"approvals/{call['approval_id']}"), headers=w.org.headers).json()
    started = w.client.get(f"/v1/runs/{run[0]}", headers=run[1]).json()
    assert shown["expires_at"] <= started["expires_at"]
    clock.advance(121)
    late = w.decide(call["approval_id"], w.managers[0], "approve")
    assert late.status_code == 409, late.text
    assert "expired" in late.json()["detail"]


def test_deciding_for_a_run_that_ended_is_refused(w: World) -> None:
    """Approvals opened before their expiry was capped at the run's can outlive it."""
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 5, "order": "E-2"})
    with w.factory.state.write_sessions() as db:
        begin_write(db)
        db.execute(
            update(Run).where(Run.id == run[0]).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
    late = w.decide(call["approval_id"], w.managers[0], "approve")
    assert late.status_code == 409, late.text
    assert "run" in late.json()["detail"]


@pytest.mark.parametrize("condition", ["arguments.order", "size(arguments.order)"])
def test_a_condition_that_is_not_true_or_false_denies(w: World, condition: str) -> None:
    policy = w.policy(match={"tools": ["lookup_order"], "condition": condition}, decision="deny")
    decided = w.call(w.run(), "lookup_order", {"order": "A-1"})
    assert (decided["decision"], decided["reason"]) == ("deny", f"policy_error:{policy}")


def _policy(decision: str) -> ApprovalPolicy:
    return ApprovalPolicy(id="apl_x", match={}, decision=decision, tool_digests={})


def test_values_the_gate_does_not_know_fail_safe() -> None:
    agent = Agent(id="agt_x", name="x")
    tool = {"name": "t", "risk": "low", "digest": "d"}
    assert approvals.evaluate([_policy("Deny")], agent, tool, {}, dict).decision == "deny"
    assert approvals.evaluate([_policy("allow")], agent, tool, {}, dict).decision == "pending"
    unknown_risk = {**tool, "risk": "severe"}
    assert approvals.evaluate([], agent, unknown_risk, {}, dict).decision == "pending"
    assert approvals.evaluate([], agent, tool, {}, dict).decision == "allow"


def test_the_hub_and_its_clones_leave_connections_out(
    w: World, factory: Factory, client: TestClient
) -> None:
    source = "payments-ledger-prod"
    tools = [{"name": "push", "input_schema": {"type": "object"}, "connection": source}]
    published = w.post("agents", {"name": "pub", "visibility": "public", "tools": tools})
    assert published["tools"][0]["connection"] == source
    other = factory.org()
    reader: Member = factory.member(other, "member")
    hub = client.get("/v1/hub/agents", headers=reader.headers)
    assert hub.status_code == 200, hub.text
    assert source not in hub.text
    [listed] = [a for a in hub.json()["data"] if a["id"] == published["id"]]
    assert "connection" not in listed["tools"][0]
    clone = client.post(
        f"/v1/orgs/{other.id}/agents",
        json={"from_hub": published["id"], "visibility": "org"},
        headers=other.headers,
    )
    assert clone.status_code == 201, clone.text
    assert clone.json()["tools"][0]["connection"] is None
    assert clone.json()["tools"][0]["digest"] != published["tools"][0]["digest"]


def test_approvers_by_custom_role_name_and_by_temporary_grant(w: World) -> None:
    role = w.post("roles", {"name": "finance", "permissions": ["approvals:decide"]})
    finance = w.factory.member(w.org, "member")
    moved = w.client.patch(
        w.url(f"users/{finance.user_id}"), json={"role": "finance"}, headers=w.org.headers
    )
    assert moved.status_code == 200, moved.text
    on_call = w.factory.member(w.org, "member")
    until = (utcnow() + timedelta(hours=1)).isoformat()
    w.post(
        f"users/{on_call.user_id}/role-grants",
        {"role": "manager", "reason": "on call", "expires_at": until},
    )
    policy = w.post(
        "approval-policies",
        {
            "name": "finance signs",
            "match": {"tools": ["refund_payment"]},
            "decision": "require_approval",
            "approvers": {"roles": ["finance", "manager"]},
            "quorum": 2,
        },
    )
    assert sorted(policy["approvers"]["roles"]) == sorted([role["id"], "manager"])
    call = w.call(w.run(), "refund_payment", {"amount": 5, "order": "G-1"})
    assert w.decide(call["approval_id"], finance).status_code == 200
    last = w.decide(call["approval_id"], on_call)
    assert last.status_code == 200, last.text
    assert last.json()["status"] == "approved"


def test_one_idempotency_key_sent_twice_at_once_makes_one_call(w: World) -> None:
    """The SDK retries a timed-out POST with its key while the first may still run."""
    for attempt in range(10):
        run = w.run()
        url = f"/v1/runs/{run[0]}/tool-calls"
        headers = {**run[1], "Idempotency-Key": f"retry-{attempt}"}
        body = {"tool": "lookup_order", "arguments": {"order": "A"}}

        def send(u: str = url, h: dict[str, str] = headers, b: dict[str, Any] = body) -> Any:
            return w.client.post(u, json=b, headers=h)

        answers = _at_once(send, send)
        made = {a.json()["id"] for a in answers if a.status_code == 201}
        assert len(made) == 1, [a.text for a in answers]
        assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
        for refused in (a for a in answers if a.status_code == 409):
            assert refused.json()["code"] == "idempotency_key_in_use"  # the SDK retries it
        spent = w.client.get(f"/v1/runs/{run[0]}", headers=run[1]).json()["tool_calls"]
        assert spent == 1
        again = send()
        assert again.status_code == 201
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json()["id"] in made


def test_a_private_agents_requests_are_seen_by_its_readers_and_approvers_only(
    w: World,
) -> None:
    owner = w.user
    private = w.post(
        "agents",
        {"name": "mine", "visibility": "private", "tools": [{"name": "wire", "risk": "high"}]},
        headers=owner.headers,
    )
    started = w.post(f"agents/{private['id']}/runs", {}, headers=owner.headers)
    call = w.call((started["run_id"], bearer(started["token"])), "wire", {"iban": "DE00 1234"})
    approval = call["approval_id"]
    viewer = w.factory.member(w.org, "viewer")

    def listed(who: Member) -> bool:
        found = w.client.get(w.url("approvals"), headers=who.headers)
        assert found.status_code == 200, found.text
        return approval in {a["id"] for a in found.json()["data"]}

    def shown(who: Member) -> int:
        return w.client.get(w.url(f"approvals/{approval}"), headers=who.headers).status_code

    assert (listed(viewer), shown(viewer)) == (False, 404)  # the agent is 404 to them too
    assert w.client.get(w.url(f"agents/{private['id']}"), headers=viewer.headers).status_code == 404
    assert (listed(w.managers[0]), shown(w.managers[0])) == (True, 200)  # may decide it
    assert (listed(owner), shown(owner)) == (True, 200)  # its agent, and asked for them
