"""Pending approvals for the console's tests, made the way agents make them (a run asks
the gate for a high-risk tool), and in bulk through the approvals service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.agents.models import Run, ToolCall
from bastion.approvals import service as approvals
from bastion.core.clock import utcnow
from bastion.core.db import begin_write
from bastion.core.ids import new_id
from tests.factories import Factory, Member, Org, bearer


@dataclass
class Pending:
    org: Org
    requester: Member  # started the run (so may not decide it)
    agent_id: str
    run_id: str
    run_token: str
    call: dict[str, Any]

    @property
    def approval_id(self) -> str:
        return str(self.call["approval_id"])


def agent_with_run(
    factory: Factory, org: Org, tool: str = "refund", risk: str = "high", quorum: int | None = None
) -> tuple[Member, str, str, str]:
    """A member's run of an org-wide agent with one tool; with `quorum`, a policy
    requiring that many approvals. (member, agent id, run id, run token)"""
    member = factory.member(org, "member")
    base = f"/v1/orgs/{org.id}"
    body = {"name": "Refund bot", "visibility": "org", "tools": [{"name": tool, "risk": risk}]}
    agent = factory.client.post(f"{base}/agents", json=body, headers=org.headers)
    assert agent.status_code == 201, agent.text
    if quorum is not None:
        policy = {"name": "two people", "decision": "require_approval", "quorum": quorum,
                  "expires_in": 600}  # fmt: skip
        made = factory.client.post(f"{base}/approval-policies", json=policy, headers=org.headers)
        assert made.status_code == 201, made.text
    run = factory.client.post(
        f"{base}/agents/{agent.json()['id']}/runs", json={}, headers=member.headers
    )
    assert run.status_code == 201, run.text
    return member, agent.json()["id"], run.json()["run_id"], run.json()["token"]


def pending(
    factory: Factory,
    org: Org,
    arguments: dict[str, Any] | None = None,
    *,
    quorum: int | None = None,
) -> Pending:
    member, agent, run, token = agent_with_run(factory, org, quorum=quorum)
    call = factory.client.post(
        f"/v1/runs/{run}/tool-calls",
        json={"tool": "refund", "arguments": arguments or {"amount": 5}},
        headers=bearer(token),
    )
    assert call.status_code == 201, call.text
    assert call.json()["decision"] == "pending", call.text
    return Pending(org, member, agent, run, token, call.json())


def many_pending(factory: Factory, first: Pending, count: int) -> None:
    """`count` more pending approvals like `first`'s (same run and agent), each with a
    tool call of its own, opened through the approvals service in one transaction."""
    for start in range(0, count, 100):  # short transactions: the writer slot is shared
        _open(factory, first, range(start, min(count, start + 100)))


def _open(factory: Factory, first: Pending, numbers: range) -> None:
    db = factory.state.sessions()
    begin_write(db)
    with db:
        model = db.get(ToolCall, first.call["id"])
        run = db.get(Run, first.run_id)
        assert model is not None
        assert run is not None
        now = utcnow()
        for i in numbers:
            call = ToolCall(
                id=new_id("call"), org_id=model.org_id, run_id=model.run_id,
                agent_id=model.agent_id, tool=model.tool,
                arguments={"amount": i, "order": f"A-{i}", "note": "<b>not bold</b>"},
                arguments_digest=model.arguments_digest, decision="pending",
                reason="approval_required", created_at=now,
            )  # fmt: skip
            db.add(call)
            db.flush()
            call.approval_id = approvals.open_approval(
                db, org_id=model.org_id, run_id=model.run_id, call_id=call.id,
                agent_id=model.agent_id, tool=model.tool,
                arguments_digest=model.arguments_digest, requested_for=run.on_behalf_of,
                run_expires_at=run.expires_at, policy=None, now=now,
            )  # fmt: skip
        db.commit()
