"""A per-process cache of authenticated credentials that never outlives a change.

Every write that can change what a credential may do (a key, session, user, service
account, custom role, grant or organisation row; an agent run's revocation; any change
to an agent) bumps its organisation's *auth revision* in the same transaction, from
SQLAlchemy session events, so no service has to remember to. A cached answer is used only while

- the bearer's secret still matches (checked on every request, constant time),
- the organisation's revision and the instance-wide revision are unchanged (one
  primary-key read per request, so a change on any worker or replica is seen by the
  very next request everywhere), and
- no time-based limit has passed: expiry, idle and absolute timeouts, a grant's end, a
  rotated key's overlap. These are evaluated at decision time from the cached values;
  anything that would refuse the credential goes back to the database.

Rejections are never cached. Bookkeeping writes (`last_seen_at`, `last_used_at`) and a
digest's move to the current pepper version (rehash on use) do not bump the revision.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from bastion.agents.models import Agent, Run
from bastion.approvals.models import ApprovalPolicy
from bastion.authz.models import AclEntry, AuthzRule, Document, Role, RoleGrant, Source
from bastion.core.db import ORG_SCOPE_OPTION, AsyncDirectReader, Base, DirectReader
from bastion.core.principal import Principal
from bastion.identity.models import ApiKey, ServiceAccount, User, UserSession
from bastion.tenancy.models import Organization, Team, TeamMember

INSTANCE = "*"  # the instance-wide revision, bumped by changes not tied to one org


class AuthRevision(Base):
    """One counter per organisation (and `*` for the instance); see the module doc."""

    __tablename__ = "auth_revisions"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class AuthzRevision(Base):
    """One counter per organisation for the data-access model (teams, sources,
    documents, ACLs, metadata rules); the authorization engine's indexes are valid
    for one (auth, authz) revision pair."""

    __tablename__ = "authz_revisions"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


Counter = type[AuthRevision] | type[AuthzRevision]
_AUTH_MODELS: tuple[type[Base], ...] = (
    ApiKey,
    UserSession,
    User,
    ServiceAccount,
    Role,
    RoleGrant,
    Organization,
    Run,
)
_AUTHZ_MODELS: tuple[type[Base], ...] = (
    Team,
    TeamMember,
    Source,
    Document,
    AclEntry,
    AuthzRule,
    ApprovalPolicy,
)


def _table(model: type[Base]) -> str:
    return str(model.__table__.name)  # type: ignore[attr-defined]


_COUNTERS: dict[str, tuple[Counter, ...]] = {
    **{_table(m): (AuthRevision,) for m in _AUTH_MODELS},
    **{_table(m): (AuthzRevision,) for m in _AUTHZ_MODELS},
    # An agent is part of the data-access model, and its run tokens live only as long
    # as it does: a change to it invalidates both.
    _table(Agent): (AuthzRevision, AuthRevision),
}
# Tables whose new rows cannot change any cached answer (a run's token is not cached
# before it is first used), so inserting them bumps nothing.
_INSERTS_HARMLESS = frozenset({_table(Run)})
# Columns whose change never alters what a credential may do.
_BOOKKEEPING = frozenset(
    {"last_seen_at", "last_used_at", "last_used_ip", "updated_at", "tool_calls"}
)
# A credential's digest moved to the current pepper version by the request that just
# presented its secret (rehash on use): the same secret still matches, both the cached
# digest and the new one, so no cached answer changes. Only an UPDATE carrying this
# execution option and touching nothing but these columns is spared the bump; any
# other change of a stored digest (a new secret) invalidates as always.
REHASH_OPTION = "bastion_rehash"
_REHASH_COLUMNS = frozenset({"secret_hash", "token_hash", "pepper_version"})


# --- invalidation -------------------------------------------------------------------


def bump(db: Session, org_ids: set[str], counter: Counter = AuthRevision) -> None:
    """Advance `counter` for each org (in the caller's transaction)."""
    if not org_ids:
        return
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    connection = db.connection()
    for org_id in sorted(org_ids):  # a fixed order: concurrent bumps never deadlock
        stmt = insert(counter).values(org_id=org_id, revision=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[counter.org_id],
            set_={"revision": counter.revision + 1},
        )
        connection.execute(stmt)


def _counters_of(obj: object, session: Session) -> tuple[Counter, ...]:
    table = getattr(getattr(obj, "__table__", None), "name", "")
    counters = _COUNTERS.get(table, ())
    if not counters:
        return ()
    if obj in session.new:
        return () if table in _INSERTS_HARMLESS else counters
    if obj in session.deleted:
        return counters
    from sqlalchemy import inspect

    state = inspect(obj)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
    return counters if changed - _BOOKKEEPING else ()


def _after_flush(session: Session, _flush_context: Any) -> None:
    touched: dict[Counter, set[str]] = {}
    for obj in (*session.new, *session.dirty, *session.deleted):
        for counter in _counters_of(obj, session):
            org_id = obj.id if isinstance(obj, Organization) else getattr(obj, "org_id", None)
            touched.setdefault(counter, set()).add(org_id if isinstance(org_id, str) else INSTANCE)
    for counter, orgs in touched.items():
        bump(session, orgs, counter)


def _on_execute(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete):
        return None
    table = getattr(state.statement, "table", None)
    counters = _COUNTERS.get(getattr(table, "name", None) or "", ())
    if not counters:
        return None
    values = getattr(state.statement, "_values", None) or {}
    columns = {getattr(k, "key", str(k)) for k in values}
    if state.is_update and columns and columns <= _BOOKKEEPING:
        return None
    if (
        state.is_update
        and state.execution_options.get(REHASH_OPTION)
        and columns
        and columns <= _REHASH_COLUMNS
    ):
        return None
    result = state.invoke_statement()
    org = state.execution_options.get(ORG_SCOPE_OPTION)
    for counter in counters:
        bump(state.session, {org if isinstance(org, str) else INSTANCE}, counter)
    return result


_installed = threading.Lock()


def install() -> None:
    """Register the invalidation hooks on every SQLAlchemy session (idempotent)."""
    with _installed:
        if not event.contains(Session, "after_flush", _after_flush):
            event.listen(Session, "after_flush", _after_flush)
            event.listen(Session, "do_orm_execute", _on_execute)


# --- the cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A credential that authenticated, as of revisions (`org_rev`, `instance_rev`)."""

    kind: str
    stored_hash: str
    pepper_version: int
    principal: Principal
    org_rev: int
    instance_rev: int
    valid_until: datetime | None  # the earliest instant a time-based limit applies
    last_touched: datetime
    touch_every: float  # seconds between bookkeeping writes (`last_seen_at`/`last_used_at`)
    networks: frozenset[str] = frozenset()  # an API key's networks seen so far


Revisions = tuple[int, int]
_REVISIONS_SQL = "SELECT org_id, revision FROM auth_revisions WHERE org_id = ? OR org_id = ?"


def _revisions(rows: list[tuple[Any, ...]], org_id: str) -> Revisions:
    found = {row[0]: int(row[1]) for row in rows}
    return found.get(org_id, 0), found.get(INSTANCE, 0)


class AuthCache:
    """Bounded LRU of `Entry` by credential row id; thread-safe."""

    def __init__(
        self,
        reader: DirectReader,
        async_reader: AsyncDirectReader | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._reader = reader
        self._async_reader = async_reader
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"AuthCache(entries={len(self._entries)}, max={self._max})"

    @property
    def local(self) -> bool:
        """Whether a revision read is a local file read (SQLite), cheap enough to run on
        the event loop."""
        return self._reader.local

    def revisions(self, org_id: str) -> Revisions | None:
        """The org's and the instance's current revisions; None when they cannot be
        read (the caller then takes the database path)."""
        try:
            rows = self._reader.fetchall(_REVISIONS_SQL, (org_id, INSTANCE))
        except Exception:  # any driver error: not a cache hit, never an allow
            return None
        return _revisions(rows, org_id)

    async def aclose(self) -> None:
        if self._async_reader is not None:
            await self._async_reader.aclose()

    async def revisions_async(self, org_id: str) -> Revisions | None:
        """`revisions`, awaited on the event loop when an async reader is configured."""
        if self._async_reader is None:
            return self.revisions(org_id)
        try:
            rows = await self._async_reader.fetchall(_REVISIONS_SQL, (org_id, INSTANCE))
        except Exception:  # any driver error: not a cache hit, never an allow
            return None
        return _revisions(rows, org_id)

    def get(self, row_id: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(row_id)
            if entry is not None:
                self._entries.move_to_end(row_id)
            return entry

    def put(self, row_id: str, entry: Entry) -> None:
        with self._lock:
            self._entries[row_id] = entry
            self._entries.move_to_end(row_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, row_id: str) -> None:
        with self._lock:
            self._entries.pop(row_id, None)

    def update(self, row_id: str, change: Callable[[Entry], Entry]) -> None:
        with self._lock:
            entry = self._entries.get(row_id)
            if entry is not None:
                self._entries[row_id] = change(entry)

    def __len__(self) -> int:
        return len(self._entries)
