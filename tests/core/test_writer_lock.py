"""SQLite's writer slot (issue 12): a writer waits a bounded time and is refused with a
retryable error, a failed BEGIN leaves nothing held, and a writer held past the hold
limit is broken by the watchdog (logged, counted, rolled back, its commit refused)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from bastion.api.app import create_app
from bastion.audit import service as audit
from bastion.core.db import (
    SQLITE_WAITING,
    WriterBusy,
    client_gone,
    database_busy,
    make_engine,
    make_sessionmaker,
    writer_stats,
)
from tests.conftest import make_settings
from tests.factories import Factory

metadata = MetaData()
rows = Table("rows", metadata, Column("id", Integer, primary_key=True))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "w.db"


def _engine(path: Path, wait: float, hold_limit: float) -> Engine:
    engine = make_engine(f"sqlite:///{path}", write_wait=wait, write_hold_limit=hold_limit)
    metadata.create_all(engine)
    return engine


@pytest.fixture
def engine(path: Path) -> Iterator[Engine]:
    engine = _engine(path, wait=0.3, hold_limit=1.0)
    yield engine
    engine.dispose()


def _stored(engine: Engine) -> list[int]:
    with make_sessionmaker(engine)() as db:
        return sorted(db.execute(select(rows.c.id)).scalars())


def test_a_waiting_writer_is_refused_after_the_bounded_wait(engine: Engine) -> None:
    writers = make_sessionmaker(engine, write=True)
    with writers() as first:
        first.execute(rows.insert().values(id=1))
        started = time.monotonic()
        with writers() as second, pytest.raises(WriterBusy) as refused:
            second.execute(rows.insert().values(id=2))
        assert time.monotonic() - started < 2.0
        assert database_busy(refused.value)
        first.commit()
    with writers() as third:  # the slot is free again: nothing was left behind
        third.execute(rows.insert().values(id=3))
        third.commit()
    assert _stored(engine) == [1, 3]
    stats = writer_stats(engine)
    assert stats is not None
    assert stats.waits_timed_out == 1


def test_a_failed_begin_leaves_the_slot_free(engine: Engine, path: Path) -> None:
    """BEGIN IMMEDIATE fails (another program holds SQLite's lock): the writer slot it
    took first is given back, so the next writer only waits for SQLite."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writers = make_sessionmaker(engine, write=True)
    with writers() as db, pytest.raises(OperationalError) as failed:
        db.execute(rows.insert().values(id=1))
    assert database_busy(failed.value)
    other.execute("ROLLBACK")
    other.close()
    started = time.monotonic()
    with writers() as db:
        db.execute(rows.insert().values(id=2))
        db.commit()
    assert time.monotonic() - started < 0.2
    assert _stored(engine) == [2]


def test_a_stuck_writer_is_broken_and_its_commit_refused(engine: Engine) -> None:
    writers = make_sessionmaker(engine, write=True)
    stuck = writers()
    stuck.execute(rows.insert().values(id=1))
    with capture_logs() as logs:
        time.sleep(1.8)  # past the 1 s hold limit: the watchdog breaks it
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "writer held the database too long; rolling it back"
    ]
    stats = writer_stats(engine)
    assert stats is not None
    assert stats.stuck_writers == 1
    with writers() as db:  # others write again at once
        db.execute(rows.insert().values(id=2))
        db.commit()
    with pytest.raises(OperationalError) as refused:
        stuck.commit()  # never a silent success for a write that was rolled back
    assert database_busy(refused.value)
    stuck.close()
    for i in range(3, 20):  # the pool replaced the broken connection
        with writers() as db:
            db.execute(rows.insert().values(id=i))
            db.commit()
    assert _stored(engine) == [2, *range(3, 20)]


def test_a_writer_that_commits_in_time_is_left_alone(engine: Engine) -> None:
    writers = make_sessionmaker(engine, write=True)
    for i in range(5):
        with writers() as db:
            db.execute(rows.insert().values(id=i))
            time.sleep(0.3)
            db.commit()
    stats = writer_stats(engine)
    assert stats is not None
    assert stats.stuck_writers == 0
    assert _stored(engine) == list(range(5))


def test_a_write_that_cannot_get_the_database_answers_503(
    data_dir: Path, database_url: str, app: Any, factory: Factory
) -> None:
    """Another transaction holds what the write needs (SQLite: the writer slot;
    PostgreSQL: the organisation's audit chain head) past the bounded wait: 503 with
    Retry-After and nothing written, not a 500 after a long wait; then it goes through."""
    org = factory.org()
    settings = make_settings(data_dir, database_url, database_write_wait=0.5)
    teams = f"/v1/orgs/{org.id}/teams"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        holder = app.state.bastion.write_sessions()
        audit.lock_chain(holder, org.id)  # on SQLite this takes the writer slot first
        try:
            started = time.monotonic()
            busy = client.post(teams, json={"name": "busy"}, headers=org.headers)
            assert time.monotonic() - started < 3.0
        finally:
            holder.rollback()
            holder.close()
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["code"] == "database_busy"
        created = client.post(teams, json={"name": "busy"}, headers=org.headers)
        assert created.status_code == 201, created.text


def test_readiness_reports_the_writer_slots(client: TestClient) -> None:
    """/readyz says whether a writer is held past the limit, with the slots' counters
    (refused waits, writers broken by the watchdog) for an operator to watch."""
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["writer"] == "ok"
    assert set(ready.json()["writer"]) >= {"waits_timed_out", "stuck_writers"}


def test_only_request_writers_are_refused_past_the_waiting_cap(path: Path) -> None:
    """Past `max_waiting` queued writers a request's writer is refused at once (it would
    hold a server thread), while a background writer (a delivery round's thread, no
    client) waits its turn: a round of many senders lost claimed deliveries to the cap."""
    engine = _engine(path, wait=3.0, hold_limit=10.0)
    writers = make_sessionmaker(engine, write=True)
    outcomes: list[str] = []

    def background(i: int) -> None:
        with writers() as db:
            db.execute(rows.insert().values(id=i))
            db.commit()
        outcomes.append("written")

    try:
        with writers() as first:
            first.execute(rows.insert().values(id=0))
            queued = [
                threading.Thread(target=background, args=(i,)) for i in range(1, SQLITE_WAITING + 4)
            ]
            for thread in queued:
                thread.start()
            time.sleep(0.5)  # all of them wait for the slot now
            token = client_gone.set(lambda: False)  # as the middleware marks a request
            try:
                with writers() as request, pytest.raises(WriterBusy):
                    request.execute(rows.insert().values(id=999))
            finally:
                client_gone.reset(token)
            first.commit()
        for thread in queued:
            thread.join(10)
        assert outcomes == ["written"] * (SQLITE_WAITING + 3)
        assert _stored(engine) == list(range(SQLITE_WAITING + 4))
    finally:
        engine.dispose()
