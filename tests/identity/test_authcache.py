"""The credential cache never outlives a change: two apps on one database stand for two
workers; a change made through one is refused by the other's warm cache at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from bastion.api.app import create_app
from bastion.core.context import Actor
from bastion.core.db import DirectReader, begin_write, make_engine
from bastion.core.revisions import INSTANCE, AuthRevision
from bastion.identity.authcache import AuthCache
from bastion.identity.authenticate import authenticate
from bastion.identity.models import ApiKey, UserSession
from tests.conftest import make_settings
from tests.factories import Factory, bearer


@pytest.fixture
def other(data_dir: Path, database_url: str) -> Iterator[TestClient]:
    """A second worker: its own app, its own cache, the same database."""
    app = create_app(make_settings(data_dir, database_url))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _warm(client: TestClient, headers: dict[str, str]) -> None:
    cache = client.app.state.bastion.auth_cache  # type: ignore[attr-defined]
    before = cache.hits
    for _ in range(3):
        assert client.get("/v1/me", headers=headers).status_code == 200
    assert cache.hits >= before + 2  # served from the cache


def test_revocation_elsewhere_is_seen_by_a_warm_cache(
    client: TestClient, other: TestClient, factory: Factory
) -> None:
    org = factory.org()
    created = factory.api_key(org, "viewer")
    _warm(other, bearer(created["key"]))
    assert (
        client.delete(
            f"/v1/orgs/{org.id}/api-keys/{created['id']}", headers=org.headers
        ).status_code
        == 204
    )
    assert other.get("/v1/me", headers=bearer(created["key"])).status_code == 401


def test_logout_suspension_and_role_change_elsewhere(
    client: TestClient, other: TestClient, factory: Factory
) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    _warm(other, viewer.headers)
    assert client.post("/v1/auth/logout", headers=viewer.headers).status_code == 204
    assert other.get("/v1/me", headers=viewer.headers).status_code == 401

    manager = factory.member(org, "manager")
    _warm(other, manager.headers)
    client.patch(
        f"/v1/orgs/{org.id}/users/{manager.user_id}", json={"role": "viewer"}, headers=org.headers
    )
    assert other.get("/v1/me", headers=manager.headers).json()["role"] == "viewer"
    client.patch(
        f"/v1/orgs/{org.id}/users/{manager.user_id}",
        json={"status": "suspended"},
        headers=org.headers,
    )
    assert other.get("/v1/me", headers=manager.headers).status_code == 401


def test_a_wrong_secret_is_refused_even_when_the_row_is_cached(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    _warm(client, org.headers)
    forged = org.admin_key[:-4] + ("AAAA" if not org.admin_key.endswith("AAAA") else "BBBB")
    assert client.get("/v1/me", headers=bearer(forged)).status_code == 401


def test_bookkeeping_does_not_invalidate_but_other_bulk_writes_do(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    factory.org()
    state = app.state.bastion

    def revision(org_id: str) -> int:
        with state.sessions() as db:
            value = db.execute(
                select(AuthRevision.revision).where(AuthRevision.org_id == org_id)
            ).scalar_one_or_none()
            return int(value or 0)

    before = revision(INSTANCE)
    with state.sessions() as db:
        begin_write(db)
        db.execute(update(ApiKey).where(ApiKey.id == "key_none").values(last_used_at=None))
        db.execute(
            update(UserSession).where(UserSession.id == "ses_none").values(last_seen_at=None)
        )
        db.commit()
    assert revision(INSTANCE) == before
    with state.sessions() as db:
        begin_write(db)
        db.execute(update(ApiKey).where(ApiKey.id == "key_none").values(revoked_at=None))
        db.commit()
    assert revision(INSTANCE) == before + 1  # an unattributed bulk write flushes everyone


def test_an_unreadable_revision_is_never_a_hit(
    app,
    factory: Factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    org = factory.org()
    state = app.state.bastion
    broken = AuthCache(DirectReader(make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")))
    actor = Actor("anonymous", None)
    with state.sessions() as db:
        first = authenticate(db, org.admin_key, actor, state.hasher, broken)
        assert first.principal.org_id == org.id  # the database path answered
    assert broken.revisions(org.id) is None
    assert broken.hits == 0
    with state.sessions() as db:
        authenticate(db, org.admin_key, actor, state.hasher, broken)
    assert broken.hits == 0  # every request went to the database
