"""Separation of duties: neither the user a run acts for nor whoever started the run (a
person, or the person whose API key started it) decides its approvals, nor sees them in
their inbox, unless the policy allows self-approval."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.agents.test_gate import World
from tests.factories import Factory, Member, bearer


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def _start_for_user(w: World, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    started = w.post(f"agents/{w.agent}/runs", {"on_behalf_of": w.user.user_id}, headers=headers)
    return started["run_id"], bearer(started["token"])


def _inbox(w: World, who: Member) -> list[str]:
    response = w.client.get(
        w.url("approvals"), params={"mine": "true", "status": "pending"}, headers=who.headers
    )
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["data"]]


def _pending(w: World, run: tuple[str, dict[str, str]], order: str) -> str:
    call: dict[str, Any] = w.call(run, "refund_payment", {"amount": 5, "order": order})
    assert call["decision"] == "pending", call
    return str(call["approval_id"])


def test_whoever_started_the_run_does_not_approve_it(w: World) -> None:
    admin = w.org.admin
    run = _start_for_user(w, admin.headers)
    approval = _pending(w, run, "S-1")
    assert approval not in _inbox(w, admin)
    refused = w.decide(approval, admin, "approve")
    assert refused.status_code == 403, refused.text
    assert "started" in refused.json()["detail"]
    assert approval in _inbox(w, w.managers[0])
    assert w.decide(approval, w.managers[0], "approve").status_code == 200


def test_a_run_started_with_a_persons_api_key_counts_as_theirs(w: World) -> None:
    admin = w.org.admin
    key = w.factory.api_key(w.org, "admin", headers=admin.headers)
    run = _start_for_user(w, bearer(key["key"]))
    approval = _pending(w, run, "S-2")
    assert approval not in _inbox(w, admin)
    assert w.decide(approval, admin, "approve").status_code == 403
    assert w.decide(approval, w.managers[1], "approve").status_code == 200


def test_the_user_acted_for_still_does_not_approve(w: World) -> None:
    manager = w.managers[0]
    w.client.patch(
        w.url(f"users/{w.user.user_id}"), json={"role": "manager"}, headers=w.org.headers
    )
    run = w.run()
    approval = _pending(w, run, "S-3")
    assert approval not in _inbox(w, w.user)
    assert w.decide(approval, w.user, "approve").status_code == 403
    assert w.decide(approval, manager, "approve").status_code == 200


def test_a_policy_allowing_self_approval_lets_the_starter_decide(w: World) -> None:
    w.policy(
        match={"tools": ["refund_payment"]},
        decision="require_approval",
        allow_self_approval=True,
    )
    admin = w.org.admin
    run = _start_for_user(w, admin.headers)
    approval = _pending(w, run, "S-4")
    assert approval in _inbox(w, admin)
    decided = w.decide(approval, admin, "approve")
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
