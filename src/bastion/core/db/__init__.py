"""Engine, sessions and the database's public surface.

SQLite (embedded default) runs in WAL mode with foreign keys on. Write transactions
start with `BEGIN IMMEDIATE` so two workers never deadlock upgrading a read lock, which
also serialises the audit chain head; PostgreSQL uses row locks for the same purpose.
Either way a writer holds a bounded, watched slot (`writers`). Requests write through
the group commit (`bastion.core.groupcommit`) or, for the rest, one transaction per
request at the edges; services only `add`/`flush`, never `commit`. Tiny hot-path reads
go around the ORM (`direct`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from bastion.core.db.base import NAMING, Base, JSONType, UTCDateTime, get_in_org
from bastion.core.db.direct import (
    AsyncDirectReader,
    DirectReader,
    fetch,
    read_aside,
    stored_time,
)
from bastion.core.db.writers import _WRITERS as _WRITERS
from bastion.core.db.writers import (
    PG_WAITING,
    PG_WRITERS,
    SQLITE_WAITING,
    WRITE_OPTION,
    WriterBusy,
    WriterLock,
    WriterStats,
    client_gone,
    configure_postgresql,
    configure_sqlite,
    database_busy,
    writer_stats,
)

__all__ = [
    "NAMING",
    "ORG_SCOPE_OPTION",
    "PG_WAITING",
    "PG_WRITERS",
    "SQLITE_WAITING",
    "WRITE_OPTION",
    "AsyncDirectReader",
    "Base",
    "DirectReader",
    "JSONType",
    "UTCDateTime",
    "WriterBusy",
    "WriterStats",
    "begin_write",
    "client_gone",
    "database_busy",
    "fetch",
    "get_in_org",
    "make_engine",
    "make_sessionmaker",
    "org_scoped",
    "read_aside",
    "stored_time",
    "writer_stats",
]


def make_engine(
    url: str,
    *,
    echo: bool = False,
    write_wait: float | None = None,
    write_hold_limit: float | None = None,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 10,
    pool_overflow: int = 20,
) -> Engine:
    """An engine for `url`. With `write_wait`, a writer waits at most that long for the
    database (SQLite: the writer slot and busy timeout, 10 s without; PostgreSQL: row
    locks, unbounded without), as does anyone for a pooled connection; with
    `write_hold_limit`, a writer holding its transaction longer is broken (SQLite: by
    the watchdog; PostgreSQL: idle_in_transaction_session_timeout). The server sets
    both; command-line tools and migrations keep the defaults. SQLite commits are
    `sqlite_synchronous` (FULL, durable across power loss, unless the operator lowers it).
    PostgreSQL: a pool of `pool_size` connections, `pool_overflow` more under bursts."""
    if sqlite_synchronous not in ("FULL", "NORMAL"):
        raise ValueError("sqlite_synchronous is FULL or NORMAL")
    if url.startswith("sqlite"):
        wait = write_wait or 10.0
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": wait},
            pool_size=24,
            max_overflow=0,
            pool_timeout=wait,
        )
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file::memory"):
            # One connection's database: no one to wait for.
            configure_sqlite(engine, None, sqlite_synchronous)
            return engine
        writers = WriterLock(
            f"{database}-writer.lock",
            slots=1,
            max_waiting=SQLITE_WAITING,
            wait=wait,
            hold_limit=write_hold_limit,
        )
        configure_sqlite(engine, writers, sqlite_synchronous)
        _WRITERS[engine] = writers
        return engine
    if "memory" in url:
        return create_engine(url, echo=echo, poolclass=NullPool)
    options = []
    if write_wait is not None:
        options.append(f"-c lock_timeout={int(write_wait * 1000)}")
    if write_hold_limit is not None:
        options.append(f"-c idle_in_transaction_session_timeout={int(write_hold_limit * 1000)}")
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        pool_pre_ping=True,
        pool_timeout=write_wait or 30.0,
        connect_args={"options": " ".join(options)} if options else {},
    )
    writers = WriterLock(
        None, slots=PG_WRITERS, max_waiting=PG_WAITING, wait=write_wait or 30.0, hold_limit=None
    )
    configure_postgresql(engine, writers)
    _WRITERS[engine] = writers
    return engine


def make_sessionmaker(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; with `write=True` their transactions begin as writers
    (SQLite: BEGIN IMMEDIATE) without any I/O until first use."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=True)


ORG_SCOPE_OPTION = "org_scope"


def org_scoped(org_id: str) -> dict[str, Any]:
    """Execution options naming the organisation a bulk UPDATE/DELETE touches, so
    revision counters that watch the table (see `bastion.identity.authcache`) advance
    for that org only; an unnamed bulk write advances the instance-wide counter."""
    return {ORG_SCOPE_OPTION: org_id}


def begin_write(session: Session) -> None:
    """Mark the session's transaction as a writer (SQLite: BEGIN IMMEDIATE)."""
    session.connection(execution_options={WRITE_OPTION: True})
