from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.audit import export
from bastion.audit import service as audit
from bastion.audit.export import ExportFormat
from bastion.audit.models import AuditCheckpoint, AuditEvent
from bastion.audit.schemas import (
    ActorOut,
    AuditEventOut,
    CheckpointOut,
    ResourceOut,
    VerifyOut,
)
from bastion.core.schemas import ListOf

router = APIRouter(prefix="/v1/orgs/{org}/audit-events", tags=["audit"])

Filter = Annotated[str | None, Query(max_length=200)]


def event_out(e: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=e.id,
        seq=e.seq,
        time=e.time,
        type=e.type,
        actor=ActorOut(
            type=e.actor_type, id=e.actor_id, ip=e.actor_ip, user_agent=e.actor_user_agent
        ),
        resource=ResourceOut(type=e.resource_type, id=e.resource_id),
        outcome=e.outcome,
        reason=e.reason,
        request_id=e.request_id,
        metadata=e.event_metadata,
        hash=e.hash,
        prev_hash=e.prev_hash,
    )


async def event_filter(
    type: Filter = None,
    actor: Annotated[str | None, Query(max_length=200, description="Actor id.")] = None,
    resource: Annotated[str | None, Query(max_length=200, description="Resource id.")] = None,
    outcome: Annotated[Literal["success", "failure", "denied"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, RFC 3339.")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, RFC 3339.")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in metadata or reason.")
    ] = None,
) -> audit.EventFilter:
    return audit.EventFilter(
        type=type, actor=actor, resource=resource, outcome=outcome, since=since, until=until, q=q
    )


Filters = Annotated[audit.EventFilter, Depends(event_filter)]


@router.get("", summary="Search the organisation's audit trail, newest first")
def list_events(
    org: str,
    principal: Caller,
    db: DB,
    filters: Filters,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[AuditEventOut]:
    page = audit.search(db, principal, org, filters, limit=limit, cursor=cursor)
    return ListOf[AuditEventOut](
        data=[event_out(e) for e in page.data], next_cursor=page.next_cursor
    )


@router.get(
    "/export",
    summary="Export matching events as JSONL or CSV, oldest first (streamed; audited)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
def export_events(
    org: str,
    principal: Caller,
    db: DB,
    state: State,
    filters: Filters,
    format: Annotated[ExportFormat, Query(description="jsonl or csv")] = ExportFormat.JSONL,
) -> StreamingResponse:
    export.begin(db, principal, org, filters, format)
    return StreamingResponse(
        export.stream(state.sessions, org, filters, format),
        media_type=export.MEDIA_TYPES[format],
        headers={"content-disposition": f'attachment; filename="audit-{org}.{format}"'},
    )


@router.post("/verify", summary="Verify the organisation's hash chain")
def verify(org: str, principal: Caller, db: DB, state: State) -> VerifyOut:
    result = audit.verify_org(db, principal, org, state.audit_signer.public_keys)
    return VerifyOut(
        valid=result.valid,
        checked=result.checked,
        head_hash=result.head_hash,
        first_invalid=result.first_invalid,
        problem=result.problem,
        checkpoints=result.checkpoints,
    )


checkpoints_router = APIRouter(prefix="/v1/orgs/{org}/audit-checkpoints", tags=["audit"])


def _checkpoint_out(cp: AuditCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        id=cp.id,
        seq=cp.seq,
        hash=cp.hash,
        created_at=cp.created_at,
        key_version=cp.key_version,
        signature=cp.signature,
    )


@checkpoints_router.post("", status_code=201, summary="Sign the chain's current head now")
def create_checkpoint(org: str, principal: Caller, db: DB, state: State) -> CheckpointOut:
    return _checkpoint_out(audit.checkpoint_org(db, principal, org, state.audit_signer))


@checkpoints_router.get("", summary="Signed checkpoints of the chain, newest first")
def list_checkpoints(org: str, principal: Caller, db: DB) -> dict[str, list[CheckpointOut]]:
    return {"data": [_checkpoint_out(cp) for cp in audit.list_checkpoints(db, principal, org)]}


@router.get("/{event}", summary="One audit event")
def get_event(org: str, event: str, principal: Caller, db: DB) -> AuditEventOut:
    return event_out(audit.get(db, principal, org, event))
