"""Group commit: the write path. Units of work from concurrent requests, one transaction.

A request reads and decides outside any write transaction (signatures checked, values
decrypted, rights decided), then hands its writes over as a *unit*: a function of a
session. One writer thread per process takes whatever units are waiting and runs them
in one transaction, each inside a savepoint, and commits once. So:

- a unit's changes and its audit event commit together or not at all;
- a unit that raises fails alone: its savepoint is rolled back, the others commit;
- a unit sees the units before it in the same batch (a name taken, a budget spent);
- a request is answered only after its batch committed (durable when acknowledged);
- the database's single writer (SQLite), or a chain head's row lock (any database), is
  held for one BEGIN … COMMIT per batch instead of one per request, with no thread hop
  or response serialisation inside it.

Units may *stage* rows (`stage`) that every unit of the batch produces alike, such as
audit events: they are inserted together just before the batch commits, one statement
per kind (`on_flush` names the writer of each kind). A failed unit's staged rows go
with its savepoint.

A unit's own failure (a domain refusal, a broken constraint, a bug) is contained in its
savepoint. A failure of the database itself (a lost connection, a full disk: SQLite then
rolls back the whole transaction) ends the batch, as does a failed commit: every unit of
the batch is then run again in a transaction of its own, so only the units that fail
again fail, with the database's error (answered 503: retry). Units
must therefore be safe to run again from scratch: they compute their writes from their
inputs and what they read in the transaction, nothing else.

Services that may run either way write through `defer`: on a *deferring* session (a
request's reader, see `deferring`) the write waits for the request's unit; on any other
session it runs at once, as in a plain transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.core.db import WriterBusy
from bastion.core.errors import BastionError

T = TypeVar("T")
Work = Callable[[Session], T]

log = structlog.get_logger(__name__)

_UNIT = "bastion.groupcommit.unit"  # session.info: the running unit's rows by kind
_DEFERRED = "bastion.groupcommit.deferred"  # session.info: a deferring session's writes
_FLUSHERS: dict[str, Callable[[Session, list[Any]], None]] = {}


def on_flush(kind: str, flush: Callable[[Session, list[Any]], None]) -> None:
    """Register how staged rows of `kind` are written (once, at import of their owner)."""
    _FLUSHERS[kind] = flush


def stage(db: Session, kind: str, row: Any) -> bool:
    """Stage a row for the batch's one insert of `kind`; False outside a batch (the
    caller then writes it itself)."""
    unit: dict[str, list[Any]] | None = db.info.get(_UNIT)
    if unit is None:
        return False
    unit.setdefault(kind, []).append(row)
    return True


def deferring(db: Session) -> None:
    """Make `db` (a reader) hold its writes for the caller's unit: see `defer`."""
    db.info[_DEFERRED] = []


def is_deferring(db: Session) -> bool:
    return _DEFERRED in db.info


def defer(db: Session, work: Callable[[Session], object]) -> None:
    """Write `work(session)` now on an ordinary session; on a deferring one, keep it for
    the unit that `deferred` hands over."""
    held: list[Callable[[Session], object]] | None = db.info.get(_DEFERRED)
    if held is None:
        work(db)
    else:
        held.append(work)


def deferred(db: Session) -> list[Callable[[Session], object]]:
    """The writes a deferring session holds (taken: a second call returns none)."""
    held: list[Callable[[Session], object]] = db.info.get(_DEFERRED) or []
    if held:
        db.info[_DEFERRED] = []
    return held


@event.listens_for(Session, "before_flush")
def _refuse_writes_on_a_reader(db: Session, _context: Any, _instances: Any) -> None:
    if _DEFERRED in db.info and (db.new or db.dirty or db.deleted):
        # A programming error, caught by tests: a request's reader never writes.
        raise RuntimeError("a deferring session does not write: use groupcommit.defer")


@dataclass
class _Unit(Generic[T]):
    work: Work[T]
    order: str  # units of a batch run sorted by it: row locks taken in one order
    settle: Callable[[T | None, BaseException | None], None] = field(repr=False)


_STOP = object()


class GroupCommit:
    """`await group.run(work, order=…)` (or `group.run_blocking` from a worker thread)
    runs `work(session)` in the writer thread's next batch and returns its result once
    the batch has committed; an exception raised by `work` is raised to its caller only.
    With `max_queued` units already waiting, a new one is refused at once (`WriterBusy`).
    `before_commit(session)`, if given, runs after a batch's units, before it commits."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        before_commit: Callable[[Session], None] | None = None,
        max_batch: int = 256,
        linger: float = 0.0005,
        max_queued: int = 4096,
    ) -> None:
        self._sessions = sessions
        self._before_commit = before_commit
        self._max = max_batch
        self._max_queued = max_queued
        self._linger = linger
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.units = 0

    def __repr__(self) -> str:
        return f"GroupCommit(batches={self.batches}, units={self.units})"

    async def run(self, work: Work[T], *, order: str = "") -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            def done() -> None:
                if future.done():
                    return
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

            with contextlib.suppress(RuntimeError):  # the loop has closed: no one to tell
                loop.call_soon_threadsafe(done)

        self._put(_Unit(work, order, settle))
        # Shielded: a client that goes away does not un-ask; its unit still commits.
        return await asyncio.shield(future)

    def run_blocking(self, work: Work[T], *, order: str = "") -> T:
        """`run` for a caller on a worker thread (never the writer thread itself)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        self._put(_Unit(work, order, settle))
        return future.result()

    def _put(self, unit: _Unit[Any]) -> None:
        if self._queue.qsize() >= self._max_queued:
            # Overload: refused at once (503, retry) rather than queued without bound.
            raise WriterBusy(f"database is locked: {self._max_queued} writes already queued")
        with self._lock:  # a unit is never queued behind the stop of a closing thread
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._queue.put(unit)

    def _start(self) -> None:
        """A new writer thread (the caller holds `_lock`)."""
        self._thread = threading.Thread(target=self._loop, name="bastion-group-commit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the writer thread (as an app shuts down). A
        later `run` starts a new one: an app may be started again."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():  # a stop left for a thread that
                self._queue.put(_STOP)  # has ended would stop the next one instead
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Unit[Any]] = [first]
            stop = False
            # A short linger lets concurrent requests join the batch: under load it costs
            # far less than the transaction it saves. A plain sleep, then what is queued:
            # a timed `get` of sub-millisecond timeouts was seen to block for good (CI
            # hung twice with this thread waiting there and units queued behind it).
            if self._linger:
                time.sleep(self._linger)
            while len(batch) < self._max:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is _STOP:
                    stop = True
                    break
                batch.append(unit)
            batch.sort(key=lambda u: u.order)
            try:
                self._commit(batch)
            except BaseException as error:
                # Not an Exception (SystemExit, a KeyboardInterrupt delivered here): the
                # thread ends, its callers are told, and the next `run` starts another.
                log.error("group commit writer stopped", error=type(error).__name__)
                with self._lock:  # before its callers hear: their next units need a thread
                    if self._thread is threading.current_thread():
                        self._thread = None
                        if not self._queue.empty():  # queued meanwhile: not left waiting
                            self._start()
                stopped = RuntimeError("the group commit writer stopped")
                for unit in batch:
                    unit.settle(None, stopped)
                return
            if stop:
                return

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        db = None
        try:
            db = self._sessions()
            db.connection()  # BEGIN: the writer's slot, once for the whole batch
        except Exception as error:  # busy, or no connection: the batch waits no more
            log.warning("group commit could not begin", error=type(error).__name__)
            if db is not None:
                db.close()
            for unit in batch:
                unit.settle(None, error)
            return
        try:
            with db:
                staged: dict[str, list[Any]] = {}
                for unit in batch:
                    outcomes.append(self._run_unit(db, unit, staged))
                db.info.pop(_UNIT, None)
                for kind, rows in staged.items():
                    if rows:
                        _FLUSHERS[kind](db, rows)
                if self._before_commit is not None:
                    self._before_commit(db)
                db.commit()
        except Exception as error:
            if len(batch) == 1:
                if not isinstance(error, BastionError):
                    log.warning("group commit failed", error=type(error).__name__)
                batch[0].settle(None, error)
                return
            for unit in batch:  # one per transaction: only the units that fail again fail
                self._commit([unit])
            return
        self.batches += 1
        self.units += len(batch)
        for unit, (result, failure) in zip(batch, outcomes, strict=True):
            unit.settle(result, failure)

    @staticmethod
    def _run_unit(
        db: Session, unit: _Unit[Any], staged: dict[str, list[Any]]
    ) -> tuple[Any, BaseException | None]:
        rows: dict[str, list[Any]] = {}
        db.info[_UNIT] = rows
        savepoint = db.begin_nested()
        try:
            result = unit.work(db)
            savepoint.commit()  # flushes: a constraint broken by the unit shows here
        except Exception as error:
            try:
                savepoint.rollback()
            except SQLAlchemyError:
                # The transaction went with it (a lost connection; SQLite rolls back
                # the whole transaction when the disk is full): the batch ends here.
                raise error from None
            if isinstance(error, SQLAlchemyError) and not isinstance(error, IntegrityError):
                raise  # the database failed, not the unit: the batch ends here
            if not isinstance(error, BastionError):
                log.warning("group commit unit failed", error=type(error).__name__)
            return None, error  # its savepoint rolled back; its staged rows dropped
        for kind, kept in rows.items():
            staged.setdefault(kind, []).extend(kept)
        return result, None
