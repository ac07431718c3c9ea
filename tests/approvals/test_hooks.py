"""Approvals asks agents through a registered side, and refuses without one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.approvals import hooks
from bastion.approvals import service as approvals
from bastion.core.clock import clock
from tests.agents.test_gate import World
from tests.factories import Factory


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def test_the_gate_registers_the_agents_side() -> None:
    import bastion.agents.gate  # noqa: F401

    assert hooks.agent_side() is not None


def test_with_nothing_registered_approvals_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_registered", [])
    with pytest.raises(hooks.NoAgentSide):
        hooks.agent_side()


def test_without_the_agents_side_nothing_is_decided_shown_or_pinned(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval")
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A-2"})
    assert call["decision"] == "pending"

    monkeypatch.setattr(hooks, "_registered", [])
    assert w.decide(call["approval_id"], w.managers[0]).status_code == 500
    assert w.client.get(w.url("approvals"), headers=w.org.headers).status_code == 500
    created = w.client.post(
        w.url("approval-policies"),
        json={"name": "p", "match": {"tools": ["lookup_order"]}, "decision": "allow"},
        headers=w.org.headers,
    )
    assert created.status_code == 500
    assert w.poll(run, call["id"])["decision"] == "pending"

    monkeypatch.undo()  # the refused decision left nothing behind: the same approver decides
    assert w.decide(call["approval_id"], w.managers[0]).json()["status"] == "approved"
    assert w.poll(run, call["id"])["decision"] == "allow"


def test_without_the_agents_side_the_sweeper_records_no_expiry(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w.policy(match={"tools": ["refund_payment"]}, decision="require_approval", expires_in=60)
    run = w.run()
    call = w.call(run, "refund_payment", {"amount": 1, "order": "A-2"})
    clock.advance(61)

    monkeypatch.setattr(hooks, "_registered", [])
    with w.factory.state.write_sessions() as db, pytest.raises(hooks.NoAgentSide):
        approvals.sweep(db)
    polled = w.poll(run, call["id"])  # expiry is in force at read time all the same
    assert (polled["decision"], polled["reason"]) == ("deny", "approval_expired")

    monkeypatch.undo()
    with w.factory.state.write_sessions() as db:
        assert approvals.sweep(db) >= 1  # the sweep is instance-wide: other tests' too
        db.commit()
    assert [e["resource"]["id"] for e in w.events("approval.expired")] == [call["approval_id"]]
