"""Group commit: the write path. Units of work from concurrent requests, one transaction.

A request reads and decides outside any write transaction (signatures checked, values
decrypted, rights decided), then hands its writes over as a *unit*: a function of a
session. One writer thread per process takes whatever units are waiting and runs them
in one transaction and commits once: all together first, and when any of them fails,
the batch is rolled back and run again with each unit inside a savepoint (as are the
next batches for a while: see `GroupCommit._commit`). So:

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
savepoint (once the batch's first, savepoint-free, run has failed). A failure of the
database itself (a lost connection, a full disk: SQLite then rolls back the whole
transaction) ends the batch, as does a failed commit: every unit of the batch is then
run again in a transaction of its own, so only the units that fail again fail, with the
database's error (answered 503: retry). Units must therefore be safe to run again from
scratch: they compute their writes from their inputs and what they read in the
transaction, nothing else.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.core import metrics
from bastion.core.db import WriterBusy
from bastion.core.errors import BastionError

T = TypeVar("T")
Work = Callable[[Session], T]

log = structlog.get_logger(__name__)

_UNIT = "bastion.groupcommit.unit"  # session.info: the running unit's rows by kind
# session.info, in a batch run unit by unit: the rows of the units before that committed
# to their savepoints (otherwise the batch's rows are the running unit's: one dict).
_BATCH = "bastion.groupcommit.batch"
_DEFERRED = "bastion.groupcommit.deferred"  # session.info: a deferring session's writes
_FLUSHERS: dict[str, Callable[[Session, list[Any]], None]] = {}
_BEGIN_HOOKS: list[Callable[[Session, list[str]], None]] = []
_FINISH_HOOKS: list[Callable[[Session], None]] = []


def on_flush(kind: str, flush: Callable[[Session, list[Any]], None]) -> None:
    """Register how staged rows of `kind` are written (once, at import of their owner)."""
    _FLUSHERS[kind] = flush


def on_begin(hook: Callable[[Session, list[str]], None]) -> None:
    """Register what a batch does first, given its units' distinct `order` keys, sorted
    (once, at import of its owner): the audit chain locks the heads of the batch's
    organisations there, so a batch takes a head before any row, as every writer does."""
    _BEGIN_HOOKS.append(hook)


def on_finish(hook: Callable[[Session], None]) -> None:
    """Register what a batch does last, after its units' changes and staged rows are
    written and before it commits (once, at import of its owner): revision counters
    advance there once per organisation for the whole batch."""
    _FINISH_HOOKS.append(hook)


def stage(db: Session, kind: str, row: Any) -> bool:
    """Stage a row for the batch's one insert of `kind`; False outside a batch (the
    caller then writes it itself)."""
    unit: dict[str, list[Any]] | None = db.info.get(_UNIT)
    if unit is None:
        return False
    unit.setdefault(kind, []).append(row)
    return True


def in_batch(db: Session) -> bool:
    """Whether `db` is running a group-commit unit (`stage` would stage)."""
    return db.info.get(_UNIT) is not None


def staged(db: Session, kind: str) -> list[Any]:
    """The rows of `kind` the batch holds so far for its insert: the running unit's and
    those of the units before it that did not fail (a failed unit's are gone with its
    savepoint). Empty outside a batch."""
    unit: dict[str, list[Any]] | None = db.info.get(_UNIT)
    if unit is None:
        return []
    rows = unit.get(kind, [])
    batch: dict[str, list[Any]] | None = db.info.get(_BATCH)
    if batch is not None and batch is not unit and batch.get(kind):
        return batch[kind] + rows
    return rows


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
    # Units of a batch run sorted by it (row locks taken in one order); it begins with
    # the organisation's id the unit writes for (`org_…` or `org_…:…`), or is empty.
    order: str
    # Its caller's future: on `loop` (`run`), or a thread's (`run_blocking`, no loop).
    future: asyncio.Future[T] | concurrent.futures.Future[T] = field(repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)


Outcome = tuple[_Unit[Any], Any, BaseException | None]  # a unit, its result, its error


def _settle(outcomes: list[Outcome]) -> None:
    """Tell the units' callers: one wake-up per event loop for the whole batch (each
    wake-up writes to the loop's socket, giving up the interpreter lock)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        unit, result, error = outcome
        if unit.loop is not None:
            by_loop.setdefault(unit.loop, []).append(outcome)
        elif error is not None:
            unit.future.set_exception(error)
        else:
            unit.future.set_result(result)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one to tell
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[Outcome]) -> None:
    """On the callers' loop: settle their futures (a cancelled one is left alone)."""
    for unit, result, error in settled:
        if unit.future.done():
            continue
        if error is not None:
            unit.future.set_exception(error)
        else:
            unit.future.set_result(result)


_STOP = object()
_CONTAINED_AFTER_FAILURE = 64  # batches


def _begun(db: Session, batch: list[_Unit[Any]]) -> None:
    orders = sorted({unit.order for unit in batch if unit.order})
    for hook in _BEGIN_HOOKS:
        hook(db, orders)


@contextlib.contextmanager
def _undone_on_error(db: Session) -> Iterator[None]:
    """Roll a failed batch back before its session closes: what its units added becomes
    transient again, so a rerun adds and inserts it anew (closed without a rollback, a
    flushed row's object would stay detached with its key, as if stored, and a rerun
    would add it without an INSERT: seen as a team answered 201 and never written)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(SQLAlchemyError):
            db.rollback()
        raise


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
        # After a unit failed, this many batches run contained straight away: a stream
        # of failing units (replayed deliveries) does not run every batch twice.
        self._contained_for = 0

    def __repr__(self) -> str:
        return f"GroupCommit(batches={self.batches}, units={self.units})"

    async def run(self, work: Work[T], *, order: str = "") -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queued = time.perf_counter()
        self._put(_Unit(work, order, future, loop))
        # Shielded: a client that goes away does not un-ask; its unit still commits.
        result = await asyncio.shield(future)
        metrics.AUDIT_APPEND_LAG.observe(time.perf_counter() - queued)
        return result

    def run_blocking(self, work: Work[T], *, order: str = "") -> T:
        """`run` for a caller on a worker thread (never the writer thread itself)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put(_Unit(work, order, future))
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
                _settle([(unit, None, stopped) for unit in batch])
                return
            if stop:
                return

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        """Commit `batch`: first all its units together, without savepoints; if any of
        them fails (or the flush or commit does), the batch is rolled back and run again
        unit by unit in savepoints (`_commit_contained`), which fails only those units.
        Failures are rare, and a savepoint per unit cost more than its unit's own work
        (two statements, a flush each, and every chain head updated once per unit)."""
        if self._contained_for > 0:
            self._contained_for -= 1
            self._commit_contained(batch)
            return
        db = self._begin(batch)
        if db is None:
            return
        outcomes: list[Any] = []
        try:
            with db, _undone_on_error(db):
                _begun(db, batch)
                staged: dict[str, list[Any]] = {}
                db.info[_UNIT] = staged
                for unit in batch:
                    outcomes.append(unit.work(db))
                db.info.pop(_UNIT, None)
                self._finish(db, staged)
        except Exception as error:
            if len(batch) > 1:
                self._contained_for = _CONTAINED_AFTER_FAILURE
                self._commit_contained(batch)
            else:
                self._failed(batch[0], error)
            return
        self.batches += 1
        self.units += len(batch)
        _settle([(unit, result, None) for unit, result in zip(batch, outcomes, strict=True)])

    def _begin(self, batch: list[_Unit[Any]]) -> Session | None:
        """A session with the batch's transaction begun (the writer's slot, taken once
        for the whole batch); None when the database refused, the batch's units told."""
        db = None
        try:
            db = self._sessions()
            db.connection()  # BEGIN
        except Exception as error:  # busy, or no connection: the batch waits no more
            log.warning("group commit could not begin", error=type(error).__name__)
            if db is not None:
                db.close()
            _settle([(unit, None, error) for unit in batch])
            return None
        return db

    def _finish(self, db: Session, staged: dict[str, list[Any]]) -> None:
        db.flush()  # the units' own changes first: their flush events run now
        for kind, rows in staged.items():
            if rows:
                _FLUSHERS[kind](db, rows)
        for hook in _FINISH_HOOKS:
            hook(db)
        if self._before_commit is not None:
            self._before_commit(db)
        db.commit()

    @staticmethod
    def _failed(unit: _Unit[Any], error: BaseException) -> None:
        if not isinstance(error, BastionError):
            log.warning("group commit failed", error=type(error).__name__)
        _settle([(unit, None, error)])

    def _commit_contained(self, batch: list[_Unit[Any]]) -> None:
        """Each unit in a savepoint: one that raises is rolled back alone. A failure of
        the database itself ends the batch, and each unit runs again on its own."""
        db = self._begin(batch)
        if db is None:
            return
        outcomes: list[Outcome] = []
        try:
            with db, _undone_on_error(db):
                _begun(db, batch)
                staged: dict[str, list[Any]] = {}
                db.info[_BATCH] = staged
                for unit in batch:
                    outcomes.append((unit, *self._run_unit(db, unit, staged)))
                db.info.pop(_UNIT, None)
                db.info.pop(_BATCH, None)
                self._finish(db, staged)
        except Exception as error:
            if len(batch) == 1:
                self._failed(batch[0], error)
                return
            for unit in batch:  # one per transaction: only the units that fail again fail
                self._commit_contained([unit])
            return
        self.batches += 1
        self.units += len(batch)
        _settle(outcomes)

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
