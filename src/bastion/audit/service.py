"""Append to and read the hash-chained audit log.

Every event is written by `record` inside the caller's transaction, so a change and its
event commit together or not at all. Each chain (one per organisation, plus `instance`)
is a sequence where `hash = SHA-256(prev_hash || canonical(event))`; the head row is
locked while appending so concurrent writers never fork a chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from bastion.audit import chainwalk, checkpoints
from bastion.audit.models import INSTANCE_CHAIN, AuditCheckpoint, AuditEvent, AuditHead
from bastion.core import groupcommit
from bastion.core.clock import rfc3339, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, decode_cursor, page_of
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.core.redact import redact

GENESIS = "0" * 64


def canonical(event: AuditEvent) -> bytes:
    """The bytes an event's hash covers: the JSON object of its fields (`actor`,
    `chain`, `id`, `metadata`, `org_id`, `outcome`, `prev_hash`, `reason`,
    `request_id`, `resource`, `seq`, `time`, `type`) with sorted keys, no spaces and
    UTF-8 text, as `json.dumps(body, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` writes it."""
    return chainwalk.canonical_bytes(
        event.id,
        event.chain,
        event.seq,
        event.org_id,
        rfc3339(event.time),
        event.type,
        event.actor_type,
        event.actor_id,
        event.actor_ip,
        event.actor_user_agent,
        event.resource_type,
        event.resource_id,
        event.outcome,
        event.reason,
        event.request_id,
        chainwalk.encode_json(event.event_metadata),
        event.prev_hash,
    )


def compute_hash(event: AuditEvent) -> str:
    return sha256_hex(canonical(event))


_HEADS = "bastion.audit.locked_heads"


def _lock_head(db: Session, chain: str) -> AuditHead:
    """The chain's head row, locked for the rest of the transaction. Locked once per
    transaction: later appends in it reuse the row (a rolled-back savepoint expires it,
    so it reloads)."""
    transaction = db.get_transaction()
    held: tuple[object, dict[str, AuditHead]] | None = db.info.get(_HEADS)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        db.info[_HEADS] = held
    head = held[1].get(chain)
    if head is not None:
        return head
    # populate_existing: the session may hold the head from an earlier, unlocked read
    # (a checkpoint); the values must be the ones read under the lock, or two writers
    # would both append after the same event.
    stmt = (
        select(AuditHead)
        .where(AuditHead.chain == chain)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # The transaction's pending changes (a run revoked, an agent deleted) are written
    # just after the head is locked, not before (autoflush would): so a writer that
    # records after changing rows through the session locks the head first and those rows
    # after it, as the gate does, and two writers do not wait on each other's locks in
    # opposite orders (PostgreSQL would abort one). Writers that flush or run UPDATEs
    # themselves before recording call `lock_chain` first.
    if any(isinstance(held_row, AuditHead) for held_row in db.dirty):
        db.flush()  # a change to a head itself is written first: the read must not undo it
    with db.no_autoflush:
        head = db.execute(stmt).scalar_one_or_none()
        if head is None:
            try:
                with db.begin_nested():
                    db.add(AuditHead(chain=chain, seq=0, hash=GENESIS))
            except IntegrityError:
                pass  # another writer created it first; lock theirs
            head = db.execute(stmt).scalar_one()
    db.flush()
    held[1][chain] = head
    return head


def lock_chain(db: Session, org_id: str | None) -> None:
    """Lock the organisation's chain head now, for the rest of the transaction. A writer
    that takes other row locks before it appends takes this one first, so that two
    transactions never wait on each other's locks in opposite orders."""
    _lock_head(db, org_id or INSTANCE_CHAIN)


def start_chain(db: Session, org_id: str) -> None:
    """Create an organisation's chain head up front, so appends always lock a row."""
    db.add(AuditHead(chain=org_id, seq=0, hash=GENESIS))


class EventFields(TypedDict, total=False):
    """What an event is recorded with (the arguments of `record` and `event_row`)."""

    type: Required[EventType]
    actor: Required[Actor]
    org_id: Required[str | None]
    outcome: Outcome
    resource: tuple[str, str | None] | None
    reason: str | None
    metadata: Mapping[str, Any] | None


STAGED_EVENTS = "audit.events"


def record(db: Session, **fields: Unpack[EventFields]) -> AuditEvent | None:
    """Append an event to its organisation's chain. In a group-commit unit (see
    `bastion.core.groupcommit`) its row is staged for the batch's one insert of events
    (None is returned); elsewhere it is an `AuditEvent` added to `db`. On a request's
    reader it waits for the request's unit."""
    if groupcommit.is_deferring(db):
        groupcommit.defer(db, lambda writer: record(writer, **fields))
        return None
    values = event_row(db, **fields)
    if groupcommit.stage(db, STAGED_EVENTS, values):
        return None
    values["event_metadata"] = values.pop("metadata")
    event = AuditEvent(**values)
    db.add(event)  # flushed with the transaction's other writes (autoflush before reads)
    return event


def event_row(
    db: Session,
    *,
    type: EventType,
    actor: Actor,
    org_id: str | None,
    outcome: Outcome = Outcome.SUCCESS,
    resource: tuple[str, str | None] | None = None,
    reason: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The next event of the chain as a row of `audit_events` (column names), with the
    chain's head moved past it: `record` adds it to the session; a hot path that writes
    many events per transaction inserts the rows together (`insert_events`), before the
    transaction commits and before anything in it reads the audit log."""
    chain = org_id or INSTANCE_CHAIN
    head = _lock_head(db, chain)
    now, before = utcnow(), head.time
    if before is None and head.seq > 0:  # a head last moved before revision 0014
        before = db.execute(
            select(AuditEvent.time).where(AuditEvent.chain == chain, AuditEvent.seq == head.seq)
        ).scalar_one_or_none()
    if before is not None and now < before:
        now = before  # never earlier than the event before it (see AuditHead)
    # The hash is computed from the values the event is built with (what `canonical`
    # would read back from it).
    id_, seq, type_, outcome_ = new_id("evt"), head.seq + 1, str(type), str(outcome)
    user_agent = (actor.user_agent or None) and actor.user_agent[:512]
    resource_type, resource_id = resource if resource else (None, None)
    reason = reason[:500] if reason else None
    event_metadata = redact(metadata or {})
    hash_ = sha256_hex(
        chainwalk.canonical_bytes(
            id_, chain, seq, org_id, rfc3339(now), type_, actor.type, actor.id, actor.ip,
            user_agent, resource_type, resource_id, outcome_, reason, actor.request_id,
            chainwalk.encode_json(event_metadata), head.hash,
        )
    )  # fmt: skip
    values = {
        "id": id_,
        "chain": chain,
        "seq": seq,
        "org_id": org_id,
        "time": now,
        "type": type_,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_ip": actor.ip,
        "actor_user_agent": user_agent,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": outcome_,
        "reason": reason,
        "request_id": actor.request_id,
        "metadata": event_metadata,
        "prev_hash": head.hash,
        "hash": hash_,
    }
    head.seq = seq
    head.hash = hash_
    head.time = now
    return values


_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_INSERT_EVENTS = insert(_EVENTS)


def insert_events(db: Session, rows: list[dict[str, Any]]) -> None:
    """Insert rows made by `event_row`, in one statement."""
    if rows:
        db.connection().execute(_INSERT_EVENTS, rows)


groupcommit.on_flush(STAGED_EVENTS, insert_events)


@dataclass(frozen=True)
class EventFilter:
    type: str | None = None
    actor: str | None = None
    resource: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None  # text searched in metadata and reason, case-insensitively


_NO_SEQ = 2**62  # past any seq: a bound that matches nothing


def _seq_edges(
    chain: str, since: datetime | None, until: datetime | None
) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """SQL for the lowest and highest seq of the events with `since <= time < until`
    (or bounds that exclude nothing): times never decrease along a chain (see
    `AuditHead`), so the range runs from the first event at or after `since` to the
    last event before `until`, each found by one probe of the (chain, time) index. When
    the chain has older events out of order that the range could include (it starts no
    later than the latest of them), the bounds are open and the time conditions alone
    decide."""
    probe = aliased(AuditEvent)
    heads = aliased(AuditHead)
    in_order = heads.unordered_seq == 0
    if since is not None:
        in_order = in_order | (heads.unordered_time < since)

    def edge(time: ColumnElement[bool], descending: bool) -> ScalarSelect[Any]:
        """The seq of the first event (or last, `descending`) that meets `time`."""
        order = (probe.time.desc(), probe.seq.desc()) if descending else (probe.time, probe.seq)
        return (
            select(probe.seq)
            .where(probe.chain == chain, time)
            .order_by(*order)
            .limit(1)
            .scalar_subquery()
        )

    def bound(found: ScalarSelect[Any], missing: int, unbounded: int) -> ColumnElement[int]:
        ordered = case((in_order, func.coalesce(found, missing)), else_=unbounded)
        head = select(ordered).where(heads.chain == chain).scalar_subquery()
        return func.coalesce(head, unbounded)

    low: ColumnElement[int] = literal(0)
    high: ColumnElement[int] = literal(_NO_SEQ)
    if since is not None:
        low = bound(edge(probe.time >= since, descending=False), _NO_SEQ, 0)
    if until is not None:
        high = bound(edge(probe.time < until, descending=True), -1, _NO_SEQ)
    return low, high


def filtered(
    org_id: str, filters: EventFilter, seq_range: tuple[int, int] | None = None
) -> Select[AuditEvent]:
    """The organisation's events matching `filters` (every filter uses an index except
    the text search, which scans within the other filters' range). A time range also
    bounds seq: by `seq_range` as `bounded` looks it up, written into the statement as
    numbers (the planner then knows how wide the range is), or else by subqueries."""
    stmt = select(AuditEvent).where(AuditEvent.chain == org_id)
    if filters.type:
        stmt = stmt.where(AuditEvent.type == filters.type)
    if filters.actor:
        stmt = stmt.where(AuditEvent.actor_id == filters.actor)
    if filters.resource:
        stmt = stmt.where(AuditEvent.resource_id == filters.resource)
    if filters.outcome:
        stmt = stmt.where(AuditEvent.outcome == filters.outcome)
    if filters.since:
        stmt = stmt.where(AuditEvent.time >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEvent.time < filters.until)
    if seq_range is not None:
        low, high = seq_range
        if low > 0:
            stmt = stmt.where(AuditEvent.seq >= bindparam("seq_low", low, literal_execute=True))
        if high < _NO_SEQ:
            stmt = stmt.where(AuditEvent.seq <= bindparam("seq_high", high, literal_execute=True))
    elif filters.since or filters.until:
        low_sql, high_sql = _seq_edges(org_id, filters.since, filters.until)
        stmt = stmt.where(AuditEvent.seq >= low_sql, AuditEvent.seq <= high_sql)
    if filters.q:
        needle = (
            "%"
            + filters.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        # On PostgreSQL, revision 0014 keeps statistics on exactly this expression (how
        # common a word is decides the plan): change both together.
        text_of = (
            func.lower(cast(AuditEvent.event_metadata, String))
            + " "
            + func.lower(func.coalesce(AuditEvent.reason, ""))
        )
        stmt = stmt.where(text_of.like(needle, escape="\\"))
    return stmt


def seq_range(db: Session, org_id: str, filters: EventFilter) -> tuple[int, int] | None:
    """The seq bounds of `filters`' time range (one query of two index probes), or None
    without a time range."""
    if not (filters.since or filters.until):
        return None
    low, high = db.execute(select(*_seq_edges(org_id, filters.since, filters.until))).one()
    return int(low), int(high)


def bounded(db: Session, org_id: str, filters: EventFilter) -> Select[AuditEvent]:
    """`filtered`, with a time range's seq bounds looked up first: what search and
    export run."""
    return filtered(org_id, filters, seq_range(db, org_id, filters))


def search(
    db: Session,
    principal: Principal,
    org_id: str,
    filters: EventFilter,
    *,
    limit: int,
    cursor: str | None,
) -> Page[AuditEvent]:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    stmt = bounded(db, org_id, filters)
    after = decode_cursor(cursor)
    if after is not None:
        if not isinstance(after, int):
            raise InvalidInput.field("cursor", "is not a cursor this API issued")
        stmt = stmt.where(AuditEvent.seq < after)
    rows = list(db.execute(stmt.order_by(AuditEvent.seq.desc()).limit(limit + 1)).scalars())
    return page_of(rows, limit, key=lambda e: e.seq)


def get(db: Session, principal: Principal, org_id: str, event_id: str) -> AuditEvent:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    if not has_prefix(event_id, "evt"):
        raise NotFound("audit event not found")
    event = db.execute(
        select(AuditEvent).where(AuditEvent.chain == org_id, AuditEvent.id == event_id)
    ).scalar_one_or_none()
    if event is None:
        raise NotFound("audit event not found")
    return event


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    head_hash: str
    first_invalid: str | None
    problem: str | None
    checkpoints: int = 0


def iter_chain(db: Session, chain: str, after: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
    last = after
    while True:
        rows = list(
            db.execute(
                select(AuditEvent)
                .where(AuditEvent.chain == chain, AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            ).scalars()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        for row in rows:
            db.expunge(row)


def verify_org(
    db: Session, principal: Principal, org_id: str, public_keys: Mapping[int, bytes] | None
) -> Verification:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    return verify(db, org_id, public_keys, workers=chainwalk.default_workers())


def _starting_point(
    cps: list[AuditCheckpoint], public_keys: Mapping[int, bytes] | None, first: int | None
) -> tuple[str, int] | Verification:
    """(previous hash, first expected seq): genesis, or the checkpoint that anchors a
    chain whose older events were purged by retention. A failed Verification when a
    signature is bad or nothing anchors the first remaining event (`first`)."""
    if public_keys is not None:
        for cp in cps:
            if not checkpoints.checkpoint_valid(cp, public_keys):
                return Verification(
                    False, 0, GENESIS, None, f"checkpoint {cp.id} has a bad signature"
                )
    if first is None or first == 1:
        return GENESIS, 1
    anchor = next((cp for cp in cps if cp.seq == first - 1), None)
    if anchor is None:
        return Verification(False, 0, GENESIS, None, f"events before {first} are missing")
    return anchor.hash, first


def worker_source(db: Session, chain: str) -> chainwalk.Source | None:
    """Where worker processes can read the chain, or None when they cannot see what
    this session sees: an in-memory database, or a transaction that appended to the
    chain (its events are not committed yet)."""
    held: tuple[object, dict[str, AuditHead]] | None = db.info.get(_HEADS)
    if held is not None and held[0] is db.get_transaction() and chain in held[1]:
        return None
    engine = db.get_bind().engine
    url = engine.url
    if engine.dialect.name == "postgresql":
        target = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return chainwalk.Source("postgresql", target)
    if engine.dialect.name != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    uri = url.query.get("uri") == "true"
    if uri and "mode=memory" in str(url.database):
        return None
    return chainwalk.Source("sqlite", str(url.database), uri)


def verify(
    db: Session,
    chain: str,
    public_keys: Mapping[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    workers: int = 1,
) -> Verification:
    """Walk a chain: every link, sequence number and hash must hold; every checkpoint
    must carry a valid signature (when keys are given) and still match its event; the
    head row and the newest checkpoint must not point past the last event.

    The walk covers the events up to the newest one when it starts (read in the same
    statement as the head row). With `workers` > 1 a long chain is checked in that many
    processes at once (see `chainwalk`); the verdict is the same."""
    cps = checkpoints.for_chain(db, chain)
    head = select(AuditHead.seq, AuditHead.hash).where(AuditHead.chain == chain)
    first, last, head_seq, head_hash = db.execute(
        select(
            func.min(AuditEvent.seq),
            func.max(AuditEvent.seq),
            head.with_only_columns(AuditHead.seq).scalar_subquery(),
            head.with_only_columns(AuditHead.hash).scalar_subquery(),
        ).where(AuditEvent.chain == chain)
    ).one()
    start = _starting_point(cps, public_keys, first)
    if isinstance(start, Verification):
        return start
    prev, expected = start
    checked = 0
    if last is not None and last >= expected:
        source = worker_source(db, chain) if workers > 1 else None
        walked = chainwalk.walk(
            db.connection().connection.dbapi_connection,
            db.get_bind().dialect.name,
            source,
            chain,
            expected,
            last,
            prev,
            {cp.seq: (cp.id, cp.hash) for cp in cps},
            workers=workers,
            progress=progress,
        )
        if walked.problem is not None:
            bad_id, problem = walked.problem
            return Verification(False, walked.checked, walked.prev, bad_id, problem)
        prev, expected, checked = walked.prev, walked.last_seq + 1, walked.checked
    last_seq = expected - 1
    if cps and cps[-1].seq > last_seq:
        return Verification(False, checked, prev, None, f"events after {last_seq} are missing")
    if head_seq is not None and (head_seq != last_seq or head_hash != prev):
        return Verification(False, checked, prev, None, f"events after {last_seq} are missing")
    return Verification(True, checked, prev, None, None, len(cps))


def checkpoint_org(
    db: Session, principal: Principal, org_id: str, signer: checkpoints.Signer
) -> AuditCheckpoint:
    """Sign the organisation's chain now (or return the checkpoint that already covers it)."""
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    made = checkpoints.create(db, org_id, signer)
    newest = made or checkpoints.latest(db, org_id)
    if newest is None:
        raise NotFound("the audit chain has no events to checkpoint")
    return newest


def list_checkpoints(db: Session, principal: Principal, org_id: str) -> list[AuditCheckpoint]:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    return list(reversed(checkpoints.for_chain(db, org_id)))
