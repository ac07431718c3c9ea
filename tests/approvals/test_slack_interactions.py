"""Approve / Deny clicked in Slack: requests signed as Slack signs them (v0 HMAC-SHA256
over `v0:{timestamp}:{body}` with the organisation's signing secret), shaped as Slack's
`block_actions`. Unknown workspace, stale or mis-signed: 401 and nothing changes.
Verified clicks decide as the linked person, by the API's rules, and a replay is
harmless."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from bastion.core.clock import clock
from bastion.tenancy.models import Organization
from tests.agents.test_gate import World
from tests.approvals.support import (
    Env,
    click,
    configure_slack,
    in_background,
    link,
    new_team,
    payload,
    signed,
)
from tests.factories import Member

TOOLS = [{"name": "issue_credit", "risk": "medium"}, {"name": "wire_money", "risk": "high"}]


class Slack:
    """An organisation with its Slack app, an agent, and a policy naming two managers."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.w = World(env.client, env.factory)
        self.team = configure_slack(self.w)
        self.agent = self.w.post(
            "agents", {"name": "billing-bot", "visibility": "org", "tools": TOOLS}
        )["id"]
        self.approvers = self.w.managers[:2]
        self.slack_ids = {}
        for i, who in enumerate(self.approvers):
            self.slack_ids[who.user_id] = f"U{new_team()[1:]}{i}"
            link(self.w, who, self.slack_ids[who.user_id])

    def policy(self, **extra: Any) -> None:
        self.w.policy(
            match={"tools": ["issue_credit", "wire_money"]},
            decision="require_approval",
            approvers={"users": [a.user_id for a in self.approvers]},
            **extra,
        )

    def pending(self, tool: str = "issue_credit") -> tuple[str, str, tuple[str, dict[str, str]]]:
        started = self.w.post(f"agents/{self.agent}/runs", {}, headers=self.w.user.headers)
        run = (started["run_id"], {"Authorization": f"Bearer {started['token']}"})
        call = self.w.call(run, tool, {"amount": 5})
        assert call["decision"] == "pending", call
        return str(call["approval_id"]), str(call["id"]), run

    def click(self, approval: str, who: Member | str, action: str = "approve", **sign: Any) -> Any:
        slack_user = who if isinstance(who, str) else self.slack_ids[who.user_id]
        url = self.env.hooks.url(f"/actions/{self.team}/1/abc")
        body = payload(approval, slack_user, self.team, action, response_url=url)
        return click(self.env.client, body, **sign)

    def approval(self, approval: str) -> Any:
        response = self.env.client.get(
            self.w.url(f"approvals/{approval}"), headers=self.w.org.headers
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def s(env: Env) -> Slack:
    return Slack(env)


def _untouched(s: Slack, approval: str) -> None:
    got = s.approval(approval)
    assert got["status"] == "pending", got
    assert got["decisions"] == [], got


def test_approve_in_slack_lets_the_waiting_agent_proceed(s: Slack) -> None:
    s.policy()
    approval, call, run = s.pending()
    poll = f"/v1/runs/{run[0]}/tool-calls/{call}"
    thread, out = in_background(lambda: s.env.client.get(poll, params={"wait": 20}, headers=run[1]))
    time.sleep(0.3)  # the agent is waiting
    response = s.click(approval, s.approvers[0])
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["response_type"] == "ephemeral"
    assert "approved" in reply["text"]
    assert "now approved" in reply["text"]
    # The same message reaches the clicker through the interaction's response_url.
    told = s.env.hooks.requests[-1]
    assert told.path == f"/actions/{s.team}/1/abc"
    assert json.loads(told.body) == reply
    thread.join(25)
    assert out, "the waiting agent got no answer"
    assert out[0].status_code == 200, out[0].text
    assert out[0].json()["decision"] == "allow"
    got = s.approval(approval)
    assert got["status"] == "approved"
    assert [d["approver_id"] for d in got["decisions"]] == [s.approvers[0].user_id]
    events = s.env.client.get(
        s.w.url("audit-events"),
        params={"type": "approval.decision_recorded", "resource": approval},
        headers=s.w.org.headers,
    ).json()["data"]
    assert [e["actor"]["id"] for e in events] == [s.approvers[0].user_id]


def test_deny_in_slack_denies_the_call(s: Slack) -> None:
    s.policy()
    approval, call, run = s.pending()
    response = s.click(approval, s.approvers[1], "deny")
    assert response.status_code == 200
    assert "denied" in response.json()["text"]
    polled = s.env.client.get(f"/v1/runs/{run[0]}/tool-calls/{call}", headers=run[1])
    assert polled.json()["decision"] == "deny"
    assert s.approval(approval)["status"] == "denied"


def test_a_replayed_click_changes_nothing(s: Slack) -> None:
    s.policy(quorum=2)
    approval, _, _ = s.pending()
    first = s.click(approval, s.approvers[0])
    assert "still waits" in first.json()["text"]
    again = s.click(approval, s.approvers[0])  # Slack retries, or someone replays it
    assert again.status_code == 200
    assert "already decided" in again.json()["text"]
    got = s.approval(approval)
    assert got["status"] == "pending"
    assert got["approvals"] == 1
    s.click(approval, s.approvers[1])
    assert s.approval(approval)["status"] == "approved"
    late = s.click(approval, s.approvers[1], "deny")
    assert "already approved" in late.json()["text"]
    assert s.approval(approval)["status"] == "approved"


@pytest.mark.parametrize("case", ["stale", "future", "mis-signed", "unsigned", "unknown team"])
def test_unverifiable_requests_are_refused_and_change_nothing(s: Slack, case: str) -> None:
    s.policy()
    approval, _, _ = s.pending()
    body = payload(approval, s.slack_ids[s.approvers[0].user_id], s.team)
    if case == "stale":
        response = click(s.env.client, body, timestamp=int(time.time()) - 600)
    elif case == "future":
        response = click(s.env.client, body, timestamp=int(time.time()) + 600)
    elif case == "mis-signed":
        response = click(s.env.client, body, secret="another-secret-of-32-characters!")
    elif case == "unsigned":
        response = s.env.client.post(
            "/v1/integrations/slack/interactions",
            content=urlencode({"payload": json.dumps(body)}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        response = click(s.env.client, payload(approval, "U0ANYONE", new_team()))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    _untouched(s, approval)


def test_a_body_altered_after_signing_is_refused(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending()
    raw, headers = signed(payload(approval, s.slack_ids[s.approvers[0].user_id], s.team))
    tampered = raw.replace(b"approval.approve", b"approval.deny_x").replace(b"deny_x", b"deny")
    response = s.env.client.post(
        "/v1/integrations/slack/interactions", content=tampered, headers=headers
    )
    assert response.status_code == 401
    _untouched(s, approval)


def test_an_unlinked_clicker_is_told_and_nothing_changes(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending()
    response = s.click(approval, "U0NOTLINKED")
    assert response.status_code == 200
    assert "not linked" in response.json()["text"]
    _untouched(s, approval)


def test_an_ineligible_clicker_is_told_why_and_nothing_changes(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending()
    # The person the run acts for (and who started it): separation of duties.
    link(s.w, s.w.user, "U0REQUESTER" + new_team()[1:5])
    response = s.click(approval, _sid(s, s.w.user))
    assert "may not" in response.json()["text"], response.text
    # A manager the policy does not name.
    other = s.w.managers[2]
    link(s.w, other, "U0OTHER" + new_team()[1:5])
    response = s.click(approval, _sid(s, other))
    assert "not an approver" in response.json()["text"], response.text
    _untouched(s, approval)


def _sid(s: Slack, who: Member) -> str:
    me = s.env.client.get(s.w.url(f"users/{who.user_id}"), headers=s.w.org.headers).json()
    return str(me["slack_user_id"])


def test_a_high_risk_decision_needs_the_console(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending("wire_money")
    response = s.click(approval, s.approvers[0])
    text = response.json()["text"]
    assert "recent sign-in" in text
    assert f"/console/approvals/{approval}" in text
    _untouched(s, approval)


def test_another_organisations_approval_is_not_found(s: Slack, env: Env) -> None:
    other = Slack(env)
    other.policy()
    approval, _, _ = other.pending()
    response = s.click(approval, s.approvers[0])  # s's workspace, other's approval
    assert "does not exist" in response.json()["text"]
    _untouched(other, approval)


def test_a_response_url_outside_slacks_hooks_is_never_called(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending()
    elsewhere = s.env.hooks.url("/elsewhere/steal")
    body = payload(approval, s.slack_ids[s.approvers[0].user_id], s.team, response_url=elsewhere)
    response = click(s.env.client, body)
    assert response.status_code == 200
    assert s.approval(approval)["status"] == "approved"
    assert [r.path for r in s.env.hooks.requests] == []


def test_outside_the_orgs_ip_allowlist_a_click_is_refused(s: Slack) -> None:
    s.policy()
    approval, _, _ = s.pending()
    with s.env.state.write_sessions() as db:  # set directly: the test client has no address
        db.execute(
            update(Organization)
            .where(Organization.id == s.w.org.id)
            .values(ip_allowlist=["192.0.2.0/24"])
        )
        db.commit()
    response = s.click(approval, s.approvers[0])
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "ip_not_allowed"
    with s.env.state.write_sessions() as db:
        db.execute(
            update(Organization).where(Organization.id == s.w.org.id).values(ip_allowlist=[])
        )
        db.commit()
    _untouched(s, approval)


def test_removing_the_slack_app_destroys_its_secrets_and_refuses_its_clicks(s: Slack) -> None:
    from bastion.audit.models import AuditEvent
    from bastion.secrets.models import Secret

    s.policy()
    approval, _, _ = s.pending()
    client, url = s.env.client, f"/v1/orgs/{s.w.org.id}"

    def slack_secrets() -> list[str]:
        with s.env.state.sessions() as db:
            return list(
                db.execute(
                    select(Secret.name).where(
                        Secret.org_id == s.w.org.id, Secret.scope_type == "slack"
                    )
                ).scalars()
            )

    assert sorted(slack_secrets()) == ["slack/bot_token", "slack/signing_secret"]
    # Only who may manage the organisation removes it.
    refused = client.patch(url, json={"slack": None}, headers=s.approvers[0].headers)
    assert refused.status_code == 403, refused.text
    assert client.get(url, headers=s.w.org.headers).json()["slack"]["configured"] is True

    removed = client.patch(url, json={"slack": None}, headers=s.w.org.admin.headers)
    assert removed.status_code == 200, removed.text
    assert removed.json()["slack"] == {"configured": False, "team_id": None, "bot_token": False}
    assert slack_secrets() == []
    with s.env.state.sessions() as db:
        events = list(
            db.execute(
                select(AuditEvent).where(
                    AuditEvent.chain == s.w.org.id, AuditEvent.type == "org.slack_removed"
                )
            ).scalars()
        )
    assert [e.event_metadata for e in events] == [{"team_id": s.team}]
    assert events[0].actor_id == s.w.org.admin.user_id
    # Clicks from the workspace are refused now, and change nothing.
    response = s.click(approval, s.approvers[0])
    assert response.status_code == 401, response.text
    _untouched(s, approval)
    # Removing nothing records nothing; the workspace can be connected again.
    again = client.patch(url, json={"slack": None}, headers=s.w.org.admin.headers)
    assert again.status_code == 200, again.text
    body = {"team_id": s.team, "signing_secret": "x" * 32}
    back = client.patch(url, json={"slack": body}, headers=s.w.org.admin.headers)
    assert back.status_code == 200, back.text
    assert back.json()["slack"] == {"configured": True, "team_id": s.team, "bot_token": False}
    # Removing it, like setting it, needs a recent sign-in of a person.
    clock.advance(601)  # older than the organisation's step_up_max_age
    stale = client.patch(url, json={"slack": None}, headers=s.w.org.admin.headers)
    assert stale.status_code == 401, stale.text
    assert "insufficient_user_authentication" in stale.headers["www-authenticate"]
    assert client.get(url, headers=s.w.org.headers).json()["slack"]["configured"] is True
