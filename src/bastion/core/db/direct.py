"""Tiny hot-path reads outside the ORM and its pool (credential cache, revisions)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from bastion.core.clock import as_utc

_ASIDE = "bastion.direct_reader"


def read_aside(db: Session, reader: DirectReader) -> None:
    """Let `fetch` run `db`'s hot-path reads on `reader` instead of `db`'s connection:
    for a request's reader session, which holds no writes of its own (they wait for its
    group-commit unit), so another connection reads exactly what it would."""
    db.info[_ASIDE] = reader


def fetch(db: Session, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The rows of one hot-path read (`?` placeholders): on the `DirectReader` that
    `read_aside` gave `db`, else in `db`'s own transaction. A request's reveal spent
    ~150 µs of CPU in the session's connection checkout, transaction and execution
    machinery around a ~10 µs query."""
    reader: DirectReader | None = db.info.get(_ASIDE)
    if reader is not None:
        return reader.fetchall(sql, params)
    conn = db.connection()
    if conn.dialect.name != "sqlite":
        sql = sql.replace("?", "%s")
    return [tuple(row) for row in conn.exec_driver_sql(sql, params)]


def stored_time(value: datetime | str) -> datetime:
    """A time as `fetch` returns it (text on SQLite, a datetime on PostgreSQL), in UTC:
    what `UTCDateTime` gives through the ORM."""
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


class DirectReader:
    """Tiny hot-path reads on autocommit DBAPI connections outside the ORM pool: for a
    one-row primary-key read, ORM and pool overhead cost ten times the query. Write SQL
    with `?` placeholders. An error closes the connection used and propagates; callers
    fall back to the ordinary path.

    SQLite: one connection per thread (a file handle, nothing to bound). PostgreSQL: at
    most `size` connections per process, shared by every thread in turn, so a server's
    connection count does not grow with its threads (a thread-local reader once opened 49
    for one 2-worker server); a caller waits at most `wait` seconds for one."""

    def __init__(self, engine: Engine, *, size: int = 4, wait: float = 5.0) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._idle: list[Any] = []  # PostgreSQL: open connections not in use
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)  # PostgreSQL: open connections
        self._wait = wait
        self.size = size

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
        if self._sqlite:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._connect()
                self._local.conn = conn
            try:
                return self._run(conn, sql, params)
            except Exception:
                self._local.conn = None
                with contextlib.suppress(Exception):
                    conn.close()
                raise
        if not self._slots.acquire(timeout=self._wait):
            raise PoolTimeout(f"no direct reader connection within {self._wait:g}s")
        conn = None
        try:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            rows = self._run(conn, sql.replace("?", "%s"), params)
        except Exception:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._slots.release()
            raise
        with self._idle_lock:
            self._idle.append(conn)
        self._slots.release()
        return rows

    @staticmethod
    def _run(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        rows = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
        return rows

    def close(self) -> None:
        """Close the idle PostgreSQL connections (as the app shuts down)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


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
