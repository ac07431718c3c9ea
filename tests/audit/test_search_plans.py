"""The plans behind search's first page: a time range walks the (chain, seq) index
between two probed bounds, a rare type the (chain, type, seq) index, and on PostgreSQL
a common word in a text search walks the newest events (the planner knows how common
the word is) instead of scanning the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.events import EventType
from tests.factories import Factory

EVENTS = 3000


def _plan(db: Session, stmt: Select[Any]) -> str:
    """The plan as text: SQLite's EXPLAIN QUERY PLAN details, PostgreSQL's JSON."""
    compiled = stmt.compile(db.get_bind(), compile_kwargs={"literal_binds": True})
    if db.get_bind().dialect.name == "sqlite":
        rows = db.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
        return "\n".join(str(r[-1]) for r in rows)
    return json.dumps(db.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one())


@pytest.fixture
def busy_org(app, factory: Factory) -> str:  # type: ignore[no-untyped-def]
    """An organisation with EVENTS events, every other one naming "november"."""
    org = factory.org()
    with app.state.bastion.write_sessions() as db:
        begin_write(db)
        for i in range(EVENTS):
            audit.record(
                db,
                type=EventType.TEAM_UPDATED,
                actor=Actor("system", "tests"),
                org_id=org.id,
                metadata={"name": "november" if i % 2 else f"team {i}"},
            )
        db.commit()
    with app.state.bastion.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE audit_events"))
            conn.commit()
    return org.id


def test_a_time_range_walks_the_seq_index_between_probed_bounds(app, busy_org: str) -> None:  # type: ignore[no-untyped-def]
    with app.state.bastion.sessions() as db:
        events = list(
            db.execute(
                select(AuditEvent.seq, AuditEvent.time)
                .where(AuditEvent.chain == busy_org)
                .order_by(AuditEvent.seq)
            )
        )
        since, until = events[EVENTS // 4].time, events[3 * EVENTS // 4].time
        f = audit.EventFilter(since=since, until=until)
        stmt = audit.bounded(db, busy_org, f).order_by(AuditEvent.seq.desc()).limit(51)
        plan = _plan(db, stmt)
        page = [e.seq for e in db.execute(stmt).scalars()]
    assert page == [seq for seq, when in reversed(events) if since <= when < until][:51]
    # The newest events of the range first, from the seq index: no table scan, no sort
    # of the range (the bounds are numbers, so the planner knows the range is wide).
    if app.state.bastion.engine.dialect.name == "sqlite":
        assert "sqlite_autoindex_audit_events_2 (chain=? AND seq>? AND seq<?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert '"Index Name": "uq_audit_events_chain_seq"' in plan, plan
        assert '"Scan Direction": "Backward"' in plan, plan
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan


def test_a_rare_type_is_found_from_the_type_index(app, busy_org: str) -> None:  # type: ignore[no-untyped-def]
    """The organisation's one `org.created` event is its first: found by walking
    (chain, type, seq), not the whole chain backwards."""
    with app.state.bastion.sessions() as db:
        f = audit.EventFilter(type=str(EventType.ORG_CREATED))
        stmt = audit.bounded(db, busy_org, f).order_by(AuditEvent.seq.desc()).limit(51)
        plan = _plan(db, stmt)
        page = [(e.seq, e.type) for e in db.execute(stmt).scalars()]
    assert page == [(1, "org.created")]
    if app.state.bastion.engine.dialect.name == "sqlite":
        assert "ix_audit_events_chain_type_seq (chain=? AND type=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert '"Index Name": "ix_audit_events_chain_type_seq"' in plan, plan
        assert "Seq Scan" not in plan, plan


def test_the_bounds_are_two_index_probes(app, busy_org: str) -> None:  # type: ignore[no-untyped-def]
    when = audit.EventFilter(since=datetime(2026, 1, 1, tzinfo=UTC), until=datetime.now(UTC))
    with app.state.bastion.sessions() as db:
        plan = _plan(db, select(*audit._seq_edges(busy_org, when.since, when.until)))
    if app.state.bastion.engine.dialect.name == "sqlite":
        assert "ix_audit_events_chain_time (chain=? AND time>?)" in plan, plan
        assert "ix_audit_events_chain_time (chain=? AND time<?)" in plan, plan
    else:
        assert plan.count('"Index Name": "ix_audit_events_chain_time"') == 2, plan
        assert "Seq Scan" not in plan, plan


def test_postgresql_knows_how_common_a_searched_word_is(app, busy_org: str) -> None:  # type: ignore[no-untyped-def]
    if app.state.bastion.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    with app.state.bastion.sessions() as db:
        stmt = audit.filtered(busy_org, audit.EventFilter(q="November"))
        plan = json.loads(_plan(db, stmt.order_by(AuditEvent.seq.desc()).limit(51)))
        estimate = json.loads(_plan(db, stmt))[0]["Plan"]["Plan Rows"]
    # Half the organisation's events match; without statistics on the searched text
    # the planner guesses a handful (0.2 per letter) and sorts a table scan.
    assert estimate > EVENTS // 10, estimate
    assert "Seq Scan" not in json.dumps(plan), plan
