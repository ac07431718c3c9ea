"""Approvers are told where they are: each policy's deciders (its users, roles and teams;
nobody else) by email through a real SMTP server and by Slack `chat.postMessage` to a
local server shaped like Slack's Web API, after commit, retried; a summary that names
the agent, tool, risk, who it is for, the deadline and the console link, with the
arguments redacted, clipped and escaped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bastion.approvals import service as approvals
from bastion.approvals.models import ApprovalNotice
from bastion.approvals.notify import deliver
from bastion.core.clock import clock, utcnow
from tests.agents.test_gate import World
from tests.approvals.support import (
    BOT_TOKEN,
    PUBLIC_URL,
    Env,
    configure_slack,
    link,
)
from tests.factories import Member

TOOLS = [
    {"name": "issue_credit", "risk": "medium"},
    {"name": "wire_money", "risk": "high"},
]
ARGUMENTS = {
    "amount": 120,
    "note": "<script>alert(1)</script> & more",
    "password": "hunter2-never-shown",
    "api_token": "bsk_abcdefgh_ijklmnopqrstuvwxyz",
    "memo": "x" * 300,
}


@pytest.fixture
def w(env: Env) -> World:
    return World(env.client, env.factory)


def _agent(w: World) -> str:
    return str(w.post("agents", {"name": "billing-bot", "visibility": "org", "tools": TOOLS})["id"])


def _pending(w: World, agent: str, tool: str = "issue_credit") -> tuple[str, str, Any]:
    started = w.post(f"agents/{agent}/runs", {}, headers=w.user.headers)
    run = (started["run_id"], {"Authorization": f"Bearer {started['token']}"})
    call = w.call(run, tool, ARGUMENTS)
    assert call["decision"] == "pending", call
    return str(call["approval_id"]), str(call["id"]), run


def _people(w: World) -> set[str]:
    return {w.org.admin.email, *(m.email for m in w.org.members.values())}


def _emails(env: Env, w: World) -> dict[str, Any]:
    """The messages to this organisation's people (the database is shared by tests)."""
    people = _people(w)
    return {
        rcpt: message for rcpts, message in env.mailbox.messages for rcpt in rcpts if rcpt in people
    }


def _sent(env: Env, w: World) -> int:
    people = _people(w)
    return sum(1 for rcpts, _ in env.mailbox.messages for r in rcpts if r in people)


def test_email_goes_to_exactly_the_policys_approvers_with_a_safe_summary(
    env: Env, w: World
) -> None:
    agent = _agent(w)
    team = w.post("teams", {"name": "finance"})["id"]
    by_team: Member = env.factory.member(w.org, "member")
    assert env.client.put(
        w.url(f"teams/{team}/members/{by_team.user_id}"), headers=w.org.headers
    ).status_code in (200, 204)
    named = w.managers[0]
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [named.user_id], "teams": [team], "roles": ["manager"]},
    )
    approval, _, _ = _pending(w, agent)
    assert _sent(env, w) == 0  # nothing is sent by the request itself
    env.deliver()
    got = _emails(env, w)
    # The named user, every manager; the team's member lacks approvals:decide (a member),
    # the admin is not named, the requester may not decide their own request.
    assert set(got) == {m.email for m in w.managers}
    message = got[named.email]
    assert "billing-bot" in message["Subject"]
    assert "issue_credit" in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    link_ = f"{PUBLIC_URL}/console/approvals/{approval}"
    for body in (text, html):
        assert link_ in body
        assert "medium" in body
        assert w.user.email in body  # who it is for
        assert "hunter2" not in body
        assert "bsk_abcdefgh" not in body
        assert "x" * 100 not in body  # clipped
    assert "[REDACTED]" in text
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "decide" in text
    assert "approve?" not in text.lower()
    # A second round tells nobody again.
    env.deliver()
    assert _sent(env, w) == len(w.managers)


def _slack_calls(env: Env, approval: str) -> list[Any]:
    """The Slack calls about `approval`: a round delivers every organisation's due
    notices, and other tests' may arrive in the same receiver."""
    return [c for c in env.slack.calls if approval in str(c.body.get("blocks"))]


def test_slack_gets_block_kit_with_approve_and_deny_for_linked_approvers(
    env: Env, w: World
) -> None:
    agent = _agent(w)
    configure_slack(w)
    linked, unlinked = w.managers[0], w.managers[1]
    link(w, linked, "U0LINKED1")
    link(w, w.user, "U0REQUESTER")  # the requester: linked, but never asked
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [linked.user_id, unlinked.user_id]},
    )
    approval, _, _ = _pending(w, agent)
    env.deliver()
    calls = _slack_calls(env, approval)
    assert [c.body["channel"] for c in calls] == ["U0LINKED1"]
    call = calls[0]
    assert call.path == "/api/chat.postMessage"
    assert call.authorization == f"Bearer {BOT_TOKEN}"
    blocks = call.body["blocks"]
    actions = next(b for b in blocks if b["type"] == "actions")
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert buttons["approval.approve"]["value"] == approval
    assert buttons["approval.deny"]["value"] == approval
    assert buttons["approval.open"]["url"] == f"{PUBLIC_URL}/console/approvals/{approval}"
    shown = str(blocks)
    assert "billing-bot" in shown
    assert "issue_credit" in shown
    assert "medium" in shown
    assert "hunter2" not in shown
    assert "[REDACTED]" in shown
    section = next(b for b in blocks if b["type"] == "section" and "text" in b)
    assert section["text"]["type"] == "plain_text"  # arguments: no mrkdwn, no links
    assert set(_emails(env, w)) == {linked.email, unlinked.email}


def test_failures_are_retried_counted_and_logged_without_secrets(
    env: Env, w: World, caplog: pytest.LogCaptureFixture
) -> None:
    agent = _agent(w)
    configure_slack(w)
    link(w, w.managers[0], "U0RETRY1")
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [w.managers[0].user_id]},
    )
    approval, _, _ = _pending(w, agent)
    env.slack.error = "ratelimited"
    before = deliver.STATS["slack.failed"]
    env.deliver()
    assert deliver.STATS["slack.failed"] >= before + 1  # other tests' notices may fail too
    assert len(_slack_calls(env, approval)) == 1
    with env.state.sessions() as db:
        row = db.query(ApprovalNotice).filter_by(channel="slack", approval_id=approval).one()
        assert row.sent_at is None
        assert row.attempts == 1
        assert row.error == "Slack: ratelimited"
        assert BOT_TOKEN not in (row.error or "")
    env.slack.error = None
    with env.state.write_sessions() as db:
        db.query(ApprovalNotice).filter_by(channel="slack", approval_id=approval).update(
            {"next_at": None}
        )
        db.commit()
    env.deliver()
    assert len(_slack_calls(env, approval)) == 2
    assert BOT_TOKEN not in caplog.text


def test_a_request_decided_before_sending_is_not_announced(env: Env, w: World) -> None:
    agent = _agent(w)
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [w.managers[0].user_id]},
    )
    approval, _, _ = _pending(w, agent)
    assert w.decide(approval, w.managers[0], "deny").status_code == 200
    env.deliver()
    assert _sent(env, w) == 0


def test_escalation_tells_the_escalated_approvers_once(env: Env, w: World) -> None:
    agent = _agent(w)
    first, escalated = w.managers[0], w.managers[1]
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [first.user_id]},
        expires_in=600,
        escalate_after=60,
        escalate_to={"users": [escalated.user_id, first.user_id]},
    )
    _pending(w, agent)
    env.deliver()
    assert set(_emails(env, w)) == {first.email}
    clock.advance(61)
    with env.state.write_sessions() as db:
        approvals.sweep(db)
        db.commit()
    env.deliver()
    assert set(_emails(env, w)) == {first.email, escalated.email}
    assert _sent(env, w) == 2  # the first approver is not told again


def _notices(env: Env, approval: str) -> list[ApprovalNotice]:
    with env.state.sessions() as db:
        return list(
            db.execute(
                select(ApprovalNotice).where(ApprovalNotice.approval_id == approval)
            ).scalars()
        )


def _age(env: Env, approval: str, days: int, **values: Any) -> None:
    """Date the approval's notices `days` back (and set `values` on them)."""
    with env.state.write_sessions() as db:
        db.execute(
            update(ApprovalNotice)
            .where(ApprovalNotice.approval_id == approval)
            .values(created_at=utcnow() - timedelta(days=days), **values)
        )
        db.commit()


def test_finished_notices_of_closed_approvals_are_purged_after_retention(
    env: Env, w: World
) -> None:
    agent = _agent(w)
    w.policy(
        match={"tools": ["issue_credit"]},
        decision="require_approval",
        approvers={"users": [w.managers[0].user_id]},
    )
    old, _, _ = _pending(w, agent)
    recent, _, _ = _pending(w, agent)
    failing, _, _ = _pending(w, agent)
    env.deliver()
    assert {n.channel for n in _notices(env, old)} == {"fanout", "email"}
    assert all(n.sent_at is not None for n in _notices(env, old))
    days = env.state.settings.approval_notice_retention_days
    _age(env, old, days + 1)
    _age(env, failing, days + 1)
    _age(env, recent, days - 1)
    purge = lambda: deliver.purge_finished(env.state.write_sessions, days, batch=1)  # noqa: E731

    # Still pending: its notices say who was told, and stay.
    assert purge() == 0
    assert len(_notices(env, old)) == 2
    for approval in (old, recent, failing):
        assert w.decide(approval, w.managers[0], "deny").status_code == 200
    # One of `failing`'s notices was never sent and may still be retried: it stays; the
    # fan-out is done. Notices of `old` go (in batches of one here); `recent` is young.
    with env.state.write_sessions() as db:
        db.execute(
            update(ApprovalNotice)
            .where(ApprovalNotice.approval_id == failing, ApprovalNotice.channel == "email")
            .values(sent_at=None, attempts=deliver.MAX_ATTEMPTS - 1)
        )
        db.commit()
    assert purge() == 3
    assert _notices(env, old) == []
    assert len(_notices(env, recent)) == 2
    assert [n.channel for n in _notices(env, failing)] == ["email"]
    # Given up after the last attempt, it goes too.
    _age(env, failing, days + 1, attempts=deliver.MAX_ATTEMPTS)
    assert purge() == 1
    assert _notices(env, failing) == []
