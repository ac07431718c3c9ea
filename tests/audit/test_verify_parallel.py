"""Verification in worker processes gives the verdict of one walk from the start: the
same first bad event, problem, count and last good hash, whichever range it falls in
(first row of a range, last row, middle), and falls back to one process when workers
cannot run. The canonical encoding is byte for byte the documented JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from bastion.audit import chainwalk, checkpoints
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.clock import rfc3339
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.events import EventType, Outcome
from tests.factories import Factory

EVENTS = 130  # seq 1 is org.created; the rest are recorded below
CHUNK = 20  # seq numbers per worker task here, so the chain spans 7 ranges


class _NoFallback:
    def warning(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the workers did not run")


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of CHUNK seq numbers from the first event on, checked by workers (a
    fallback to one process fails the test)."""
    monkeypatch.setattr(chainwalk, "CHUNK", CHUNK)
    monkeypatch.setattr(chainwalk, "PARALLEL_MIN", 1)
    monkeypatch.setattr(chainwalk, "log", _NoFallback())


def _chain(app: Any, factory: Factory) -> str:  # type: ignore[no-untyped-def]
    org = factory.org()
    state = app.state.bastion
    with state.write_sessions() as db:
        begin_write(db)
        head = audit._lock_head(db, org.id)
        for i in range(EVENTS - head.seq):
            audit.record(
                db,
                type=EventType.TEAM_UPDATED,
                actor=Actor("user", f"usr_{i % 7}", ip="10.0.0.1"),
                org_id=org.id,
                outcome=Outcome.FAILURE if i % 5 == 0 else Outcome.SUCCESS,
                resource=("team", f"team_{i}"),
                reason='quote " backslash \\ newline \n é ☃' if i % 11 == 0 else None,
                metadata={"i": i, "nested": {"b": [1, 2.5, None, True], "a": "ü"}},
            )
        db.commit()
    return org.id


def _both(app: Any, chain: str) -> tuple[audit.Verification, audit.Verification]:  # type: ignore[no-untyped-def]
    state = app.state.bastion
    keys = state.audit_signer.public_keys
    with state.sessions() as db:
        serial = audit.verify(db, chain, keys, workers=1)
    with state.sessions() as db:
        parallel = audit.verify(db, chain, keys, workers=2)
    return serial, parallel


def _sql(app: Any, sql: str, **params: object) -> None:  # type: ignore[no-untyped-def]
    with app.state.bastion.engine.begin() as conn:
        conn.execute(text(sql), params)


def _id(app: Any, chain: str, seq: int) -> str:  # type: ignore[no-untyped-def]
    with app.state.bastion.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT id FROM audit_events WHERE chain = :c AND seq = :s"),
                {"c": chain, "s": seq},
            ).scalar_one()
        )


def test_a_clean_chain_verifies_in_ranges(app, factory: Factory, small_ranges: None) -> None:  # type: ignore[no-untyped-def]
    chain = _chain(app, factory)
    seen: list[int] = []
    with app.state.bastion.sessions() as db:
        result = audit.verify(db, chain, workers=2, progress=seen.append)
    assert result.valid, result.problem
    assert result.checked == EVENTS
    assert sum(seen) == EVENTS
    assert len(seen) == -(-EVENTS // CHUNK)  # one report per range
    assert _both(app, chain)[0] == result


Tamper = Callable[[Any, str], "str | None"]


def _edit(seq: int) -> Tamper:
    def run(app: Any, chain: str) -> str | None:
        target = _id(app, chain, seq)
        _sql(app, "UPDATE audit_events SET reason = 'nothing' WHERE id = :id", id=target)
        return target

    return run


def _delete(seq: int) -> Tamper:
    def run(app: Any, chain: str) -> str | None:
        after = _id(app, chain, seq + 1)
        _sql(app, "DELETE FROM audit_events WHERE chain = :c AND seq = :s", c=chain, s=seq)
        return after

    return run


def _swap(seq: int) -> Tamper:
    def run(app: Any, chain: str) -> str | None:
        a, b = _id(app, chain, seq), _id(app, chain, seq + 1)
        _sql(app, "UPDATE audit_events SET seq = -1 WHERE id = :id", id=a)
        _sql(app, "UPDATE audit_events SET seq = :s WHERE id = :id", s=seq, id=b)
        _sql(app, "UPDATE audit_events SET seq = :s WHERE id = :id", s=seq + 1, id=a)
        return b

    return run


def _cut(keep: int) -> Tamper:
    def run(app: Any, chain: str) -> str | None:
        _sql(app, "DELETE FROM audit_events WHERE chain = :c AND seq > :s", c=chain, s=keep)
        return None

    return run


def _gap(low: int, high: int) -> Tamper:
    """A whole range (or more) gone: the next row found reports the gap."""

    def run(app: Any, chain: str) -> str | None:
        after = _id(app, chain, high + 1)
        _sql(
            app,
            "DELETE FROM audit_events WHERE chain = :c AND seq >= :a AND seq <= :b",
            c=chain,
            a=low,
            b=high,
        )
        return after

    return run


def _relink(seq: int) -> Tamper:
    """An event's content and hash rewritten consistently: the next link breaks."""

    def run(app: Any, chain: str) -> str | None:
        nxt = _id(app, chain, seq + 1)
        with app.state.bastion.sessions() as db:
            event = db.execute(
                select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq == seq)
            ).scalar_one()
            event.reason = "rewritten"
            event.hash = audit.compute_hash(event)
            db.commit()
        return nxt

    return run


@pytest.mark.parametrize(
    "tamper",
    [
        _edit(2),  # first range, second row
        _edit(21),  # first row of a range: its own content, link checked by the join
        _edit(40),  # last row of a range
        _edit(EVENTS),  # the head event
        _delete(21),  # a range that starts late
        _delete(40),  # a range that ends early
        _swap(40),  # across a range boundary
        _swap(55),  # inside a range
        _gap(41, 80),  # two whole ranges gone
        _cut(97),  # a cut tail (the head row still points at the end)
        _relink(40),  # a rewritten event whose successor starts the next range
        _relink(50),
    ],
    ids=[
        "edit-2",
        "edit-first-of-range",
        "edit-last-of-range",
        "edit-head",
        "delete-first-of-range",
        "delete-last-of-range",
        "swap-across-ranges",
        "swap-inside-range",
        "gap-of-ranges",
        "cut-tail",
        "relink-at-boundary",
        "relink-inside",
    ],
)
def test_tampering_gives_the_same_verdict_in_ranges(
    app, factory: Factory, small_ranges: None, tamper: Tamper
) -> None:  # type: ignore[no-untyped-def]
    chain = _chain(app, factory)
    expected = tamper(app, chain)
    serial, parallel = _both(app, chain)
    assert not serial.valid
    assert serial.first_invalid == expected
    assert parallel == serial


def test_a_checkpoint_mismatch_is_found_in_its_range(
    app, factory: Factory, small_ranges: None
) -> None:  # type: ignore[no-untyped-def]
    chain = _chain(app, factory)
    state = app.state.bastion
    with state.write_sessions() as db:
        begin_write(db)
        checkpoints.create(db, chain, state.audit_signer)
        db.commit()
    # Rewrite the last event consistently (hash recomputed, head moved): only the
    # signed checkpoint still knows the old hash.
    target = _id(app, chain, EVENTS)
    with state.sessions() as db:
        event = db.get(AuditEvent, target)
        assert event is not None
        event.reason = "rewritten"
        event.hash = audit.compute_hash(event)
        db.execute(
            text("UPDATE audit_heads SET hash = :h WHERE chain = :c"), {"h": event.hash, "c": chain}
        )
        db.commit()
    serial, parallel = _both(app, chain)
    assert serial.first_invalid == target
    assert "checkpoint" in str(serial.problem)
    assert parallel == serial


def test_workers_that_cannot_run_fall_back_to_one_process(
    app, factory: Factory, small_ranges: None, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    chain = _chain(app, factory)
    monkeypatch.setattr(chainwalk, "log", chainwalk._Log())  # small_ranges forbade it
    nowhere = chainwalk.Source("sqlite", "/nonexistent/bastion.db")
    monkeypatch.setattr(audit, "worker_source", lambda db, chain: nowhere)
    with app.state.bastion.sessions() as db:
        result = audit.verify(db, chain, workers=2)
    assert result.valid, result.problem
    assert result.checked == EVENTS


def test_a_transaction_that_appended_verifies_in_process(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    """Workers cannot see uncommitted events, so a session that appended to the chain
    never hands it to them."""
    chain = _chain(app, factory)
    with app.state.bastion.write_sessions() as db:
        begin_write(db)
        assert audit.worker_source(db, chain) is not None
        audit.record(db, type=EventType.TEAM_UPDATED, actor=Actor("system", "t"), org_id=chain)
        assert audit.worker_source(db, chain) is None
        db.rollback()


# --- the canonical encoding -----------------------------------------------------------


def _reference(event: Any) -> bytes:
    """The encoding as documented: json.dumps of the event's fields."""
    body = {
        "id": event.id,
        "chain": event.chain,
        "seq": event.seq,
        "org_id": event.org_id,
        "time": rfc3339(event.time),
        "type": event.type,
        "actor": [event.actor_type, event.actor_id, event.actor_ip, event.actor_user_agent],
        "resource": [event.resource_type, event.resource_id],
        "outcome": event.outcome,
        "reason": event.reason,
        "request_id": event.request_id,
        "metadata": event.event_metadata,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_text = st.text()
_maybe = st.none() | st.text()
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {
            "id": _text,
            "chain": _text,
            "seq": st.integers(),
            "org_id": _maybe,
            "time": st.none() | st.datetimes(timezones=st.just(UTC)),
            "type": _text,
            "actor_type": _maybe,  # None only in a hand-edited row: the general path
            "actor_id": _maybe,
            "actor_ip": _maybe,
            "actor_user_agent": _maybe,
            "resource_type": _maybe,
            "resource_id": _maybe,
            "outcome": _text,
            "reason": _maybe,
            "request_id": _maybe,
            "event_metadata": _json,
            "prev_hash": _maybe,
        }
    )
)
def test_canonical_is_the_documented_json(fields: dict[str, Any]) -> None:
    event = cast(AuditEvent, SimpleNamespace(**fields))
    assert audit.canonical(event) == _reference(event)


@settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    metadata=_json,
)
def test_rows_as_stored_in_sqlite_encode_as_the_orm_reads_them(
    when: datetime, metadata: Any
) -> None:
    """What check_range derives from SQLite's stored text (no datetime, no ORM) is
    what the ORM would read back."""
    stored = (  # SQLAlchemy's SQLite storage format
        f"{when.year:04d}-{when.month:02d}-{when.day:02d} {when.hour:02d}:{when.minute:02d}:"
        f"{when.second:02d}.{when.microsecond:06d}"
    )
    assert chainwalk.sqlite_time(stored) == rfc3339(when)
    assert chainwalk._metadata_json(json.dumps(metadata)) == chainwalk.encode_json(
        json.loads(json.dumps(metadata))
    )
