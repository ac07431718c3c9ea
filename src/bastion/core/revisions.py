"""Per-organisation revision counters: what lets a cache keep an answer without ever
outliving a change.

Two counters per organisation (and `*` for changes not tied to one organisation):

- `AuthRevision`: what a credential may do (keys, sessions, users, roles, grants, the
  organisation, run tokens). The credential cache (`bastion.identity.authcache`) keeps
  an answer only while it is unchanged.
- `AuthzRevision`: the data-access model (teams, sources, documents, ACLs, rules,
  approval policies, agents). The authorization engine's indexes are valid for one
  (auth, authz) revision pair.

Core knows no domain: each domain declares, next to its models, which of them change
what a counter stands for (`watch(...)`). Every flush, and every bulk UPDATE or DELETE,
of a watched table bumps its organisation's counters in the same transaction, from
SQLAlchemy session events, so no service has to remember to. A bulk write names its
organisation with `core.db.org_scoped`; an unnamed one bumps the instance-wide counter,
which every cached answer depends on.

Bookkeeping writes (a declared set of columns, plus `updated_at` everywhere) and a
digest's move to the current pepper version (`REHASH_OPTION`) change nothing a cached
answer depends on, so they bump nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, event, func, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, aliased, mapped_column

from bastion.core import groupcommit
from bastion.core.db import ORG_SCOPE_OPTION, Base

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

# A credential's digest moved to the current pepper version by the request that just
# presented its secret (rehash on use): the same secret still matches, both the cached
# digest and the new one, so no cached answer changes. Only an UPDATE carrying this
# execution option and touching nothing but these columns is spared the bump; any
# other change of a stored digest (a new secret) invalidates as always.
REHASH_OPTION = "bastion_rehash"
_REHASH_COLUMNS = frozenset({"secret_hash", "token_hash", "pepper_version"})
# The time of a change is not a change: no watched table's `updated_at` alone bumps.
_ALWAYS_BOOKKEEPING = frozenset({"updated_at"})


@dataclass(frozen=True)
class _Watched:
    counters: tuple[Counter, ...]
    bookkeeping: frozenset[str]  # columns whose change alone never alters an answer
    inserts_change_nothing: bool  # a new row cannot be in any cached answer yet
    org_key: str  # the attribute naming the row's organisation


_WATCHED: dict[str, _Watched] = {}
_registering = threading.Lock()


def watch(
    *models: type[Base],
    counters: tuple[Counter, ...] = (AuthRevision,),
    bookkeeping: Iterable[str] = (),
    inserts_change_nothing: bool = False,
    org_key: str = "org_id",
) -> None:
    """Declare that writes to `models` change what `counters` stand for. Called by the
    domain that owns the models, at import (next to them). Declaring a table twice
    with different settings is a programming error."""
    spec = _Watched(
        counters=counters,
        bookkeeping=_ALWAYS_BOOKKEEPING | frozenset(bookkeeping),
        inserts_change_nothing=inserts_change_nothing,
        org_key=org_key,
    )
    with _registering:
        for model in models:
            table = str(model.__table__.name)  # type: ignore[attr-defined]
            if _WATCHED.setdefault(table, spec) != spec:
                raise ValueError(f"table {table} is already watched differently")


# --- reading, in the one query of a credential's check --------------------------------


def org_revision(org_id: Any) -> ColumnElement[int]:
    """The auth revision of the organisation `org_id` (a column or a value), 0 before
    its first bump: a primary-key read as part of the caller's query."""
    counter = aliased(AuthRevision)
    found = select(counter.revision).where(counter.org_id == org_id).scalar_subquery()
    return func.coalesce(found, 0)


def instance_revision() -> ColumnElement[int]:
    """The instance-wide auth revision, 0 before its first bump."""
    found = select(AuthRevision.revision).where(AuthRevision.org_id == INSTANCE)
    return func.coalesce(found.scalar_subquery(), 0)


# --- invalidation -------------------------------------------------------------------


def bump(db: Session, org_ids: set[str], counter: Counter = AuthRevision) -> None:
    """Advance `counter` for each org (in the caller's transaction; in a group-commit
    batch, once per org at the batch's end: see `_collect`)."""
    if not org_ids:
        return
    collected: dict[Counter, set[str]] | None = db.info.get(_COLLECTED)
    if collected is not None:
        collected.setdefault(counter, set()).update(org_ids)
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


# A group-commit batch's bumps, by counter, while its units run (session.info).
_COLLECTED = "bastion.revisions.collected"


def _collect(db: Session, _orders: list[str]) -> None:
    """A batch begins: its bumps wait for its end. Every unit of a batch changing the
    same organisation (team after team) then costs one UPDATE of its counter, not one
    per flush; readers see the counters only once the batch commits either way."""
    db.info[_COLLECTED] = {}


def _apply_collected(db: Session) -> None:
    """A batch ends (its changes flushed): advance each counter once per organisation.
    Later flushes in the transaction bump at once again."""
    collected: dict[Counter, set[str]] = db.info.pop(_COLLECTED, None) or {}
    for counter in (AuthRevision, AuthzRevision):  # a fixed order, as `bump` keeps
        if collected.get(counter):
            bump(db, collected[counter], counter)


groupcommit.on_begin(_collect)
groupcommit.on_finish(_apply_collected)


def _spec_of(obj: object, session: Session) -> _Watched | None:
    spec = _WATCHED.get(getattr(getattr(obj, "__table__", None), "name", ""))
    if spec is None:
        return None
    if obj in session.new:
        return None if spec.inserts_change_nothing else spec
    if obj in session.deleted:
        return spec
    changed = {attr.key for attr in inspect(obj).attrs if attr.history.has_changes()}
    return spec if changed - spec.bookkeeping else None


def _after_flush(session: Session, _flush_context: Any) -> None:
    touched: dict[Counter, set[str]] = {}
    for obj in (*session.new, *session.dirty, *session.deleted):
        spec = _spec_of(obj, session)
        if spec is None:
            continue
        org_id = getattr(obj, spec.org_key, None)
        for counter in spec.counters:
            touched.setdefault(counter, set()).add(org_id if isinstance(org_id, str) else INSTANCE)
    for counter, orgs in touched.items():
        bump(session, orgs, counter)


def _on_execute(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete):
        return None
    table = getattr(state.statement, "table", None)
    spec = _WATCHED.get(getattr(table, "name", None) or "")
    if spec is None:
        return None
    values = getattr(state.statement, "_values", None) or {}
    columns = {getattr(k, "key", str(k)) for k in values}
    if state.is_update and columns and columns <= spec.bookkeeping:
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
    for counter in spec.counters:
        bump(state.session, {org if isinstance(org, str) else INSTANCE}, counter)
    return result


_installed = threading.Lock()


def install() -> None:
    """Register the invalidation hooks on every SQLAlchemy session (idempotent). The
    caller (the app, the CLI) imports every domain first (`bastion.registry`), so every
    watched table is declared before the first write."""
    with _installed:
        if not event.contains(Session, "after_flush", _after_flush):
            event.listen(Session, "after_flush", _after_flush)
            event.listen(Session, "do_orm_execute", _on_execute)
