"""The direct reader (hot-path reads outside the ORM pool) keeps a server's PostgreSQL
connections bounded however many threads read at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from bastion.core.db import DirectReader, begin_write, fetch, make_engine, read_aside
from bastion.core.ids import new_id
from bastion.tenancy.models import Team


def test_many_threads_share_a_bounded_set_of_connections(database_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: set BASTION_TEST_DATABASE_URL (make test does in CI)")
    engine = make_engine(database_url)
    reader = DirectReader(engine, size=3)
    marker = f"direct-{threading.get_ident()}"
    seen: list[int] = []
    lock = threading.Lock()

    def read(_: int) -> None:
        # pg_sleep keeps each connection busy, so 24 threads overlap.
        rows = reader.fetchall(
            "SELECT pg_backend_pid(), ? FROM (SELECT pg_sleep(0.02)) AS pause", (marker,)
        )
        with lock:
            seen.append(rows[0][0])

    try:
        with ThreadPoolExecutor(24) as pool:
            list(pool.map(read, range(96)))
        assert len(seen) == 96
        assert len(set(seen)) <= 3  # backends: at most `size`, whatever the threads
        with engine.connect() as conn:
            open_now = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": sorted(set(seen))},
            ).scalar_one()
        assert open_now <= 3
    finally:
        reader.close()
        engine.dispose()


def test_a_failed_read_gives_its_slot_back(database_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: set BASTION_TEST_DATABASE_URL (make test does in CI)")
    engine = make_engine(database_url)
    reader = DirectReader(engine, size=1, wait=1.0)
    try:
        for _ in range(3):
            with pytest.raises(Exception, match="no_such_table"):
                reader.fetchall("SELECT * FROM no_such_table", ())
        assert reader.fetchall("SELECT ?", (7,)) == [(7,)]
    finally:
        reader.close()
        engine.dispose()


def test_fetch_reads_in_the_session_unless_told_to_read_aside(app, factory) -> None:  # type: ignore[no-untyped-def]
    """`fetch` on a plain session reads in its transaction (its own uncommitted writes
    included); on a session given a direct reader, through that reader (what is
    committed), with the same rows for the same SQL on either backend."""
    org = factory.org()
    sql = "SELECT name FROM teams WHERE org_id = ? ORDER BY name"
    state = app.state.bastion
    with state.write_sessions() as db:
        begin_write(db)
        db.add(Team(id=new_id("team"), org_id=org.id, name="uncommitted"))
        db.flush()
        assert fetch(db, sql, (org.id,)) == [("uncommitted",)]
        aside = state.sessions()
        read_aside(aside, state.direct)
        assert fetch(aside, sql, (org.id,)) == []
        aside.close()
        db.commit()
    aside = state.sessions()
    read_aside(aside, state.direct)
    assert fetch(aside, sql, (org.id,)) == [("uncommitted",)]
    aside.close()
