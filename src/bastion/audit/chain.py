"""Append to the hash-chained audit log.

Every event is written by `record` inside the caller's transaction, so a change and its
event commit together or not at all. Each chain (one per organisation, plus `instance`)
is a sequence where `hash = SHA-256(prev_hash || canonical(event))`; the head row is
locked while appending so concurrent writers never fork a chain. The writing side is
kept apart from search and verification because it sits on every audited request's
path: it is the part group commit drives (`insert_events` is registered as the flush of
staged events here, on import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit import chainwalk, pii
from bastion.audit.models import INSTANCE_CHAIN, AuditEvent, AuditHead
from bastion.core import groupcommit
from bastion.core.clock import rfc3339, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.redact import redact

GENESIS = "0" * 64


def canonical(event: AuditEvent) -> bytes:
    """The bytes an event's hash covers: the JSON object of its fields (`actor`,
    `chain`, `id`, `metadata`, `org_id`, `outcome`, `prev_hash`, `reason`,
    `request_id`, `resource`, `seq`, `time`, `type`) with sorted keys, no spaces and
    UTF-8 text, as `json.dumps(body, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` writes it. Of `metadata` it covers what `pii.hashed` keeps:
    a personal value committed to under `_pii` is hashed as its commitment, so erasure
    can replace the value by a pseudonym without changing these bytes."""
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
        chainwalk.metadata_json(event.event_metadata),
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


def holds_head(db: Session, chain: str) -> bool:
    """Whether this session's current transaction has locked (and so may have appended
    to) the chain's head."""
    held: tuple[object, dict[str, AuditHead]] | None = db.info.get(_HEADS)
    return held is not None and held[0] is db.get_transaction() and chain in held[1]


def lock_chain(db: Session, org_id: str | None) -> None:
    """Lock the organisation's chain head now, for the rest of the transaction. A writer
    that takes other row locks before it appends takes this one first, so that two
    transactions never wait on each other's locks in opposite orders."""
    _lock_head(db, org_id or INSTANCE_CHAIN)


def start_chain(db: Session, org_id: str) -> None:
    """Create an organisation's chain head up front, so appends always lock a row."""
    db.add(AuditHead(chain=org_id, seq=0, hash=GENESIS))


class EventFields(TypedDict, total=False):
    """What an event is recorded with (the arguments of `record`)."""

    type: Required[EventType]
    actor: Required[Actor]
    org_id: Required[str | None]
    outcome: Outcome
    resource: tuple[str, str | None] | None
    reason: str | None
    metadata: Mapping[str, Any] | None


STAGED_EVENTS = "audit.events"

# What a domain above may do to an event's metadata before it is chained: (db, org_id,
# metadata) -> metadata. Privacy's data policies on audit metadata register one (its
# value replaced by `<TYPE>` before the hash covers it); with none registered, or none
# for the organisation, an event costs nothing more.
MetadataFilter = Callable[[Session, str | None, dict[str, Any]], dict[str, Any]]
_metadata_filters: list[MetadataFilter] = []


def register_metadata_filter(keep: MetadataFilter) -> None:
    """Called at import by the registering domain (idempotent)."""
    if keep not in _metadata_filters:
        _metadata_filters.append(keep)


def record(db: Session, **fields: Unpack[EventFields]) -> AuditEvent | None:
    """Append an event to its organisation's chain. In a group-commit unit (see
    `bastion.core.groupcommit`) it is staged (None is returned): its place in the chain
    is given when the batch's events are inserted together (`insert_events`), so a unit
    never touches a chain head and a unit that fails leaves no gap. Elsewhere it is an
    `AuditEvent` added to `db`. On a request's reader it waits for the request's unit."""
    if groupcommit.is_deferring(db):
        groupcommit.defer(db, lambda writer: record(writer, **fields))
        return None
    values = _event_fields(**fields)
    for keep in _metadata_filters:
        values["metadata"] = keep(db, values["org_id"], values["metadata"])
    if values["resource_type"] == "user" and values["org_id"] is not None:
        # A person's email: readable, but hashed as a commitment that erasure keeps.
        values["metadata"] = pii.protect(values["metadata"])
    if groupcommit.stage(db, STAGED_EVENTS, values):
        return None
    _chain(values, _head_state(db, values["chain"]))
    values["event_metadata"] = values.pop("metadata")
    event = AuditEvent(**values)
    db.add(event)  # flushed with the transaction's other writes (autoflush before reads)
    return event


def _event_fields(
    *,
    type: EventType,
    actor: Actor,
    org_id: str | None,
    outcome: Outcome = Outcome.SUCCESS,
    resource: tuple[str, str | None] | None = None,
    reason: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An event as a row of `audit_events` (column names), all but its place in the
    chain (`seq`, `prev_hash`, `hash`; `time` may still move forward: see `_chain`)."""
    resource_type, resource_id = resource if resource else (None, None)
    return {
        "id": new_id("evt"),
        "chain": org_id or INSTANCE_CHAIN,
        "org_id": org_id,
        "time": utcnow(),
        "type": str(type),
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_ip": actor.ip,
        "actor_user_agent": (actor.user_agent or None) and actor.user_agent[:512],
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": str(outcome),
        "reason": reason[:500] if reason else None,
        "request_id": actor.request_id,
        "metadata": redact(metadata or {}),
    }


def _head_state(db: Session, chain: str) -> AuditHead:
    """The chain's head, locked, with the time of its last event filled in for a head
    last moved before revision 0014."""
    head = _lock_head(db, chain)
    if head.time is None and head.seq > 0:
        head.time = db.execute(
            select(AuditEvent.time).where(AuditEvent.chain == chain, AuditEvent.seq == head.seq)
        ).scalar_one_or_none()
    return head


def _chain(values: dict[str, Any], head: AuditHead) -> None:
    """Give the event `values` its place after `head` (seq, prev_hash, hash), never
    earlier than the event before it (see AuditHead), and move the head past it."""
    now, before = values["time"], head.time
    if before is not None and now < before:
        values["time"] = now = before
    seq = head.seq + 1
    # The hash is computed from the values the event is built with (what `canonical`
    # would read back from it).
    hash_ = sha256_hex(
        chainwalk.canonical_bytes(
            values["id"], values["chain"], seq, values["org_id"], rfc3339(now), values["type"],
            values["actor_type"], values["actor_id"], values["actor_ip"],
            values["actor_user_agent"], values["resource_type"], values["resource_id"],
            values["outcome"], values["reason"], values["request_id"],
            chainwalk.metadata_json(values["metadata"]), head.hash,
        )
    )  # fmt: skip
    values["seq"], values["prev_hash"], values["hash"] = seq, head.hash, hash_
    head.seq, head.hash, head.time = seq, hash_, now


_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_INSERT_EVENTS = insert(_EVENTS)


def insert_events(db: Session, rows: list[dict[str, Any]]) -> None:
    """Insert staged events (from `_event_fields`), in one statement, after giving each
    its place in its chain in the order staged: each chain's head is locked here, once
    per transaction, in chain order (so batches of several chains never wait on each
    other in opposite orders), and moved once, past the last of them."""
    if not rows:
        return
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_chain.setdefault(row["chain"], []).append(row)
    for chain in sorted(by_chain):
        head = _head_state(db, chain)
        for row in by_chain[chain]:
            _chain(row, head)
    db.connection().execute(_INSERT_EVENTS, rows)


def _lock_batch_heads(db: Session, orders: list[str]) -> None:
    """A group-commit batch's first statements: the heads of the organisations its units
    are for (their `order` keys begin with the organisation's id), in chain order.
    Every writer takes a head before the rows it changes (see `_lock_head`); a batch's
    units change rows before their events are placed at the batch's end, so the heads
    are taken here, before the units run."""
    for chain in sorted({order.partition(":")[0] for order in orders}):
        if has_prefix(chain, "org"):
            _lock_head(db, chain)


groupcommit.on_flush(STAGED_EVENTS, insert_events)
groupcommit.on_begin(_lock_batch_heads)
