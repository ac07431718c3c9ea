"""What the Approvals page shows of each request, read in a fixed number of queries
whatever the number of requests (no query per row): the list comes from the approvals
service (`list_approvals` — the API's own reading, with its visibility rule), who may
decide it now from `bastion.approvals.approvers` (the rule `mine=true` applies), and
what a card shows (the call's arguments, the agent's name and the tool's risk, the
policy's name, the approvals given, the person it is for) in one query per kind.

Not a page: no routes (every module of `pages` is included)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent, ToolCall
from bastion.approvals import approvers
from bastion.approvals import service as approvals
from bastion.approvals.hooks import agent_side
from bastion.approvals.models import Approval, ApprovalDecision, ApprovalPolicy
from bastion.console.pages.common import user_emails
from bastion.console.web import Viewer
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import NotFound
from bastion.core.principal import Principal
from bastion.identity import apikeys

router = APIRouter()  # no routes

# The inbox shows up to this many requests (the performance budget is for 1,000).
INBOX_LIMIT = 1000
HISTORY_LIMIT = 200
ARGUMENTS_SHOWN = 2000  # characters of pretty-printed arguments before truncation


@dataclass(frozen=True)
class Card:
    """One request as the page shows it."""

    approval: Approval
    status: str
    agent: str
    risk: str
    arguments: str
    truncated: bool
    requested_for: str | None
    policy: str | None
    approvals: int
    decisions: list[tuple[str, str, str]]  # (who, approve | deny, comment)
    decidable: bool  # the viewer may decide it now
    id: str
    expires_at: str  # RFC 3339, for the countdown


# Scalars and keys through the C encoder (`json.dumps` with `indent` runs the pure-Python
# one, the largest cost of the inbox's cards); same text as `json.dumps(indent=2,
# sort_keys=True, ensure_ascii=False, default=str)`, which `pretty` falls back to.
_SCALAR = json.JSONEncoder(ensure_ascii=False, default=str, sort_keys=True).encode


class _Full(Exception):
    """Enough text to show: the rest would be cut anyway."""


def _indented(value: Any, depth: int, parts: list[str], size: list[int]) -> None:
    if isinstance(value, dict) and value:
        if not all(isinstance(k, str) for k in value):
            raise TypeError("keys that JSON turns into text: the standard encoder's order")
        inner = "\n" + "  " * (depth + 1)
        parts.append("{")
        for i, key in enumerate(sorted(value)):
            parts.append(("," if i else "") + inner + _SCALAR(key) + ": ")
            _indented(value[key], depth + 1, parts, size)
        parts.append("\n" + "  " * depth + "}")
    elif isinstance(value, list | tuple) and value:
        inner = "\n" + "  " * (depth + 1)
        parts.append("[")
        for i, item in enumerate(value):
            parts.append(("," if i else "") + inner)
            _indented(item, depth + 1, parts, size)
        parts.append("\n" + "  " * depth + "]")
    else:
        text = _SCALAR(value)
        parts.append(text)
        size[0] += len(text)
        if size[0] > ARGUMENTS_SHOWN:
            raise _Full


def pretty(arguments: Any) -> tuple[str, bool]:
    """Arguments as indented JSON (escaped by the template), cut at ARGUMENTS_SHOWN."""
    parts: list[str] = []
    try:
        _indented(arguments, 0, parts, [0])
        text = "".join(parts)
    except _Full:
        text = "".join(parts)
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(arguments, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) <= ARGUMENTS_SHOWN:
        return text, False
    return text[:ARGUMENTS_SHOWN] + "\n…", True


def decidable_now(
    db: Session, principal: Principal, rows: Sequence[Approval], now: datetime
) -> set[str]:
    """Ids of the requests the principal may decide now: pending, an eligible approver
    (the same rule as the API's `mine=true`: named, escalation, separation of duties)
    and not decided by them already. Runs and their starters are read once each."""
    approver = approvers.approver(db, principal)
    pending = [a for a in rows if approvals.effective_status(a, now) == "pending"]
    if approver is None or not pending:
        return set()
    decided = set(
        db.execute(
            select(ApprovalDecision.approval_id).where(
                ApprovalDecision.approver_id == approver.user_id,
                ApprovalDecision.approval_id.in_([a.id for a in pending]),
            )
        ).scalars()
    )
    side = agent_side()
    starters: dict[str, str | None] = {}
    kept: set[str] = set()
    for approval in pending:
        if approval.id in decided:
            continue
        if approval.run_id not in starters:
            run = side.run(db, approval.run_id)
            if run is None or run.ended(now):
                starters[approval.run_id] = "\0ended"
            else:
                starters[approval.run_id] = apikeys.person_behind(
                    db, approval.org_id, run.started_by
                )
        started_by = starters[approval.run_id]
        if started_by == "\0ended":
            continue  # nobody can decide an action of a run that has ended
        parties = approvers.Parties(approval.requested_for, started_by)
        if approvers.eligible(approver, approval, parties, now):
            kept.add(approval.id)
    return kept


def _by_id(db: Session, stmt: Any) -> dict[str, Any]:
    return {row[0]: row[1] for row in db.execute(stmt)}


def cards(
    viewer: Viewer, rows: Sequence[Approval], decidable: Iterable[str], now: datetime
) -> list[Card]:
    """The cards of these requests, with one query per kind of detail."""
    if not rows:
        return []
    db, org_id = viewer.db, viewer.org_id
    ids = [a.id for a in rows]
    arguments = _by_id(
        db, select(ToolCall.id, ToolCall.arguments).where(
            ToolCall.org_id == org_id, ToolCall.id.in_([a.call_id for a in rows])
        ),
    )  # fmt: skip
    agent_ids = sorted({a.agent_id for a in rows})
    names = _by_id(
        db, select(Agent.id, Agent.name).where(Agent.org_id == org_id, Agent.id.in_(agent_ids))
    )
    risks: dict[tuple[str, str], str] = {}
    for agent_id, tools in agent_side().tools(db, org_id, agent_ids):
        for tool in tools:
            risks[(agent_id, str(tool.get("name")))] = str(tool.get("risk", "unknown"))
    policy_ids = sorted({a.policy_id for a in rows if a.policy_id})
    policies = (
        _by_id(
            db,
            select(ApprovalPolicy.id, ApprovalPolicy.name).where(
                ApprovalPolicy.org_id == org_id, ApprovalPolicy.id.in_(policy_ids)
            ),
        )
        if policy_ids
        else {}
    )
    decisions: dict[str, list[ApprovalDecision]] = {i: [] for i in ids}
    stmt = (
        select(ApprovalDecision)
        .where(ApprovalDecision.org_id == org_id, ApprovalDecision.approval_id.in_(ids))
        .order_by(ApprovalDecision.created_at, ApprovalDecision.approver_id)
    )
    for decision in db.execute(stmt).scalars():
        decisions[decision.approval_id].append(decision)
    emails = user_emails(viewer)
    keep = set(decidable)
    out = []
    for a in rows:
        text, cut = pretty(arguments.get(a.call_id))
        made = decisions[a.id]
        out.append(
            Card(
                approval=a,
                status=approvals.effective_status(a, now),
                agent=names.get(a.agent_id, a.agent_id),
                risk=risks.get((a.agent_id, a.tool), "unknown"),
                arguments=text,
                truncated=cut,
                requested_for=emails.get(a.requested_for, a.requested_for)
                if a.requested_for
                else None,
                policy=policies.get(a.policy_id, a.policy_id) if a.policy_id else None,
                approvals=sum(1 for d in made if d.decision == "approve"),
                decisions=[
                    (emails.get(d.approver_id, d.approver_id), d.decision, d.comment) for d in made
                ],
                decidable=a.id in keep,
                id=a.id,
                expires_at=as_utc(a.expires_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
    return out


def inbox(viewer: Viewer) -> list[Card]:
    """What the viewer may decide now, newest first (up to INBOX_LIMIT)."""
    principal, now = viewer.signed_in, utcnow()
    page = approvals.list_approvals(
        viewer.db, principal, viewer.org_id, status="pending", mine=False,
        limit=INBOX_LIMIT, cursor=None,
    )  # fmt: skip
    mine = decidable_now(viewer.db, principal, page.data, now)
    return cards(viewer, [a for a in page.data if a.id in mine], mine, now)


def history(viewer: Viewer) -> list[Card]:
    """Requests the viewer may see that are decided (or expired), newest first."""
    now = utcnow()
    page = approvals.list_approvals(
        viewer.db, viewer.signed_in, viewer.org_id, status=None, mine=False,
        limit=HISTORY_LIMIT, cursor=None,
    )  # fmt: skip
    done = [a for a in page.data if approvals.effective_status(a, now) != "pending"]
    return cards(viewer, done, (), now)


def one(viewer: Viewer, approval_id: str) -> Card:
    """One request the viewer may see (404 otherwise, as the API's)."""
    now = utcnow()
    approval, _ = approvals.get_approval(viewer.db, viewer.signed_in, viewer.org_id, approval_id)
    mine = decidable_now(viewer.db, viewer.signed_in, [approval], now)
    return cards(viewer, [approval], mine, now)[0]


def inbox_one(viewer: Viewer, approval_id: str) -> list[Card]:
    """The request's card when it belongs in the viewer's inbox now, else nothing."""
    now = utcnow()
    try:
        approval, _ = approvals.get_approval(
            viewer.db, viewer.signed_in, viewer.org_id, approval_id
        )
    except NotFound:
        return []
    mine = decidable_now(viewer.db, viewer.signed_in, [approval], now)
    return cards(viewer, [approval], mine, now) if mine else []
