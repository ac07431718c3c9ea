"""Search the audit log: filters, the seq range a time range covers, one event by id.

Reading is apart from appending (`chain`) and verifying: it is what the API's search and
the exporter run, with queries shaped by the indexes of `audit_events` (see `filtered`
and `_seq_edges`), and nothing here locks or writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session, aliased

from bastion.audit.models import AuditEvent, AuditHead
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.ids import has_prefix
from bastion.core.pagination import Page, decode_cursor, page_of
from bastion.core.permissions import Permission
from bastion.core.principal import Principal


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
    numbers (the planner then knows how wide the range is) in place of the time
    conditions they stand for, or else by subqueries."""
    stmt = select(AuditEvent).where(AuditEvent.chain == org_id)
    if filters.type:
        stmt = stmt.where(AuditEvent.type == filters.type)
    if filters.actor:
        stmt = stmt.where(AuditEvent.actor_id == filters.actor)
    if filters.resource:
        stmt = stmt.where(AuditEvent.resource_id == filters.resource)
    if filters.outcome:
        stmt = stmt.where(AuditEvent.outcome == filters.outcome)
    low, high = seq_range if seq_range is not None else (0, _NO_SEQ)
    # A bound `seq_range` found is exact (see `_seq_edges`), so the time condition it
    # stands for is left out: kept, it would only make the planner guess how many of
    # the range's rows match and, guessing few, sort the whole range for one page.
    if filters.since and low <= 0:
        stmt = stmt.where(AuditEvent.time >= filters.since)
    if filters.until and high >= _NO_SEQ:
        stmt = stmt.where(AuditEvent.time < filters.until)
    if seq_range is not None:
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
