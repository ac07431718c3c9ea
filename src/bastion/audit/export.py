"""Streamed exports of the audit trail (JSONL and CSV, written by `render`), in
constant memory.

Rows are read in keyset-paginated batches (by `seq`, oldest first) from a session of
their own, so an export of millions of events never holds more than one batch. A long
export is rendered by worker processes (`python -m bastion.audit.render`) that run the
same batch query with the database driver.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import BigInteger, String, bindparam, cast, func, select, type_coerce
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chainwalk, render
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

log = structlog.get_logger("bastion.audit")

BATCH = 2000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {ExportFormat.JSONL: "application/x-ndjson", ExportFormat.CSV: "text/csv"}


def begin(
    db: Session, principal: Principal, org_id: str, filters: audit.EventFilter, fmt: ExportFormat
) -> None:
    """Authorize an export and record it (in the request's transaction, before any row
    is sent): exporting the trail is itself an audited act."""
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_EXPORT)
    principal.require_recent_auth("audit.export")
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


# The exported columns, read without the ORM: `time` and `metadata` as the driver hands
# them over, SQLite's stored text, PostgreSQL's naive UTC time and JSON text.
def _columns(dialect: str) -> tuple[Any, ...]:
    time = AuditEvent.time if dialect == "sqlite" else func.timezone("UTC", AuditEvent.time)
    return (
        AuditEvent.id,
        AuditEvent.seq,
        type_coerce(time, String),
        AuditEvent.type,
        AuditEvent.actor_type,
        AuditEvent.actor_id,
        AuditEvent.actor_ip,
        AuditEvent.actor_user_agent,
        AuditEvent.resource_type,
        AuditEvent.resource_id,
        AuditEvent.outcome,
        AuditEvent.reason,
        AuditEvent.request_id,
        cast(AuditEvent.event_metadata, String),
        AuditEvent.hash,
        AuditEvent.prev_hash,
    )


def stream(
    sessions: sessionmaker[Session],
    org_id: str,
    filters: audit.EventFilter,
    fmt: ExportFormat,
    batch: int = BATCH,
    workers: int | None = None,
) -> Iterator[bytes]:
    """The export, oldest event first. An export that spans `PARALLEL_MIN` seq numbers
    or more is rendered by worker processes (`workers`, default one per CPU up to 4),
    a range of `CHUNK` seq numbers each, and sent in order; should they fail, the rest
    is rendered here."""
    if fmt is ExportFormat.CSV:
        yield render.csv_line(render.COLUMNS)
    with sessions() as db:
        low, high = db.execute(
            select(func.min(AuditEvent.seq), func.max(AuditEvent.seq)).where(
                AuditEvent.chain == org_id
            )
        ).one()
        bounds = audit.seq_range(db, org_id, filters)
        if bounds is not None:
            low, high = max(low or 0, bounds[0]), min(high or 0, bounds[1])
        if low is None or high < low:
            return
        workers = chainwalk.default_workers() if workers is None else workers
        source = audit.worker_source(db, org_id)
        parallel = workers > 1 and high - low + 1 >= PARALLEL_MIN
        query = _driver_query(db, org_id, filters, batch) if source and parallel else None
    start = low
    if source is not None and query is not None:
        done = [low]
        try:
            yield from _parallel(source, query, fmt, low, high, workers, done)
            return
        except (_WorkerFailed, OSError):
            log.warning("audit export falls back to one process", exc_info=True)
            start = done[0]
    yield from _rendered(sessions, org_id, filters, fmt, batch, start, high)


def _batch_query(db: Session, org_id: str, filters: audit.EventFilter) -> Any:
    """The export's rows (`_columns`), not yet limited to a seq range or ordered."""
    columns = _columns(db.get_bind().dialect.name)
    return audit.bounded(db, org_id, filters).with_only_columns(*columns)


def _rendered(
    sessions: sessionmaker[Session],
    org_id: str,
    filters: audit.EventFilter,
    fmt: ExportFormat,
    batch: int,
    low: int,
    high: int | None,
) -> Iterator[bytes]:
    """The events with low <= seq <= high, rendered `batch` at a time, each batch read
    in a transaction of its own."""
    write = render.csv_rows if fmt is ExportFormat.CSV else render.jsonl
    last = low - 1
    with sessions() as db:
        query = _batch_query(db, org_id, filters)
        if high is not None:
            query = query.where(AuditEvent.seq <= high)
        while True:
            stmt = query.where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
            rows = db.connection().execute(stmt).all()  # Core rows, no ORM loading
            db.rollback()  # end the read transaction between batches
            if not rows:
                return
            last = rows[-1][1]
            yield write(rows)


# --- worker processes ------------------------------------------------------------------

PARALLEL_MIN = 200_000  # seq numbers an export spans to be rendered by worker processes
CHUNK = 50_000  # seq numbers per worker task (about 25 MB of JSONL)
_PIECE = 1 << 20  # bytes sent on at a time


def _driver_query(
    db: Session, org_id: str, filters: audit.EventFilter, batch: int
) -> render.DriverQuery:
    """The batch query as the database driver runs it: (SQL, parameter names in
    placeholder order for a positional driver, else empty; parameters as the driver
    takes them, each through its type's bind processing). A batch sets the parameters
    `render.AFTER` and `render.HIGH`: the rows with AFTER < seq <= HIGH."""
    dialect = db.get_bind().dialect
    stmt = (
        _batch_query(db, org_id, filters)
        .where(
            AuditEvent.seq > bindparam(render.AFTER, 0, type_=BigInteger),
            AuditEvent.seq <= bindparam(render.HIGH, 0, type_=BigInteger),
        )
        .order_by(AuditEvent.seq)
        .limit(batch)
    )
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params: dict[str, Any] = {}
    for name, value in compiled.params.items():
        processor = compiled.binds[name].type.bind_processor(dialect)
        params[name] = value if processor is None else processor(value)
    return compiled.string, list(compiled.positiontup or ()), params


class _WorkerFailed(Exception):
    """An export worker process did not answer."""


def _parallel(
    source: chainwalk.Source,
    query: render.DriverQuery,
    fmt: ExportFormat,
    low: int,
    high: int,
    workers: int,
    done: list[int],
) -> Iterator[bytes]:
    """Chunk k is rendered by worker k mod `workers` (`python -m bastion.audit.render`,
    which renders a whole chunk before sending it, so the others work meanwhile) and
    sent on in order; `done[0]` is the first seq not sent yet."""
    chunks = [(start, min(start + CHUNK - 1, high)) for start in range(low, high + 1, CHUNK)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for slot in range(min(workers, len(chunks))):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bastion.audit.render"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            if proc.stdin is None:  # pragma: no cover
                raise _WorkerFailed("an export worker has no pipes")
            proc.stdin.write(render.order(source, query, str(fmt), chunks[slot::workers]))
            proc.stdin.close()
        for k, (_, end) in enumerate(chunks):
            out = procs[k % len(procs)].stdout
            size = _read(out, 8)
            left = int.from_bytes(size, "big")
            while left:
                piece = _read(out, min(left, _PIECE))
                left -= len(piece)
                yield piece
            done[0] = end + 1
    finally:
        chainwalk.stop_workers(procs)


def _read(out: Any, n: int) -> bytes:
    data = out.read(n) if out is not None else b""
    if len(data) != n:
        raise _WorkerFailed("an export worker stopped")
    return bytes(data)
