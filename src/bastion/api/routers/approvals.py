"""Approval policies, the approvals inbox, decisions and a stream of changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from bastion.agents.models import ToolCall
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State, reauthenticate
from bastion.approvals import service as approvals
from bastion.approvals.models import Approval, ApprovalDecision, ApprovalPolicy
from bastion.approvals.schemas import (
    ApprovalOut,
    DecisionIn,
    DecisionOut,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
)
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import BastionError
from bastion.core.permissions import Permission
from bastion.core.schemas import ListOf, QueryBool, QueryNumber

policies_router = APIRouter(prefix="/v1/orgs/{org}/approval-policies", tags=["approvals"])
router = APIRouter(prefix="/v1/orgs/{org}/approvals", tags=["approvals"])

STREAM_POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


def _policy(policy: ApprovalPolicy) -> PolicyOut:
    out = PolicyOut.model_validate(policy)
    return out.model_copy(update={"escalate_to": policy.escalate_to or None})


@policies_router.post("", status_code=201, summary="Create an approval policy")
def create_policy(org: str, body: PolicyIn, principal: Caller, db: DB) -> PolicyOut:
    policy = approvals.create_policy(db, principal, org, body)
    db.flush()
    return _policy(policy)


@policies_router.get("", summary="Approval policies, newest first")
def list_policies(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[PolicyOut]:
    page = approvals.list_policies(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[PolicyOut](data=[_policy(p) for p in page.data], next_cursor=page.next_cursor)


@policies_router.get("/{policy}", summary="One approval policy")
def get_policy(org: str, policy: str, principal: Caller, db: DB) -> PolicyOut:
    return _policy(approvals.get_policy(db, principal, org, policy))


@policies_router.patch(
    "/{policy}",
    summary="Change an approval policy (validated as on create; open requests unchanged)",
)
def update_policy(
    org: str, policy: str, body: PolicyUpdate, principal: Caller, db: DB
) -> PolicyOut:
    updated = approvals.update_policy(db, principal, org, policy, body)
    db.flush()
    return _policy(updated)


@policies_router.post(
    "/{policy}/reapprove",
    summary="Approve the current definitions of the tools the policy matches",
)
def reapprove_policy(org: str, policy: str, principal: Caller, db: DB) -> PolicyOut:
    return _policy(approvals.reapprove_policy(db, principal, org, policy))


@policies_router.delete("/{policy}", status_code=204, summary="Delete an approval policy")
def delete_policy(org: str, policy: str, principal: Caller, db: DB) -> Response:
    approvals.delete_policy(db, principal, org, policy)
    return Response(status_code=204)


def _approval(
    approval: Approval, call: ToolCall, decisions: list[ApprovalDecision], now: datetime
) -> ApprovalOut:
    return ApprovalOut(
        id=approval.id,
        org_id=approval.org_id,
        run_id=approval.run_id,
        call_id=approval.call_id,
        agent_id=approval.agent_id,
        tool=approval.tool,
        arguments=call.arguments,
        policy_id=approval.policy_id,
        requested_for=approval.requested_for,
        status=approvals.effective_status(approval, now),
        quorum=approval.quorum,
        approvals=sum(1 for d in decisions if d.decision == "approve"),
        approvers=approval.approvers or {},
        escalate_to=approval.escalate_to or {},
        escalate_at=approval.escalate_at,
        escalated=approval.escalate_at is not None and as_utc(approval.escalate_at) <= now,
        expires_at=approval.expires_at,
        reason=approval.reason,
        decisions=[DecisionOut.model_validate(d) for d in decisions],
        created_at=approval.created_at,
        decided_at=approval.decided_at,
    )


Status = Literal["pending", "approved", "denied", "expired"]


@router.get("", summary="Approvals, newest first; `mine=true` is the caller's inbox")
def list_approvals(
    org: str,
    principal: Caller,
    db: DB,
    status: Status | None = Query(None),
    mine: Annotated[QueryBool, Query(description="Only those the caller may decide now.")] = False,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[ApprovalOut]:
    page = approvals.list_approvals(
        db, principal, org, status=status, mine=mine, limit=limit, cursor=cursor
    )
    now = utcnow()
    data = [
        _approval(a, db.get(ToolCall, a.call_id), approvals.decisions_of(db, a.id), now)  # type: ignore[arg-type]
        for a in page.data
    ]
    return ListOf[ApprovalOut](data=data, next_cursor=page.next_cursor)


@router.get("/stream", summary="Server-sent events: each change of an approval")
async def stream(
    org: str,
    principal: Caller,
    request: Request,
    state: State,
    duration: Annotated[
        QueryNumber, Query(ge=1, le=3600, description="Seconds before the stream ends.")
    ] = 300,
) -> StreamingResponse:
    """`event: approval` with the approval's id, status and version, for every request
    and every change from now on; a comment line every 15 s keeps proxies open, and the
    caller's credential is checked again then (revoked, expired or no longer allowed to
    read approvals ends the stream)."""
    principal.require_org(org)
    principal.require(Permission.APPROVALS_READ)
    ctx: RequestContext = request.scope[SCOPE_KEY]
    ctx.end_read()

    def changes(since: datetime) -> list[tuple[str, int, str, str, datetime, bool]]:
        """Approvals changed since, each with whether the caller may see it (not the
        requests of a private agent it cannot read)."""
        with state.sessions() as db:
            stmt = select(Approval).where(Approval.org_id == org, Approval.updated_at >= since)
            rows = list(db.execute(stmt).scalars())
            if not rows:
                return []
            readable = approvals.readable_by(db, principal)
            return [(a.id, a.version, a.status, a.tool, a.updated_at, readable(a)) for a in rows]

    def still_allowed() -> None:
        caller = reauthenticate(request, state)
        caller.require_org(org)
        caller.require(Permission.APPROVALS_READ)

    async def events() -> AsyncIterator[str]:
        seen: dict[str, int] = {}
        since = utcnow() - timedelta(seconds=1)
        started = asyncio.get_running_loop().time()
        quiet = 0.0
        yield ": connected\n\n"
        while asyncio.get_running_loop().time() - started < duration:
            for approval_id, version, status, tool, updated, visible in await run_in_threadpool(
                changes, since
            ):
                if seen.get(approval_id, 0) >= version:
                    continue
                seen[approval_id] = version
                since = max(since, as_utc(updated) - timedelta(seconds=1))
                if not visible:
                    continue
                data = {"id": approval_id, "status": status, "version": version, "tool": tool}
                yield f"id: {approval_id}:{version}\nevent: approval\ndata: {json.dumps(data)}\n\n"
                quiet = 0.0
            await asyncio.sleep(STREAM_POLL_SECONDS)
            quiet += STREAM_POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                try:  # the credential again: revoked, expired or no longer allowed ends it
                    await run_in_threadpool(still_allowed)
                except BastionError:
                    return
                yield ": keepalive\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


@router.get("/{apr}", summary="One approval with its call's arguments and decisions")
def get_approval(org: str, apr: str, principal: Caller, db: DB) -> ApprovalOut:
    approval, decisions = approvals.get_approval(db, principal, org, apr)
    call = db.get(ToolCall, approval.call_id)
    return _approval(approval, call, decisions, utcnow())  # type: ignore[arg-type]


@router.post(
    "/{apr}/decisions",
    summary="Approve or deny (one deny ends it; quorum distinct approvals allow it)",
)
def decide(org: str, apr: str, body: DecisionIn, principal: Caller, db: DB) -> ApprovalOut:
    approval = approvals.decide(
        db, principal, org, apr, decision=body.decision, comment=body.comment
    )
    db.flush()
    call, decisions = db.get(ToolCall, approval.call_id), approvals.decisions_of(db, approval.id)
    return _approval(approval, call, decisions, utcnow())  # type: ignore[arg-type]
