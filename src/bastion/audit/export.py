"""Streamed exports of the audit trail (JSONL and CSV), in constant memory.

Rows are read in keyset-paginated batches (by `seq`, oldest first) from a session of
their own, so an export of millions of events never holds more than one batch.
CSV cells that a spreadsheet would run as a formula are prefixed with a quote.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import service as audit
from bastion.audit.events import EventType
from bastion.audit.models import AuditEvent
from bastion.authz.permissions import Permission
from bastion.authz.principal import Principal
from bastion.core.clock import rfc3339

BATCH = 2000
COLUMNS = [
    "id",
    "seq",
    "time",
    "type",
    "actor_type",
    "actor_id",
    "actor_ip",
    "actor_user_agent",
    "resource_type",
    "resource_id",
    "outcome",
    "reason",
    "request_id",
    "metadata",
    "hash",
    "prev_hash",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {ExportFormat.JSONL: "application/x-ndjson", ExportFormat.CSV: "text/csv"}


def as_dict(e: AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "seq": e.seq,
        "time": rfc3339(e.time),
        "type": e.type,
        "actor": {
            "type": e.actor_type,
            "id": e.actor_id,
            "ip": e.actor_ip,
            "user_agent": e.actor_user_agent,
        },
        "resource": {"type": e.resource_type, "id": e.resource_id},
        "outcome": e.outcome,
        "reason": e.reason,
        "request_id": e.request_id,
        "metadata": e.event_metadata,
        "hash": e.hash,
        "prev_hash": e.prev_hash,
    }


def _safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_safe_cell(v) for v in values])
    return buffer.getvalue().encode()


def _csv_row(e: AuditEvent) -> list[Any]:
    metadata = json.dumps(e.event_metadata, sort_keys=True, separators=(",", ":"))
    return [
        e.id,
        e.seq,
        rfc3339(e.time),
        e.type,
        e.actor_type,
        e.actor_id,
        e.actor_ip,
        e.actor_user_agent,
        e.resource_type,
        e.resource_id,
        e.outcome,
        e.reason,
        e.request_id,
        metadata,
        e.hash,
        e.prev_hash,
    ]


def begin(
    db: Session, principal: Principal, org_id: str, filters: audit.EventFilter, fmt: ExportFormat
) -> None:
    """Authorize an export and record it (in the request's transaction, before any row
    is sent): exporting the trail is itself an audited act."""
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_EXPORT)
    audit.record(
        db,
        type=EventType.AUDIT_EXPORTED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={
            "format": str(fmt),
            "filters": {k: str(v) for k, v in vars(filters).items() if v},
        },
    )


def stream(
    sessions: sessionmaker[Session],
    org_id: str,
    filters: audit.EventFilter,
    fmt: ExportFormat,
    batch: int = BATCH,
) -> Iterator[bytes]:
    if fmt is ExportFormat.CSV:
        yield _csv_line(COLUMNS)
    last = 0
    with sessions() as db:
        while True:
            stmt = audit.filtered(org_id, filters).where(AuditEvent.seq > last)
            rows = list(db.execute(stmt.order_by(AuditEvent.seq).limit(batch)).scalars())
            if not rows:
                return
            if fmt is ExportFormat.CSV:
                chunk = b"".join(_csv_line(_csv_row(e)) for e in rows)
            else:
                chunk = b"".join(
                    json.dumps(as_dict(e), separators=(",", ":")).encode() + b"\n" for e in rows
                )
            last = rows[-1].seq
            db.expunge_all()
            db.rollback()  # end the read transaction between batches
            yield chunk
