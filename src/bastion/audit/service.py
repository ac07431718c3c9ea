"""The audit service: verify and checkpoint chains, and the one module other domains
import for the audit log.

Appending lives in `chain` and searching in `search`; both are re-exported here, so
callers keep writing `audit.record(...)` and `audit.search(...)` through
`from bastion.audit import service as audit`, and importing this module registers the
group-commit flush of staged events (`chain` does it on import). Verification stays in
this module rather than a sibling because `verify` looks up `worker_source` here, the
name tests replace to send the parallel walk where workers cannot read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.audit import chainwalk, checkpoints, pii, render
from bastion.audit.chain import (
    GENESIS,
    STAGED_EVENTS,
    EventFields,
    _lock_head,
    canonical,
    compute_hash,
    holds_head,
    insert_events,
    lock_chain,
    record,
    register_metadata_filter,
    start_chain,
)
from bastion.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from bastion.audit.search import (
    EventFilter,
    _seq_edges,
    bounded,
    filtered,
    get,
    search,
    seq_range,
)
from bastion.core.errors import NotFound
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

__all__ = [
    "GENESIS",
    "STAGED_EVENTS",
    "EventFields",
    "EventFilter",
    "Verification",
    "_lock_head",
    "_seq_edges",
    "bounded",
    "canonical",
    "checkpoint_org",
    "compute_hash",
    "events_naming",
    "filtered",
    "get",
    "insert_events",
    "iter_chain",
    "list_checkpoints",
    "lock_chain",
    "pseudonymise_subject",
    "record",
    "register_metadata_filter",
    "search",
    "seq_range",
    "start_chain",
    "verify",
    "verify_org",
    "worker_source",
]


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
    if holds_head(db, chain):
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


def events_naming(db: Session, org_id: str, subject_id: str, limit: int = 100_000) -> list[Any]:
    """The organisation's events whose actor or resource is `subject_id` (a subject
    access request's audit file), oldest first, as the export renders them."""
    stmt = (
        select(AuditEvent)
        .where(
            AuditEvent.chain == org_id,
            (AuditEvent.actor_id == subject_id) | (AuditEvent.resource_id == subject_id),
        )
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return [render.as_dict(e) for e in db.execute(stmt).scalars()]


def pseudonymise_subject(db: Session, org_id: str, user_id: str) -> int:
    """Erase the personal values the organisation's events about the user hold beside
    their hashes (`pii`): each becomes its pseudonym and its salt is deleted, so the
    chain still verifies and the value cannot be recovered. Returns the events changed.
    Events recorded before these values were kept apart (their email hashed as it is)
    stay as they are until audit retention removes them."""
    stmt = select(AuditEvent).where(
        AuditEvent.chain == org_id,
        AuditEvent.resource_type == "user",
        AuditEvent.resource_id == user_id,
    )
    changed = 0
    for event in db.execute(stmt).scalars():
        metadata = event.event_metadata
        after = pii.erased(metadata) if isinstance(metadata, dict) else None
        if after is not None:
            event.event_metadata = after
            changed += 1
    db.flush()
    return changed
