"""The revision registry: a table bumps counters only once its domain declared it,
bookkeeping columns alone bump nothing, and a table cannot be declared twice
differently."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import String, create_engine, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion.core import revisions
from bastion.core.db import org_scoped
from bastion.core.revisions import INSTANCE, AuthRevision, AuthzRevision


class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    """A table of a made-up domain, outside Bastion's schema."""

    __tablename__ = "revision_test_things"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(40), default="")
    seen: Mapped[str] = mapped_column(String(40), default="")


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.setattr(revisions, "_WATCHED", dict(revisions._WATCHED))
    revisions.install()
    engine = create_engine("sqlite://")
    _Base.metadata.create_all(engine)
    for counter in (AuthRevision, AuthzRevision):
        counter.__table__.create(engine)  # type: ignore[attr-defined]
    with Session(engine) as session:
        yield session
    engine.dispose()


def _revision(db: Session, org_id: str, counter: revisions.Counter = AuthRevision) -> int:
    found = db.execute(select(counter.revision).where(counter.org_id == org_id)).scalar()
    return int(found or 0)


def test_an_undeclared_table_bumps_nothing(db: Session) -> None:
    db.add(Thing(id="t1", org_id="org_a"))
    db.flush()
    assert _revision(db, "org_a") == 0


def test_a_declared_table_bumps_its_org_except_for_bookkeeping(db: Session) -> None:
    revisions.watch(Thing, counters=(AuthzRevision,), bookkeeping={"seen"})
    db.add(Thing(id="t1", org_id="org_a"))
    db.flush()
    assert (_revision(db, "org_a", AuthzRevision), _revision(db, "org_a")) == (1, 0)
    thing = db.get(Thing, "t1")
    assert thing is not None
    thing.seen = "now"
    db.flush()
    assert _revision(db, "org_a", AuthzRevision) == 1
    thing.name = "renamed"
    db.flush()
    assert _revision(db, "org_a", AuthzRevision) == 2
    db.execute(update(Thing).values(seen="later"))
    db.execute(update(Thing).values(name="bulk"), execution_options=org_scoped("org_a"))
    assert _revision(db, "org_a", AuthzRevision) == 3
    db.execute(update(Thing).values(name="anyone"))
    assert _revision(db, INSTANCE, AuthzRevision) == 1


def test_new_rows_may_be_declared_harmless(db: Session) -> None:
    revisions.watch(Thing, inserts_change_nothing=True)
    db.add(Thing(id="t1", org_id="org_a"))
    db.flush()
    assert _revision(db, "org_a") == 0
    thing = db.get(Thing, "t1")
    assert thing is not None
    db.delete(thing)
    db.flush()
    assert _revision(db, "org_a") == 1


def test_a_table_is_declared_once(db: Session) -> None:
    revisions.watch(Thing)
    revisions.watch(Thing)  # the same declaration again: harmless
    with pytest.raises(ValueError, match="already watched"):
        revisions.watch(Thing, counters=(AuthzRevision,))


def test_every_domain_declared_its_tables() -> None:
    import bastion.registry  # noqa: F401 - every domain, as the app and the CLI load them

    auth = {"api_keys", "sessions", "users", "service_accounts", "roles", "role_grants"}
    auth |= {
        "organizations",
        "agent_runs",
        "agents",
        "scim_tokens",
        "oauth_clients",
        "oauth_revoked_tokens",
    }
    authz = {"teams", "team_members", "sources", "documents", "acl_entries", "authz_rules"}
    authz |= {"approval_policies", "agents", "mcp_servers", "privacy_policies"}
    assert {t for t, w in revisions._WATCHED.items() if AuthRevision in w.counters} == auth
    assert {t for t, w in revisions._WATCHED.items() if AuthzRevision in w.counters} == authz
