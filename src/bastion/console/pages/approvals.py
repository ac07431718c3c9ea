"""Approvals: the inbox of what I may decide now (live), one request's page (the link
approvers are sent), Approve / Deny with a comment, and the history of decided ones.

Reading and deciding go through `bastion.approvals.service` exactly as
`/v1/orgs/{org}/approvals` does (`list_approvals`, `get_approval`, `decide`), so the
console allows and refuses what the API does (a high-risk tool asks for step-up).
The inbox stays current through `/console/approvals/stream`: server-sent events, the
same changes the API's `…/approvals/stream` reports, read by `static/approvals.js`,
which fetches the changed request's card (`…/{apr}/card`) or drops it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Protocol, cast

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from bastion.approvals import service as approvals
from bastion.approvals.models import Approval
from bastion.approvals.schemas import DecisionIn
from bastion.console.pages import approvals_data as data
from bastion.console.web import SignedIn, SignedInPost, notice, render, safe_path, see_other
from bastion.core.clock import as_utc, utcnow
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

router = APIRouter()
PAGE = "/console/approvals"

APPROVED = notice("apr-approved", "Your approval is recorded.")
DENIED = notice("apr-denied", "Denied: the agent's call will not run.")

POLL_SECONDS = 0.2
STREAM_SECONDS = 60.0  # then the browser reconnects (and is authenticated again)
KEEPALIVE_SECONDS = 15.0


class _Sessions(Protocol):
    @property
    def sessions(self) -> sessionmaker[Session]: ...


class _Reads(Protocol):
    def end_read(self) -> None: ...


@router.get("/approvals")
def approvals_page(viewer: SignedIn, tab: str = "inbox") -> Response:
    viewer.signed_in.require(Permission.APPROVALS_READ)
    history = tab == "history"
    rows = data.history(viewer) if history else data.inbox(viewer)
    return render(
        viewer, "approvals.html", title="Approvals", cards=rows, history=history,
        limit=data.HISTORY_LIMIT if history else data.INBOX_LIMIT,
    )  # fmt: skip


@router.get("/approvals/stream")
async def approvals_stream(viewer: SignedIn) -> StreamingResponse:
    """`event: approval` (`{"id", "status", "version"}`) for each change of a request the
    viewer may see, for STREAM_SECONDS; EventSource reconnects by itself, and each
    connection authenticates the session cookie again."""
    principal = viewer.signed_in
    principal.require(Permission.APPROVALS_READ)
    cast(_Reads, viewer.unit).end_read()
    sessions = cast(_Sessions, viewer.edge.app).sessions
    org = viewer.org_id
    return StreamingResponse(
        _events(sessions, principal, org),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _changes(
    sessions: sessionmaker[Session], principal: Principal, org: str, since: datetime
) -> list[tuple[str, int, str, datetime, bool]]:
    with sessions() as db:
        stmt = select(Approval).where(Approval.org_id == org, Approval.updated_at >= since)
        rows = list(db.execute(stmt).scalars())
        if not rows:
            return []
        readable = approvals.readable_by(db, principal)
        return [(a.id, a.version, a.status, a.updated_at, readable(a)) for a in rows]


async def _events(
    sessions: sessionmaker[Session], principal: Principal, org: str
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    seen: dict[str, int] = {}
    since = utcnow() - timedelta(seconds=1)
    started = quiet = loop.time()
    yield "retry: 500\n: connected\n\n"
    while loop.time() - started < STREAM_SECONDS:
        for apr, version, status, updated, visible in await run_in_threadpool(
            _changes, sessions, principal, org, since
        ):
            if seen.get(apr, 0) >= version:
                continue
            seen[apr] = version
            since = max(since, as_utc(updated) - timedelta(seconds=1))
            if visible:
                body = json.dumps({"id": apr, "status": status, "version": version})
                yield f"event: approval\ndata: {body}\n\n"
                quiet = loop.time()
        if loop.time() - quiet >= KEEPALIVE_SECONDS:
            quiet = loop.time()
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_SECONDS)


@router.get("/approvals/{apr}")
def approval_page(apr: str, viewer: SignedIn) -> Response:
    card = data.one(viewer, apr)
    return render(viewer, "approval.html", title="Approval", card=card)


@router.get("/approvals/{apr}/card")
def approval_card(apr: str, viewer: SignedIn) -> Response:
    """The request's card for the inbox when the viewer may decide it now; 204 when not
    (decided, closed, not theirs, not visible): the script then drops it."""
    rows = data.inbox_one(viewer, apr)
    if not rows:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    # Its forms come back to the inbox (the page it is shown on), not to this fragment.
    return render(
        viewer, "approval_card.html", card=rows[0], path=PAGE,
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


def _decide(apr: str, posted: SignedInPost, decision: str) -> Response:
    body = DecisionIn.model_validate({"decision": decision, "comment": posted.get("comment") or ""})
    approvals.decide(
        posted.db, posted.principal, posted.org_id, apr, decision=body.decision,
        comment=body.comment,
    )  # fmt: skip
    back = safe_path(posted.form.get("back"), PAGE).split("?")[0]
    return see_other(back, APPROVED if decision == "approve" else DENIED)


@router.post("/approvals/{apr}/approve")
def approve(apr: str, posted: SignedInPost) -> Response:
    return _decide(apr, posted, "approve")


@router.post("/approvals/{apr}/deny")
def deny(apr: str, posted: SignedInPost) -> Response:
    return _decide(apr, posted, "deny")
