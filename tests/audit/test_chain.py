"""The audit hook: events written with the change, per-org hash chain, tamper detection."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bastion.audit import service as audit
from tests.factories import Factory, Org, home_factory, unique_email


@pytest.fixture
def factory(app, client: TestClient) -> Factory:  # type: ignore[no-untyped-def]
    """Organisations in the home region: these tests read and change rows directly."""
    return home_factory(app.state.bastion, client)


def _events(client: TestClient, org: Org, **params: object) -> list[dict[str, object]]:
    response = client.get(f"/v1/orgs/{org.id}/audit-events", params=params, headers=org.headers)
    assert response.status_code == 200
    return list(response.json()["data"])


def _verify(client: TestClient, org: Org) -> dict[str, object]:
    response = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert response.status_code == 200
    return dict(response.json())


def _populated(client: TestClient, factory: Factory) -> Org:
    org = factory.org()
    for _ in range(3):
        factory.member(org, "viewer")
    return org


def test_every_change_is_audited_with_who_what_where(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "viewer")
    events = _events(client, org, type="user.created", resource=member.user_id)
    assert len(events) == 1
    event = events[0]
    assert event["actor"]["type"] == "api_key"
    assert event["actor"]["ip"]
    assert event["outcome"] == "success"
    assert event["request_id"]
    assert event["metadata"]["role"] == "viewer"


def test_request_id_is_recorded(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    client.post(
        f"/v1/orgs/{org.id}/teams",
        json={"name": "audited"},
        headers={**org.headers, "X-Request-ID": "trace-123"},
    )
    assert _events(client, org, type="team.created")[0]["request_id"] == "trace-123"


def test_a_failed_change_leaves_no_event(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    email = unique_email()
    assert (
        client.post(
            f"/v1/orgs/{org.id}/users", json={"email": email, "role": "viewer"}, headers=org.headers
        ).status_code
        == 201
    )
    before = len(_events(client, org, type="user.created"))
    dup = client.post(
        f"/v1/orgs/{org.id}/users", json={"email": email, "role": "viewer"}, headers=org.headers
    )
    assert dup.status_code == 409
    assert len(_events(client, org, type="user.created")) == before


def test_403_is_audited_as_denied(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    response = client.post(
        f"/v1/orgs/{org.id}/teams", json={"name": "nope"}, headers=viewer.headers
    )
    assert response.status_code == 403
    denied = _events(client, org, type="authz.denied", actor=viewer.user_id)
    assert len(denied) == 1
    assert denied[0]["outcome"] == "denied"
    assert denied[0]["metadata"]["permission"] == "teams:manage"


def test_clean_chain_verifies(client: TestClient, factory: Factory) -> None:
    org = _populated(client, factory)
    result = _verify(client, org)
    assert result["valid"] is True
    assert result["checked"] >= 8
    assert result["first_invalid"] is None


def _tamper(app, sql: str, **params: object) -> None:  # type: ignore[no-untyped-def]
    with app.state.bastion.engine.begin() as conn:
        conn.execute(text(sql), params)


def _nth(client: TestClient, org: Org, seq: int) -> str:
    return next(str(e["id"]) for e in _events(client, org, limit=200) if e["seq"] == seq)


@pytest.mark.parametrize(
    "how",
    ["edit", "delete", "reorder", "insert", "truncate", "not_json", "bytes"],
)
def test_tampering_is_detected_at_the_right_event(
    client: TestClient, factory: Factory, app, how: str
) -> None:  # type: ignore[no-untyped-def]
    org = _populated(client, factory)
    target = _nth(client, org, 4)
    expected: str | None = target
    if how == "edit":
        _tamper(
            app, "UPDATE audit_events SET reason = 'nothing happened' WHERE id = :id", id=target
        )
    elif how == "delete":
        expected = _nth(client, org, 5)
        _tamper(app, "DELETE FROM audit_events WHERE id = :id", id=target)
    elif how == "reorder":
        other = _nth(client, org, 5)
        _tamper(app, "UPDATE audit_events SET seq = -1 WHERE id = :id", id=target)
        _tamper(app, "UPDATE audit_events SET seq = 4 WHERE id = :id", id=other)
        _tamper(app, "UPDATE audit_events SET seq = 5 WHERE id = :id", id=target)
        expected = other
    elif how == "insert":
        shift = "UPDATE audit_events SET seq = seq + :by WHERE chain = :chain AND seq >= :at"
        _tamper(app, shift, by=1_000_000, chain=org.id, at=4)  # two steps: seq is unique
        _tamper(app, shift, by=-999_999, chain=org.id, at=1_000_000)
        _tamper(
            app,
            "INSERT INTO audit_events (id, chain, seq, org_id, time, type, actor_type, outcome, "
            "metadata, prev_hash, hash) SELECT 'evt_FORGED', chain, 4, org_id, time, type, "
            "actor_type, outcome, metadata, prev_hash, hash FROM audit_events WHERE id = :id",
            id=target,
        )
        expected = "evt_FORGED"
    elif how in ("not_json", "bytes"):  # what no event is written as: SQLite only
        if app.state.bastion.engine.dialect.name != "sqlite":
            pytest.skip("PostgreSQL's column types refuse such values")
        sql = {
            "not_json": "UPDATE audit_events SET metadata = 'not json {' WHERE id = :id",
            "bytes": "UPDATE audit_events SET reason = X'00ff' WHERE id = :id",
        }[how]
        _tamper(app, sql, id=target)
    elif how == "truncate":
        last = max(int(e["seq"]) for e in _events(client, org, limit=200))
        _tamper(
            app,
            "DELETE FROM audit_events WHERE chain = :chain AND seq >= :s",
            chain=org.id,
            s=last - 1,
        )
        expected = None
    result = _verify(client, org)
    assert result["valid"] is False
    assert result["first_invalid"] == expected


def test_chains_are_per_org(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    a, b = _populated(client, factory), _populated(client, factory)
    _tamper(app, "UPDATE audit_events SET reason = 'x' WHERE id = :id", id=_nth(client, a, 2))
    assert _verify(client, a)["valid"] is False
    assert _verify(client, b)["valid"] is True


def test_canonical_encoding_covers_every_field(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    with app.state.bastion.sessions() as db:
        event = next(audit.iter_chain(db, org.id))
        original = audit.compute_hash(event)
        for field, value in [
            ("actor_ip", "10.9.9.9"),
            ("request_id", "other"),
            ("outcome", "failure"),
            ("resource_id", "usr_x"),
            ("type", "org.updated"),
        ]:
            saved = getattr(event, field)
            setattr(event, field, value)
            assert audit.compute_hash(event) != original, field
            setattr(event, field, saved)
        assert audit.compute_hash(event) == original
        db.rollback()


def test_an_append_after_an_unlocked_read_of_the_head_continues_the_chain(
    factory: Factory, app, backend: str
) -> None:  # type: ignore[no-untyped-def]
    """A transaction that read the head before another writer appended (a checkpoint
    does) must append after that writer's event, not after the one it first saw."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers from their first statement: no stale read")
    from bastion.audit.models import AuditHead
    from bastion.core.context import Actor
    from bastion.core.events import EventType

    org = factory.org()
    state = app.state.bastion
    system = Actor("system", None, None, None, None)
    with state.write_sessions() as first:
        seen = first.get(AuditHead, org.id)  # unlocked, now in the session
        assert seen is not None
        with state.write_sessions() as second:
            audit.record(second, type=EventType.TEAM_CREATED, actor=system, org_id=org.id)
            second.commit()
        event = audit.record(first, type=EventType.TEAM_CREATED, actor=system, org_id=org.id)
        first.commit()
    assert event.seq == seen.seq  # the head it wrote is the locked one, one past the other
    with state.sessions() as db:
        assert audit.verify(db, org.id).valid
