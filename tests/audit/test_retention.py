"""Retention purges old events through a signed checkpoint; what remains still verifies."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from bastion.audit import checkpoints
from bastion.audit.models import AuditEvent
from bastion.core.clock import clock
from bastion.tenancy import service as tenancy
from tests.factories import Factory, Org


def _seqs(app, org: Org) -> list[int]:  # type: ignore[no-untyped-def]
    with app.state.bastion.sessions() as db:
        return list(
            db.execute(
                select(AuditEvent.seq).where(AuditEvent.chain == org.id).order_by(AuditEvent.seq)
            ).scalars()
        )


def _maintain(app) -> list[tenancy.retention.Purge]:  # type: ignore[no-untyped-def]
    state = app.state.bastion
    with state.write_sessions() as db:
        checkpoints.create_all(db, state.audit_signer)
        results = tenancy.apply_audit_retention(db)
        db.commit()
    return results


def _verify(client: TestClient, org: Org) -> dict[str, object]:
    return dict(client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers).json())


def test_old_events_are_purged_and_the_rest_verifies(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    factory.member(org, "viewer")
    _maintain(app)  # checkpoint covering the old events
    old = _seqs(app, org)
    clock.advance(366 * 86400)
    factory.member(org, "viewer")  # new activity, inside the retention period
    results = {r.chain: r for r in _maintain(app)}
    assert results[org.id].purged == len(old)
    remaining = _seqs(app, org)
    assert remaining[0] == old[-1] + 1
    result = _verify(client, org)
    assert result["valid"] is True, result
    purged = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "audit.purged"}, headers=org.headers
    ).json()["data"]
    assert purged[0]["metadata"]["purged"] == len(old)


def test_nothing_is_purged_inside_the_retention_period(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    assert (
        client.patch(
            f"/v1/orgs/{org.id}", json={"audit_retention_days": 30}, headers=org.headers
        ).status_code
        == 200
    )
    _maintain(app)
    before = _seqs(app, org)
    clock.advance(29 * 86400)
    _maintain(app)
    assert _seqs(app, org)[: len(before)] == before
    clock.advance(2 * 86400)
    _maintain(app)
    assert _seqs(app, org)[0] > before[-1]


def test_a_chain_that_does_not_verify_is_never_purged(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    factory.member(org, "viewer")
    _maintain(app)
    with app.state.bastion.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET reason = 'x' WHERE chain = :c AND seq = 2"), {"c": org.id}
        )
    before = _seqs(app, org)
    clock.advance(400 * 86400)
    results = {r.chain: r for r in _maintain(app)}
    assert results[org.id].refused
    assert results[org.id].purged == 0
    assert _seqs(app, org)[: len(before)] == before


def test_retention_period_is_validated(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = client.patch(
        f"/v1/orgs/{org.id}", json={"audit_retention_days": 1}, headers=org.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "audit_retention_days"
    got = client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert got["audit_retention_days"] == 90  # the default for new organisations
