from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.audit import export, sinks
from bastion.audit import service as audit
from bastion.audit.export import ExportFormat
from bastion.audit.models import AuditCheckpoint, AuditEvent, AuditSink
from bastion.audit.schemas import (
    ActorOut,
    AuditEventOut,
    AuditSinkIn,
    AuditSinkOut,
    CheckpointOut,
    ResourceOut,
    SigningKeyOut,
    VerifyOut,
)
from bastion.core.db import begin_write
from bastion.core.schemas import ListOf, Timestamp

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
    since: Annotated[Timestamp | None, Query(description="Inclusive, RFC 3339.")] = None,
    until: Annotated[Timestamp | None, Query(description="Exclusive, RFC 3339.")] = None,
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
    begin_write(db)  # a GET that writes (the export's own audit event): a writer from the start
    export.begin(db, principal, org, filters, format)
    return StreamingResponse(
        export.stream(state.sessions, org, filters, format),
        media_type=export.MEDIA_TYPES[format],
        headers={"content-disposition": f'attachment; filename="audit-{org}.{format}"'},
    )


@router.post("/verify", summary="Verify the organisation's hash chain")
def verify(org: str, principal: Caller, db: DB, state: State) -> VerifyOut:
    result = audit.verify_org(db, principal, org, state.signer.public_keys)
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
    return _checkpoint_out(audit.checkpoint_org(db, principal, org, state.signer))


@checkpoints_router.get("", summary="Signed checkpoints of the chain, newest first")
def list_checkpoints(org: str, principal: Caller, db: DB) -> dict[str, list[CheckpointOut]]:
    return {"data": [_checkpoint_out(cp) for cp in audit.list_checkpoints(db, principal, org)]}


signing_keys_router = APIRouter(prefix="/v1/audit", tags=["audit"])


@signing_keys_router.get(
    "/signing-keys", summary="Public keys of the instance signing key, every version, oldest first"
)
def list_signing_keys(principal: Caller, state: State) -> dict[str, list[SigningKeyOut]]:
    """A checkpoint names the key that signed it (`key_version`); older keys stay here
    after a rotation, so every checkpoint can be checked with these alone. The same keys
    sign OAuth access tokens and are published by `kid` at `/.well-known/jwks.json`."""
    return {"data": [SigningKeyOut.model_validate(k) for k in state.signer.published()]}


@router.get("/{event}", summary="One audit event")
def get_event(org: str, event: str, principal: Caller, db: DB) -> AuditEventOut:
    return event_out(audit.get(db, principal, org, event))


sinks_router = APIRouter(prefix="/v1/orgs/{org}/audit-sinks", tags=["audit"])


def _sink_out(sink: AuditSink, head_seq: int) -> AuditSinkOut:
    config = sink.config
    return AuditSinkOut(
        id=sink.id,
        name=sink.name,
        type=sink.type,
        format=sink.format,
        host=config.get("host"),
        port=config.get("port"),
        tls=bool(config.get("tls")),
        url=config.get("url"),
        index=config.get("index"),
        enabled=sink.enabled,
        has_token=sink.secret_ciphertext is not None,
        cursor=sink.cursor,
        delivered=sink.delivered,
        failures=sink.failures,
        last_success_at=sink.last_success_at,
        next_attempt_at=sink.next_attempt_at,
        last_error=sink.last_error,
        created_at=sink.created_at,
        **sinks.health(sink, head_seq),
    )


@sinks_router.post("", status_code=201, summary="Stream the audit trail to a SIEM")
def create_sink(
    org: str, body: AuditSinkIn, principal: Caller, db: DB, state: State
) -> AuditSinkOut:
    spec = sinks.SinkSpec(
        name=body.name,
        type=body.type,
        format=body.format,
        host=body.host,
        port=body.port,
        tls=body.tls,
        ca_pem=body.ca_pem,
        url=body.url,
        token=body.token.get_secret_value() if body.token else None,
        index=body.index,
        enabled=body.enabled,
    )
    settings = state.settings
    sink = sinks.create_sink(
        db,
        principal,
        org,
        spec,
        state.root_keys,
        settings.outbound_allow,
        settings.outbound_plaintext_allow,
    )
    return _sink_out(sink, sink.cursor)


@sinks_router.get("", summary="Audit sinks with their health and lag")
def list_sinks(org: str, principal: Caller, db: DB) -> dict[str, list[AuditSinkOut]]:
    found, head = sinks.list_sinks(db, principal, org)
    return {"data": [_sink_out(s, head) for s in found]}


@sinks_router.get("/{sink}", summary="One audit sink with its health and lag")
def get_sink(org: str, sink: str, principal: Caller, db: DB) -> AuditSinkOut:
    found, head = sinks.get_sink(db, principal, org, sink)
    return _sink_out(found, head)


@sinks_router.delete("/{sink}", status_code=204, summary="Stop streaming to this sink")
def delete_sink(org: str, sink: str, principal: Caller, db: DB) -> Response:
    sinks.delete_sink(db, principal, org, sink)
    return Response(status_code=204)
