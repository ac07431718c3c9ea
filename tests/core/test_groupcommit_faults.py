"""Fault injection on the write path: a full database and a dropped PostgreSQL
connection fail only the requests whose batch they hit, as retryable (503) errors, and
the writer recovers without a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bastion.core.db import database_busy, make_engine, make_sessionmaker, writer_stats
from bastion.core.groupcommit import GroupCommit

metadata = MetaData()
rows = Table(
    "fault_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("blob", LargeBinary),
)


def _insert(row_id: int, size: int = 16):  # type: ignore[no-untyped-def]
    def work(db: Session) -> int:
        db.execute(rows.insert().values(id=row_id, blob=b"x" * size))
        return row_id

    return work


def _stored(engine: Engine) -> list[int]:
    with engine.connect() as c:
        return sorted(c.execute(select(rows.c.id)).scalars())


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}", write_wait=2.0)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_full_database_fails_only_the_write_that_does_not_fit(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """SQLite's page limit stands in for a full disk (the same SQLITE_FULL error): the
    unit that needs more space fails, with a retryable error; the small units of the
    same batch commit; once space is freed, the same write succeeds."""
    from sqlalchemy import event

    limit = {"pages": 0}

    @event.listens_for(sqlite_engine, "connect")
    def _cap(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        if limit["pages"]:
            dbapi_connection.execute(f"PRAGMA max_page_count={limit['pages']}")

    with sqlite_engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
    limit["pages"] = pages + 8  # a few rows more, not a megabyte
    sqlite_engine.dispose()  # new connections get the cap
    group = GroupCommit(make_sessionmaker(sqlite_engine, write=True), linger=0.05)

    async def burst() -> list[object]:
        units = [group.run(_insert(i)) for i in range(1, 4)]
        units.append(group.run(_insert(99, size=1 << 20)))  # does not fit
        units += [group.run(_insert(i)) for i in range(4, 7)]
        return await asyncio.gather(*units, return_exceptions=True)

    results = asyncio.run(burst())
    failed = [r for r in results if isinstance(r, Exception)]
    assert [r for r in results if not isinstance(r, Exception)] == [1, 2, 3, 4, 5, 6]
    assert len(failed) == 1
    assert isinstance(failed[0], OperationalError)
    assert "full" in str(failed[0]).lower()
    assert database_busy(failed[0])  # answered 503 with Retry-After, not 500
    assert _stored(sqlite_engine) == [1, 2, 3, 4, 5, 6]

    limit["pages"] = 0  # space freed
    group.close()
    sqlite_engine.dispose()
    group = GroupCommit(make_sessionmaker(sqlite_engine, write=True))
    assert group.run_blocking(_insert(99, size=1 << 20)) == 99
    group.close()


@pytest.fixture
def pg_engine(database_url: str, backend: str) -> Iterator[Engine]:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: set BASTION_TEST_DATABASE_URL (make test does in CI)")
    engine = make_engine(database_url, write_wait=2.0)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def test_a_dropped_connection_fails_its_batch_only_and_the_writer_recovers(
    pg_engine: Engine,
) -> None:
    """The writer's backend is terminated in the middle of a batch (as a failover or an
    administrator would): that batch's units fail with a retryable error and nothing of
    them is written; the next units, on a new connection, succeed."""
    group = GroupCommit(make_sessionmaker(pg_engine, write=True), linger=0.05)
    assert group.run_blocking(_insert(1)) == 1

    def killed(db: Session) -> int:
        pid = db.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        db.execute(rows.insert().values(id=2, blob=b""))
        return 2

    with pytest.raises(OperationalError) as lost:
        group.run_blocking(killed)
    assert database_busy(lost.value)
    assert [group.run_blocking(_insert(i)) for i in (3, 4)] == [3, 4]
    group.close()
    assert _stored(pg_engine) == [1, 3, 4]
    stats = writer_stats(pg_engine)
    assert stats is not None
    assert stats.oldest_hold_seconds == 0.0  # no writer slot left held by the lost one
