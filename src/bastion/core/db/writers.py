"""Writer slots: bounded, watched write transactions (see `WriterLock`).

Write transactions (sessions made with `make_sessionmaker(write=True)`) take a slot at
BEGIN and give it back at COMMIT or ROLLBACK, on every path. The engine events that do
so are installed by `make_engine` (`configure_sqlite`, `configure_postgresql`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

WRITE_OPTION = "bastion_write"

_log = structlog.get_logger("bastion.db")

# Set by the HTTP edge for a request's writes: whether its client has disconnected. A
# writer still waiting for a slot then gives up: no one is left to answer.
client_gone: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)


class WriterBusy(OperationalError):
    """No writer slot within the bounded wait, or a writer rolled back by the watchdog
    for holding its slot too long: the database is busy, the request may be retried."""

    def __init__(self, detail: str) -> None:
        super().__init__("BEGIN IMMEDIATE", None, sqlite3.OperationalError(detail))


def database_busy(exc: BaseException) -> bool:
    """A failure worth a retry rather than a 500: SQLite busy, locked or full (a full
    disk: the write is refused whole and succeeds once space is freed), a PostgreSQL lock
    timeout, cancelled statement, lost connection or full disk, no pooled connection in
    time."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if exc.connection_invalidated or type(exc.orig).__module__.startswith("psycopg"):
        return True
    message = str(exc.orig).lower()
    # "unable to open": the database file cannot be reached (a region's volume gone).
    words = ("locked", "busy", "interrupted", "is full", "unable to open")
    return any(word in message for word in words)


def configure_sqlite(engine: Engine, writers: WriterLock | None, synchronous: str) -> None:
    busy_ms = int((writers.wait if writers else 10.0) * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if not conn.get_execution_options().get(WRITE_OPTION, False):
            conn.exec_driver_sql("BEGIN")
            return
        if writers is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        writers.acquire(conn.connection)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(conn.connection)
            raise

    if writers is not None:
        _end_with_the_transaction(engine, writers)


def configure_postgresql(engine: Engine, writers: WriterLock) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            writers.acquire(conn.connection)

    _end_with_the_transaction(engine, writers)


def _end_with_the_transaction(engine: Engine, writers: WriterLock) -> None:
    """A writer's slot is given back when its transaction ends, on every path (commit,
    rollback, the pool's reset when a connection comes back)."""
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            writers.commit_check(dbapi_connection)
            commit(dbapi_connection)
        finally:
            writers.release(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if writers.broken(dbapi_connection):
            return  # closed by the watchdog, which rolled it back
        try:
            rollback(dbapi_connection)
        finally:
            writers.release(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        # A lost connection is never rolled back or committed: its slot is given back
        # here, or each one lost would keep a writer slot for good.
        if dbapi_connection is not None and not writers.broken(dbapi_connection):
            writers.release(dbapi_connection)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if writers.broken(dbapi_connection, forget=True):
            raise DisconnectionError("closed by the writer watchdog")  # the pool replaces it

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


@dataclass
class _Hold:
    fd: int | None  # the lock file's descriptor (SQLite)
    since: float
    thread: str
    committing: bool = False


@dataclass
class WriterStats:
    """What the writer slots have seen in this process (see `writer_stats`)."""

    waits_timed_out: int = 0  # writers refused after the bounded wait (503)
    waits_refused: int = 0  # writers refused at once: too many already waiting (503)
    clients_gone: int = 0  # writers that stopped waiting: their client had left
    stuck_writers: int = 0  # holders past the hold limit, rolled back by the watchdog
    oldest_hold_seconds: float = 0.0  # how long the oldest current holder has held


class WriterLock:
    """Write transactions take a slot from BEGIN to COMMIT or ROLLBACK.

    SQLite has one: it is handed from process to process without SQLite's busy
    handler's sleeps (which grow to 100 ms and collapse throughput with several
    workers): writers queue on an advisory lock file beside the database, held from
    BEGIN IMMEDIATE to the end. Inside a process, writers first queue for the process's
    turn (blocked, not polling: many polling threads starve the holder of the GIL), so
    only one thread per process polls the file, every 2 ms at most. PostgreSQL has
    `slots` per process (row locks order the writers themselves).

    Bounded everywhere: at most `max_waiting` request threads of a process wait for a
    slot, more are refused at once (background writers wait their turn); a writer that
    gets none within `wait` seconds is refused too (`WriterBusy`, answered 503). Waiting
    request threads are the server's worker threads, and a writer holding a slot needs
    one to finish (FastAPI validates a sync route's response on another thread): with all
    of them waiting here, it would wait with them, and hold the database meanwhile
    (issue 12). With a `hold_limit` (SQLite; PostgreSQL has
    idle_in_transaction_session_timeout) a watchdog thread breaks any holder past it:
    logs an error, counts it, interrupts and closes its connection (SQLite rolls the
    transaction back and the slot is free); that holder's commit then fails instead of
    claiming a write that did not happen."""

    def __init__(
        self,
        lock_file: str | None,
        *,
        slots: int,
        max_waiting: int,
        wait: float,
        hold_limit: float | None,
    ) -> None:
        self._path = lock_file
        self.wait = wait
        self.hold_limit = hold_limit
        self.max_waiting = max_waiting
        self.stats = WriterStats()
        self._held: dict[Any, _Hold] = {}  # DBAPI connection -> its hold
        self._broken: set[Any] = set()  # closed by the watchdog, until the pool drops them
        self._mutex = threading.Lock()  # guards `_held`, `_broken`, `_waiting` and `stats`
        self._slots = threading.Semaphore(slots)  # this process's writers
        self._waiting = 0  # threads queued for a slot
        self._watchdog: threading.Thread | None = None

    @staticmethod
    def _raw(connection: Any) -> Any:
        """The DBAPI connection, whether given raw or as the pool's proxy."""
        return getattr(connection, "dbapi_connection", None) or connection

    def acquire(self, connection: Any) -> None:
        raw = self._raw(connection)
        gone = client_gone.get()  # set for a request's writer (see the middleware)
        with self._mutex:
            if raw in self._broken:
                raise WriterBusy("database is locked: the transaction was held too long")
            stale = self._held.pop(raw, None)
            # The cap keeps requests from filling the server's threads with waiters; a
            # background writer (deliveries, sinks, alerts) has threads of its own and
            # waits its turn, still no longer than `wait`.
            if stale is None and gone is not None and self._waiting >= self.max_waiting:
                self.stats.waits_refused += 1
                raise WriterBusy(f"database is locked: {self._waiting} writers already waiting")
            self._waiting += 1
        if stale is not None:  # a connection beginning anew has ended what it held
            _log.warning("writer slot left held by an ended transaction; freed")
            self._free(stale)
        deadline = time.monotonic() + self.wait
        try:
            slot = self._wait_for_slot(deadline, gone)
        finally:
            with self._mutex:
                self._waiting -= 1
        if not slot:
            self._timed_out()
        try:
            fd = None if self._path is None else self._lock_file(self._path, deadline)
        except BaseException:
            self._slots.release()
            raise
        with self._mutex:
            self._held[raw] = _Hold(fd, time.monotonic(), threading.current_thread().name)
        if self.hold_limit is not None and self._watchdog is None:
            self._start_watchdog()

    def _wait_for_slot(self, deadline: float, gone: Callable[[], bool] | None) -> bool:
        """A slot before the deadline; gives up early once the client has gone."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._slots.acquire(timeout=remaining if gone is None else min(remaining, 0.05)):
                return True
            if gone is not None and gone():
                with self._mutex:
                    self.stats.clients_gone += 1
                raise WriterBusy("database is locked: the client left while its write waited")

    def _lock_file(self, path: str, deadline: float) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        pause = 0.0002
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self._timed_out()
                    time.sleep(pause)
                    pause = min(pause * 2, 0.002)
        except BaseException:
            os.close(fd)
            raise

    def _timed_out(self) -> None:
        with self._mutex:
            self.stats.waits_timed_out += 1
        raise WriterBusy(f"database is locked: no writer slot within {self.wait:g}s")

    def commit_check(self, connection: Any) -> None:
        """Before COMMIT: refuse when the watchdog broke this writer (its work is gone),
        and keep the watchdog off a writer that is committing."""
        raw = self._raw(connection)
        with self._mutex:
            if raw in self._broken:
                raise WriterBusy("database is locked: the transaction was held too long")
            hold = self._held.get(raw)
            if hold is not None:
                hold.committing = True

    def broken(self, connection: Any, *, forget: bool = False) -> bool:
        """Whether the watchdog broke (closed) this connection; `forget` drops the mark
        (the pool is about to replace the connection)."""
        raw = self._raw(connection)
        with self._mutex:
            found = raw in self._broken
            if forget:
                self._broken.discard(raw)
            return found

    def release(self, connection: Any) -> None:
        raw = self._raw(connection)
        with self._mutex:
            hold = self._held.pop(raw, None)
        if hold is not None:
            self._free(hold)

    def _free(self, hold: _Hold) -> None:
        if hold.fd is not None:
            os.close(hold.fd)  # closing the descriptor releases its lock
        self._slots.release()

    def snapshot(self) -> WriterStats:
        now = time.monotonic()
        with self._mutex:
            oldest = min((h.since for h in self._held.values()), default=now)
            return replace(self.stats, oldest_hold_seconds=round(now - oldest, 3))

    def _start_watchdog(self) -> None:
        with self._mutex:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(
                target=self._watch,
                args=(self.hold_limit,),
                name="bastion-writer-watchdog",
                daemon=True,
            )
        self._watchdog.start()

    def _watch(self, limit: float) -> None:
        while True:
            time.sleep(min(1.0, limit / 4))
            self.break_stuck()

    def break_stuck(self) -> int:
        """Break every holder past the hold limit; how many there were."""
        limit = self.hold_limit
        if limit is None:
            return 0
        now = time.monotonic()
        with self._mutex:
            stuck = [
                (raw, hold)
                for raw, hold in self._held.items()
                if now - hold.since > limit and not hold.committing
            ]
            for raw, _ in stuck:
                del self._held[raw]
                self._broken.add(raw)
            self.stats.stuck_writers += len(stuck)
        for raw, hold in stuck:
            _log.error(
                "writer held the database too long; rolling it back",
                held_seconds=round(now - hold.since, 1),
                limit_seconds=limit,
                thread=hold.thread,
                stuck_writers=self.stats.stuck_writers,
            )
            with contextlib.suppress(Exception):
                raw.interrupt()  # a running statement stops
            with contextlib.suppress(Exception):
                raw.close()  # SQLite rolls back; the owner's next use fails
            self._free(hold)
        return len(stuck)


_WRITERS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()
# Per process: write slots, and threads that may wait for one (each holding a worker
# thread and a pooled connection). Well under anyio's 40 worker threads and the pool, so
# a writer always finds a thread to finish on, and readers a connection.
SQLITE_WAITING = 16  # of a pool of 24
PG_WRITERS, PG_WAITING = 8, 8  # of a pool of 30


def writer_stats(engine: Engine) -> WriterStats | None:
    """The write slots' counters for an engine made by `make_engine`."""
    writers = _WRITERS.get(engine)
    return None if writers is None else writers.snapshot()
