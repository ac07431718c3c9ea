"""Engine, declarative base and column types.

SQLite (embedded default) runs in WAL mode with foreign keys on. Write transactions
start with `BEGIN IMMEDIATE` so two workers never deadlock upgrading a read lock, which
also serialises the audit chain head. PostgreSQL uses row locks for the same purpose.
The unit of work (one transaction per request) lives at the edges; services only
`add`/`flush`, never `commit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
import weakref
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from bastion.core.clock import as_utc
from bastion.core.errors import NotFound
from bastion.core.ids import has_prefix

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

WRITE_OPTION = "bastion_write"


class Base(DeclarativeBase):
    """Rows print as `<Type id=…>` only: no column value (hashes, secrets, PII) ever
    reaches a log line or traceback through `repr`. Secret columns are also marked
    `info={"secret": True}`."""

    metadata = MetaData(naming_convention=NAMING)

    def __repr__(self) -> str:
        identity = (
            getattr(self, "id", None) or getattr(self, "lookup", None) or getattr(self, "chain", "")
        )
        return f"<{type(self).__name__} id={identity}>"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


JSONType = JSON().with_variant(JSONB(), "postgresql")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    writers = _WriterLock(engine.url.database)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        if immediate:
            writers.acquire(conn.connection)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            writers.release(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            writers.release(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


class _WriterLock:
    """Hands SQLite's single writer slot from process to process without its busy
    handler's sleeps (which grow to 100 ms and collapse throughput with several
    workers): writers queue on an advisory lock file beside the database, held from
    BEGIN IMMEDIATE to COMMIT or ROLLBACK. Inside a process, writers first queue on a
    mutex (blocked, not polling: many polling threads starve the holder of the GIL),
    so only one thread per process polls the file, every 2 ms at most. After 10 s a
    writer goes ahead and SQLite's own busy timeout decides, as before."""

    WAIT_SECONDS = 10.0

    def __init__(self, database: str | None) -> None:
        memory = not database or database == ":memory:" or database.startswith("file::memory")
        self._path = None if memory else f"{database}-writer.lock"
        self._held: dict[int, tuple[int | None, bool]] = {}  # connection -> (fd, mutex held)
        self._mutex = threading.Lock()  # guards `_held`
        self._turn = threading.Lock()  # this process's writer turn

    @staticmethod
    def _key(connection: Any) -> int:
        """The DBAPI connection's identity, whether given raw or as the pool's proxy."""
        return id(getattr(connection, "dbapi_connection", None) or connection)

    def acquire(self, connection: Any) -> None:
        key = self._key(connection)
        if self._path is None or key in self._held:
            return
        deadline = time.monotonic() + self.WAIT_SECONDS
        turn = self._turn.acquire(timeout=self.WAIT_SECONDS)
        fd: int | None = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        pause = 0.0002
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    fd = None
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
        with self._mutex:
            self._held[key] = (fd, turn)

    def release(self, connection: Any) -> None:
        with self._mutex:
            fd, turn = self._held.pop(self._key(connection), (None, False))
        if fd is not None:
            os.close(fd)  # closing the descriptor releases its lock
        if turn:
            self._turn.release()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=16,
        )
        _configure_sqlite(engine)
        return engine
    if "memory" in url:
        return create_engine(url, echo=echo, poolclass=NullPool)
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)


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


class DirectReader:
    """Tiny hot-path reads on autocommit DBAPI connections, one per thread and outside
    the pool: for a one-row primary-key read, ORM and pool overhead cost ten times the
    query. Write SQL with `?` placeholders. An error closes the thread's connection and
    propagates; callers fall back to the ordinary path."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"DirectReader({self._engine.dialect.name})"

    @property
    def local(self) -> bool:
        return self._sqlite

    def _connect(self) -> Any:
        dialect = self._engine.dialect
        cargs, cparams = dialect.create_connect_args(self._engine.url)
        conn = dialect.loaded_dbapi.connect(*cargs, **cparams)
        if self._sqlite:
            conn.isolation_level = None  # autocommit: every read sees the latest commit
            conn.execute("PRAGMA busy_timeout=10000")
        else:
            conn.autocommit = True
            conn.execute("SET statement_timeout = 5000")
        return conn

    def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        try:
            cursor = conn.cursor()
            cursor.execute(sql if self._sqlite else sql.replace("?", "%s"), params)
            rows = [tuple(row) for row in cursor.fetchall()]
            cursor.close()
            return rows
        except Exception:
            self._local.conn = None
            with contextlib.suppress(Exception):
                conn.close()
            raise


class AsyncDirectReader:
    """`DirectReader` for PostgreSQL on the event loop: a few autocommit psycopg async
    connections used in turn, opened lazily, one set per running loop (asyncio
    connections belong to the loop that made them). An error closes that connection and
    propagates."""

    def __init__(self, engine: Engine, size: int = 4) -> None:
        _, self._params = engine.dialect.create_connect_args(engine.url)
        self._size = size
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSlots] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"AsyncDirectReader(size={self._size})"

    def _slots(self) -> _LoopSlots:
        loop = asyncio.get_running_loop()
        slots = self._pools.get(loop)
        if slots is None:
            slots = _LoopSlots(self._size)
            self._pools[loop] = slots
        return slots

    async def aclose(self) -> None:
        """Close the running loop's connections."""
        slots = self._slots()
        for index, conn in enumerate(slots.conns):
            slots.conns[index] = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        slots = self._slots()
        index = slots.next
        slots.next = (index + 1) % self._size
        async with slots.locks[index]:
            conn = slots.conns[index]
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        **self._params, autocommit=True, options="-c statement_timeout=5000"
                    )
                    slots.conns[index] = conn
                cursor = await conn.execute(sql.replace("?", "%s"), params)
                return [tuple(row) for row in await cursor.fetchall()]
            except Exception:
                slots.conns[index] = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise


class _LoopSlots:
    def __init__(self, size: int) -> None:
        self.conns: list[Any] = [None] * size
        self.locks = [asyncio.Lock() for _ in range(size)]
        self.next = 0


M = TypeVar("M", bound=Base)


def get_in_org(
    db: Session, model: type[M], object_id: str, org_id: str, *, prefix: str, noun: str
) -> M:
    """The row of `model` with this `prefix`-typed id in this organisation, or NotFound:
    an id of another type, a missing row and another organisation's row answer alike."""
    found = db.get(model, object_id) if has_prefix(object_id, prefix) else None
    if found is None or getattr(found, "org_id", None) != org_id:
        raise NotFound(f"{noun} not found")
    return found
