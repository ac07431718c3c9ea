"""Event times never decrease along a chain, so a time range is searched as a seq
range; chains with older events out of order (recorded before revision 0014) are still
searched exactly. Checked against a plain filter over every event."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, select, text

from bastion.audit import checkpoints, retention
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent, AuditHead
from bastion.core.clock import clock
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.events import EventType
from bastion.migrations.runner import alembic_config
from tests.conftest import _admin_sql, _postgres_database
from tests.factories import Factory

ACTOR = Actor("system", "tests")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _append(app: Any, chain: str, n: int) -> None:  # type: ignore[no-untyped-def]
    with app.state.bastion.write_sessions() as db:
        begin_write(db)
        for _ in range(n):
            audit.record(db, type=EventType.TEAM_UPDATED, actor=ACTOR, org_id=chain)
        db.commit()


def test_an_event_is_never_stamped_before_the_one_before_it(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    _append(app, org.id, 1)
    clock.advance(-3600)  # this worker's clock is an hour behind the last one's
    _append(app, org.id, 2)
    clock.advance(7200)
    _append(app, org.id, 1)
    with app.state.bastion.sessions() as db:
        events = list(
            db.execute(
                select(AuditEvent).where(AuditEvent.chain == org.id).order_by(AuditEvent.seq)
            ).scalars()
        )
        head = db.get(AuditHead, org.id)
    times = [e.time for e in events]
    assert times == sorted(times)
    assert times[-3] == times[-2] == times[-4]  # held at the previous event's time
    assert times[-1] > times[-2]
    assert head is not None
    assert head.time == times[-1]
    with app.state.bastion.sessions() as db:
        assert audit.verify(db, org.id).valid


def _set_times(app: Any, chain: str, times: list[datetime]) -> None:  # type: ignore[no-untyped-def]
    """Give the chain's events these times (seq order) and re-hash it, as if recorded
    so; the head's order markers as revision 0014 computes them."""
    state = app.state.bastion
    with state.write_sessions() as db:
        begin_write(db)
        events = list(
            db.execute(
                select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            ).scalars()
        )
        assert len(events) == len(times)
        prev = audit.GENESIS
        for event, when in zip(events, times, strict=True):
            event.time, event.prev_hash = when, prev
            event.hash = prev = audit.compute_hash(event)
        inversions = [e.seq for a, e in pairwise(events) if e.time < a.time]
        unordered = max(inversions, default=0)
        head = db.get(AuditHead, chain)
        assert head is not None
        head.hash, head.time = prev, times[-1]
        head.unordered_seq = unordered
        head.unordered_time = max((e.time for e in events if e.seq <= unordered), default=None)
        db.commit()


def _search_all(app: Any, chain: str, f: audit.EventFilter, looked_up: bool) -> list[int]:  # type: ignore[no-untyped-def]
    """Every page of `search`'s query (the seq bounds looked up first, as search does,
    or as subqueries), newest first."""
    seqs: list[int] = []
    with app.state.bastion.sessions() as db:
        while True:
            stmt = audit.bounded(db, chain, f) if looked_up else audit.filtered(chain, f)
            if seqs:
                stmt = stmt.where(AuditEvent.seq < seqs[-1])
            page = list(db.execute(stmt.order_by(AuditEvent.seq.desc()).limit(4)).scalars())
            if not page:
                return seqs
            seqs += [e.seq for e in page]


def _naive(times: list[datetime], f: audit.EventFilter) -> list[int]:
    return [
        seq
        for seq, when in reversed(list(enumerate(times, start=1)))
        if (f.since is None or when >= f.since) and (f.until is None or when < f.until)
    ]


def _minutes(*values: int) -> list[datetime]:
    return [T0 + timedelta(minutes=v) for v in values]


ORDERED = _minutes(0, 1, 2, 2, 2, 3, 5, 5, 8, 9, 9, 9, 12, 13, 20)
# Out of order up to seq 9 (an older worker's clock), in order after it.
LEGACY = _minutes(0, 4, 2, 6, 3, 3, 9, 1, 7, 8, 8, 10, 12, 12, 15)


@pytest.mark.parametrize("times", [ORDERED, LEGACY], ids=["ordered", "legacy"])
def test_time_ranges_find_exactly_the_events_in_range(app, factory: Factory, times) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    with app.state.bastion.sessions() as db:
        have = db.execute(select(AuditHead.seq).where(AuditHead.chain == org.id)).scalar_one()
    _append(app, org.id, len(times) - have)
    _set_times(app, org.id, times)
    edges = sorted({*times, *(t + timedelta(seconds=30) for t in times)})
    edges = [T0 - timedelta(hours=1), *edges, T0 + timedelta(hours=1)]
    cases = [audit.EventFilter(since=s) for s in edges] + [
        audit.EventFilter(until=u) for u in edges
    ]
    cases += [audit.EventFilter(since=s, until=u) for i, s in enumerate(edges) for u in edges[i::3]]
    for f in cases:
        assert _search_all(app, org.id, f, looked_up=True) == _naive(times, f), f
        assert _search_all(app, org.id, f, looked_up=False) == _naive(times, f), f


def test_revision_0014_marks_what_is_out_of_order(tmp_path: Path) -> None:
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    url, name = _postgres_database(base) if base else (f"sqlite:///{tmp_path / 'm.db'}", None)
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        command.upgrade(config, "0013")
        rows = []
        for chain, times in [("org_a", LEGACY), ("org_b", ORDERED), ("org_c", [])]:
            for seq, when in enumerate(times, start=1):
                rows.append(
                    {
                        "id": f"evt_{chain}_{seq}",
                        "chain": chain,
                        "seq": seq,
                        "org_id": chain,
                        "time": when,
                        "type": "team.updated",
                        "actor_type": "system",
                        "outcome": "success",
                        "metadata": {},
                        "prev_hash": "0" * 64,
                        "hash": "0" * 64,
                    }
                )
        heads = [
            {"chain": "org_a", "seq": len(LEGACY), "hash": "0" * 64},
            {"chain": "org_b", "seq": len(ORDERED), "hash": "0" * 64},
            {"chain": "org_c", "seq": 0, "hash": "0" * 64},
        ]
        events, head_table = AuditEvent.__table__, AuditHead.__table__
        with engine.begin() as conn:
            conn.execute(insert(events), rows)
            conn.execute(
                text("INSERT INTO audit_heads (chain, seq, hash) VALUES (:chain, :seq, :hash)"),
                heads,
            )
        command.upgrade(config, "0014")
        with engine.connect() as conn:
            got = {
                r.chain: r
                for r in conn.execute(
                    select(
                        head_table.c.chain,
                        head_table.c.time,
                        head_table.c.unordered_seq,
                        head_table.c.unordered_time,
                    )
                )
            }
        assert got["org_a"].unordered_seq == 8  # 1 after 7 is the last step back
        assert got["org_a"].unordered_time == max(LEGACY[:8])
        assert got["org_a"].time == LEGACY[-1]
        assert got["org_b"].unordered_seq == 0
        assert got["org_b"].unordered_time is None
        assert got["org_b"].time == ORDERED[-1]
        assert got["org_c"].unordered_seq == 0
        assert got["org_c"].time is None
        command.downgrade(config, "0013")
    finally:
        engine.dispose()
        if name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{name}" WITH (FORCE)'
            )


def test_retention_past_the_last_step_back_leaves_the_chain_in_order(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    state = app.state.bastion
    with state.sessions() as db:
        have = db.execute(select(AuditHead.seq).where(AuditHead.chain == org.id)).scalar_one()
    _append(app, org.id, len(LEGACY) - have)
    _set_times(app, org.id, LEGACY)
    with state.write_sessions() as db:
        begin_write(db)
        assert checkpoints.create(db, org.id, state.audit_signer) is not None
        db.commit()
    clock.advance(400 * 86400)
    with state.write_sessions() as db:
        begin_write(db)
        assert retention.purge_chain(db, org.id, 365).purged == len(LEGACY)
        db.commit()
    with state.sessions() as db:
        head = db.get(AuditHead, org.id)
        assert head is not None
        assert (head.unordered_seq, head.unordered_time) == (0, None)
        assert audit.verify(db, org.id).valid
