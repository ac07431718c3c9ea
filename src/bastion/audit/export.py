"""Streamed exports of the audit trail (JSONL and CSV), in constant memory.

Rows are read in keyset-paginated batches (by `seq`, oldest first) from a session of
their own, so an export of millions of events never holds more than one batch.
CSV cells that a spreadsheet would run as a formula are prefixed with a quote.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from _json import make_encoder
from collections.abc import Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from types import SimpleNamespace
from typing import Any

import structlog
from sqlalchemy import String, cast, func, select, type_coerce
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chainwalk
from bastion.audit import service as audit
from bastion.audit.events import EventType
from bastion.audit.models import AuditEvent
from bastion.authz.permissions import Permission
from bastion.authz.principal import Principal
from bastion.core.clock import rfc3339

log = structlog.get_logger("bastion.audit")

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


# json.dumps(value, separators=(",", ":")) and the same with sort_keys=True, built once.
_compact = make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", False, False, True
)
_compact_sorted = make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", True, False, True
)


def _text(value: Any) -> str | None:
    """RFC 3339 text of a time as the driver returned it (naive means UTC)."""
    if type(value) is str:
        return chainwalk.sqlite_time(value)
    if value is not None and value.tzinfo is None:
        return f"{value.isoformat()}Z"
    return rfc3339(value)


def _loaded(value: Any) -> Any:
    """Metadata as the ORM would hold it, from its JSON text."""
    return None if value is None else chainwalk.load_json(value)


def _event(row: Any) -> SimpleNamespace:
    """A row as the attributes `as_dict` and `_csv_row` read."""
    return SimpleNamespace(
        **dict(zip(_EVENT_FIELDS, row, strict=True)),
    )


_EVENT_FIELDS = (
    "id", "seq", "time", "type", "actor_type", "actor_id", "actor_ip", "actor_user_agent",
    "resource_type", "resource_id", "outcome", "reason", "request_id", "event_metadata",
    "hash", "prev_hash",
)  # fmt: skip


def _jsonl(rows: Sequence[Any]) -> bytes:
    """`json.dumps(as_dict(event), separators=(",", ":"))` per row, one per line."""
    e = encode_basestring_ascii
    lines = []
    for row in rows:
        (id_, seq, time, type_, actor_type, actor_id, actor_ip, actor_user_agent,
         resource_type, resource_id, outcome, reason, request_id, metadata, hash_,
         prev_hash) = row  # fmt: skip
        t, m = _text(time), _loaded(metadata)
        try:
            lines.append(
                f'{{"id":{e(id_)},"seq":{int.__repr__(seq)},'
                f'"time":{"null" if t is None else e(t)},"type":{e(type_)},'
                f'"actor":{{"type":{e(actor_type)},'
                f'"id":{"null" if actor_id is None else e(actor_id)},'
                f'"ip":{"null" if actor_ip is None else e(actor_ip)},'
                f'"user_agent":{"null" if actor_user_agent is None else e(actor_user_agent)}}},'
                f'"resource":{{"type":{"null" if resource_type is None else e(resource_type)},'
                f'"id":{"null" if resource_id is None else e(resource_id)}}},'
                f'"outcome":{e(outcome)},"reason":{"null" if reason is None else e(reason)},'
                f'"request_id":{"null" if request_id is None else e(request_id)},'
                f'"metadata":{"".join(_compact(m, 0))},'
                f'"hash":{e(hash_)},"prev_hash":{e(prev_hash)}}}\n'
            )
        except TypeError:  # not text where text belongs (a hand-edited row)
            event = _event((*row[:2], None, *row[3:13], m, *row[14:]))
            body = {**as_dict(event), "time": t}  # type: ignore[arg-type]
            lines.append(json.dumps(body, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


# CSV rows are written by hand when that is plainly what the csv module would write:
# cells joined by commas when none holds a comma, quote or line break and none starts
# with a formula character; the metadata cell (compact JSON: no line breaks) quoted
# with its quotes doubled when it holds a quote or comma. Any other row goes through
# `_csv_line`.
def _plain_cells(text: str, commas: int) -> str | None:
    """`text`, cells joined by commas, when they need no quotes or formula guard."""
    if (
        text.count(",") != commas
        or '"' in text
        or "\n" in text
        or "\r" in text
        or text.startswith(_FORMULA_START)
        or ",=" in text
        or ",+" in text
        or ",-" in text
        or ",@" in text
        or ",\t" in text
    ):
        return None
    return text


def _csv(rows: Sequence[Any]) -> bytes:
    """`_csv_line(_csv_row(event))` per row."""
    lines = []
    for row in rows:
        (id_, seq, time, type_, actor_type, actor_id, actor_ip, actor_user_agent,
         resource_type, resource_id, outcome, reason, request_id, metadata, hash_,
         prev_hash) = row  # fmt: skip
        t = _text(time)
        m = "".join(_compact_sorted(_loaded(metadata), 0))
        # Every column is text (NULL: an empty cell) but seq, an integer.
        head = (
            f"{id_},{seq},{t},{type_},{actor_type},{actor_id or ''},{actor_ip or ''},"
            f"{actor_user_agent or ''},{resource_type or ''},{resource_id or ''},{outcome},"
            f"{reason or ''},{request_id or ''}"
        )
        tail = f"{hash_},{prev_hash}"
        # Both parts checked at once: the cells of `head` and of `tail` joined by a comma
        # are plain exactly when each part's are.
        if (
            _plain_cells(f"{head},{tail}", 14) is None
            or None in (id_, t, type_, actor_type, outcome, hash_, prev_hash)
            or m.startswith(_FORMULA_START)
        ):
            lines.append(_csv_line([*row[:2], t, *row[3:13], m, *row[14:]]).decode())
            continue
        if '"' in m or "," in m:
            m = '"' + m.replace('"', '""') + '"'
        lines.append(f"{head},{m},{tail}\n")
    return "".join(lines).encode()


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
        yield _csv_line(COLUMNS)
    with sessions() as db:
        engine = db.get_bind().engine
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
    memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    start = low
    if workers > 1 and high - low + 1 >= PARALLEL_MIN and not memory:
        url = engine.url.render_as_string(hide_password=False)
        done = [low]
        try:
            yield from _parallel(url, org_id, filters, fmt, batch, low, high, workers, done)
            return
        except (_WorkerFailed, OSError):
            log.warning("audit export falls back to one process", exc_info=True)
            start = done[0]
    yield from _rendered(sessions, org_id, filters, fmt, batch, start, high)


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
    render = _csv if fmt is ExportFormat.CSV else _jsonl
    last = low - 1
    with sessions() as db:
        columns = _columns(db.get_bind().dialect.name)
        query = audit.bounded(db, org_id, filters).with_only_columns(*columns)
        if high is not None:
            query = query.where(AuditEvent.seq <= high)
        while True:
            stmt = query.where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
            rows = db.connection().execute(stmt).all()  # Core rows, no ORM loading
            db.rollback()  # end the read transaction between batches
            if not rows:
                return
            last = rows[-1][1]
            yield render(rows)


# --- worker processes ------------------------------------------------------------------

PARALLEL_MIN = 200_000  # seq numbers an export spans to be rendered by worker processes
CHUNK = 50_000  # seq numbers per worker task (about 25 MB of JSONL)
_PIECE = 1 << 20  # bytes sent on at a time


class _WorkerFailed(Exception):
    """An export worker process did not answer."""


def _parallel(
    url: str,
    org_id: str,
    filters: audit.EventFilter,
    fmt: ExportFormat,
    batch: int,
    low: int,
    high: int,
    workers: int,
    done: list[int],
) -> Iterator[bytes]:
    """Chunk k is rendered by worker k mod `workers` (`python -m bastion.audit.export`,
    which renders a whole chunk before sending it, so the others work meanwhile) and
    sent on in order; `done[0]` is the first seq not sent yet."""
    chunks = [(start, min(start + CHUNK - 1, high)) for start in range(low, high + 1, CHUNK)]
    wanted = {k: str(v) if isinstance(v, datetime) else v for k, v in vars(filters).items()}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for slot in range(min(workers, len(chunks))):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bastion.audit.export"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            order = [url, org_id, wanted, str(fmt), batch, chunks[slot::workers]]
            if proc.stdin is None:  # pragma: no cover
                raise _WorkerFailed("an export worker has no pipes")
            proc.stdin.write(json.dumps(order).encode() + b"\n")
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


def _serve() -> None:
    """An export worker: render the chunks named on stdin, each sent on stdout as an
    8-byte length and the bytes."""
    from bastion.core.db import make_engine, make_sessionmaker

    url, org_id, wanted, fmt, batch, chunks = json.loads(sys.stdin.buffer.readline())
    given: dict[str, Any] = {
        k: datetime.fromisoformat(v) if k in ("since", "until") and v else v
        for k, v in wanted.items()
    }
    filters = audit.EventFilter(**given)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    out = sys.stdout.buffer
    for low, high in chunks:
        data = b"".join(_rendered(sessions, org_id, filters, ExportFormat(fmt), batch, low, high))
        out.write(len(data).to_bytes(8, "big"))
        out.write(data)
        out.flush()


if __name__ == "__main__":
    _serve()
