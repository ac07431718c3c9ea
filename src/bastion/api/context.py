"""Per-request state shared by the middleware and the route dependencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from bastion.core import groupcommit
from bastion.core.context import Actor
from bastion.core.db import DirectReader, read_aside
from bastion.core.ratelimit import Quota

if TYPE_CHECKING:
    from bastion.core.principal import Principal

SCOPE_KEY = "bastion.ctx"
STARTED_KEY = "bastion.started"  # perf_counter() when the middleware took the request
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class RequestContext:
    request_id: str
    ip: str | None
    user_agent: str | None
    method: str
    path: str
    sessions: sessionmaker[Session] = field(repr=False)
    write_sessions: sessionmaker[Session] = field(repr=False)
    # The headers the middleware and the lean routes read, first value each, read once.
    headers: dict[bytes, str] = field(default_factory=dict, repr=False)
    # Where the reader's hot-path reads go (`bastion.core.db.fetch`).
    direct: DirectReader | None = field(default=None, repr=False)
    principal: Principal | None = None
    quota: Quota | None = None
    status: int = 0  # of the response started (0: none yet), for the request log
    failure_events: list[dict[str, Any]] = field(default_factory=list)
    # Writes a refusal asks for despite the rollback (`BastionError.with_write`), run
    # with the failure events.
    failure_writes: list[Callable[[Session], None]] = field(default_factory=list)
    after_commit: list[Callable[[Session], None]] = field(default_factory=list)
    _db: Session | None = field(default=None, repr=False)
    deferring: bool = False  # the session is a reader whose writes go as one unit
    unit_order: str | None = None  # its unit's place in a batch (default: the caller's org)
    # A problem that replaces the route's answer: its unit failed (see the middleware).
    replacement: tuple[int, dict[str, str], bytes] | None = field(default=None, repr=False)

    @property
    def actor(self) -> Actor:
        if self.principal is not None:
            return self.principal.actor
        return Actor("anonymous", None, self.ip, self.user_agent, self.request_id)

    @property
    def db(self) -> Session:
        """The request's unit of work, opened on first use; committed by the middleware."""
        if self._db is None:
            factory = self.sessions if self.method in SAFE_METHODS else self.write_sessions
            self._db = factory()  # no I/O until the first statement
        return self._db

    @property
    def reader(self) -> Session:
        """The request's reader, for a route whose writes are a group-commit unit: it
        reads outside any write transaction, and what services write through it is held
        (`bastion.core.groupcommit.defer`) and handed to the app's writer by the
        middleware, with the idempotency record, before the response starts."""
        if self._db is None:
            self._db = self.sessions()
            groupcommit.deferring(self._db)
            if self.direct is not None:
                read_aside(self._db, self.direct)
            self.deferring = True
        elif not self.deferring:
            raise RuntimeError("the request's unit of work is already a writer")
        return self._db

    def end_read(self) -> None:
        """End a safe request's read transaction early (e.g. right after authentication),
        so a route that needs no further data finishes without another database trip."""
        if (
            self._db is not None
            and self.method in SAFE_METHODS
            and not (self._db.new or self._db.dirty or self._db.deleted)
        ):
            self._db.commit()

    @property
    def db_opened(self) -> Session | None:
        return self._db
