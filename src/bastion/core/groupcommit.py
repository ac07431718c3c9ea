"""Group commit: many small units of work from concurrent requests in one transaction.

A hot write path whose requests each change a few rows (the tool-call gate: a budget
counter, the call, its audit event) spends most of its time beginning and committing,
and with one writer at a time (SQLite; a chain head on any database) concurrent
requests queue on the writer lock with a thread each. Here one writer thread per
process takes whatever units of work are waiting, runs them in one transaction and
commits once: each unit's changes (and its audit event) still commit together or not
at all, and a unit sees the units before it in the same batch.

If a batch fails, its units are run again one per transaction, so one faulty unit
fails alone. Units must therefore be safe to run again from scratch: they compute
their writes from their inputs and what they read in the transaction, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.orm import Session

from bastion.core.errors import BastionError

T = TypeVar("T")
Work = Callable[[Session], T]

log = structlog.get_logger(__name__)


@dataclass
class _Unit(Generic[T]):
    work: Work[T]
    order: str  # units of a batch run sorted by it: row locks taken in one order
    loop: asyncio.AbstractEventLoop = field(repr=False)
    future: asyncio.Future[T] = field(repr=False)


_STOP = object()


class GroupCommit:
    """`await group.run(work, order=…)` runs `work(session)` in the writer thread's
    next transaction and returns its result once that transaction has committed.
    `before_commit(session)`, if given, runs after a batch's units, before it commits:
    units may leave rows there for it to write together."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        before_commit: Callable[[Session], None] | None = None,
        max_batch: int = 256,
        linger: float = 0.0005,
    ) -> None:
        self._sessions = sessions
        self._before_commit = before_commit
        self._max = max_batch
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
        with self._lock:  # a unit is never queued behind the stop of a closing thread
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._queue.put(_Unit(work, order, loop, future))
        # Shielded: a client that goes away does not un-ask; its unit still commits.
        return await asyncio.shield(future)

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
            while len(batch) < self._max:
                try:
                    # A short linger lets concurrent requests join the batch: under load
                    # it costs far less than the transaction it saves.
                    unit = self._queue.get(timeout=self._linger)
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
                    _settle(unit, error=stopped)
                return
            if stop:
                return

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        try:
            with self._sessions() as db:
                results = [unit.work(db) for unit in batch]
                if self._before_commit is not None:
                    self._before_commit(db)
                db.commit()
        except Exception as error:
            if len(batch) == 1:
                if not isinstance(error, BastionError):
                    log.warning("group commit unit failed", error=type(error).__name__)
                _settle(batch[0], error=error)
                return
            for unit in batch:  # one per transaction: only the faulty unit fails
                self._commit([unit])
            return
        self.batches += 1
        self.units += len(batch)
        for unit, result in zip(batch, results, strict=True):
            _settle(unit, result=result)


def _settle(unit: _Unit[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    def done() -> None:
        if unit.future.done():
            return
        if error is not None:
            unit.future.set_exception(error)
        else:
            unit.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody left to tell
        unit.loop.call_soon_threadsafe(done)
