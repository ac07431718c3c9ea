"""Signed checkpoints catch what links alone cannot: a rewrite with recomputed hashes,
a cut tail with an edited head row, and a forged signature."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.context import Actor
from bastion.core.events import EventType
from tests.factories import Factory, Org


def _verify(client: TestClient, org: Org) -> dict[str, object]:
    response = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert response.status_code == 200
    return dict(response.json())


def _checkpoint(client: TestClient, org: Org) -> dict[str, object]:
    response = client.post(f"/v1/orgs/{org.id}/audit-checkpoints", headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _org_with_history(client: TestClient, factory: Factory, members: int = 3) -> Org:
    org = factory.org()
    for _ in range(members):
        factory.member(org, "viewer")
    return org


def test_checkpoint_signs_the_head_and_is_idempotent(client: TestClient, factory: Factory) -> None:
    org = _org_with_history(client, factory)
    first = _checkpoint(client, org)
    assert len(str(first["signature"])) == 128
    again = _checkpoint(client, org)  # nothing new since: the same checkpoint
    assert again["id"] == first["id"]
    listed = client.get(f"/v1/orgs/{org.id}/audit-checkpoints", headers=org.headers).json()["data"]
    assert [c["id"] for c in listed] == [first["id"]]
    result = _verify(client, org)
    assert result["valid"] is True
    assert result["checkpoints"] == 1


def _rewrite_everything(app, org_id: str) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with database access does: edit an event and recompute every
    hash after it, and the head row, so all links hold again."""
    with app.state.bastion.sessions() as db:
        events = list(
            db.execute(
                select(AuditEvent).where(AuditEvent.chain == org_id).order_by(AuditEvent.seq)
            ).scalars()
        )
        events[1].reason = "history rewritten"
        prev = events[0].hash
        for event in events[1:]:
            event.prev_hash = prev
            event.hash = audit.compute_hash(event)
            prev = event.hash
        db.execute(
            text("UPDATE audit_heads SET hash = :h WHERE chain = :c"), {"h": prev, "c": org_id}
        )
        db.commit()


def test_full_rewrite_after_a_checkpoint_is_detected(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = _org_with_history(client, factory)
    _checkpoint(client, org)
    _rewrite_everything(app, org.id)
    result = _verify(client, org)
    assert result["valid"] is False
    assert "checkpoint" in str(result["problem"])


def test_rewrite_without_a_checkpoint_is_not_detectable_by_links_alone(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    """Documents why checkpoints exist: the same rewrite passes when nothing was signed."""
    org = _org_with_history(client, factory)
    _rewrite_everything(app, org.id)
    assert _verify(client, org)["valid"] is True


def test_cut_tail_with_edited_head_is_detected(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = _org_with_history(client, factory)
    signed = _checkpoint(client, org)
    keep = int(str(signed["seq"])) - 2
    with app.state.bastion.engine.connect() as conn:
        last = conn.execute(
            text("SELECT hash FROM audit_events WHERE chain = :c AND seq = :s"),
            {"c": org.id, "s": keep},
        ).scalar_one()
    # Writes only in the tampering transaction: on SQLite, one that read first could not
    # take the write lock once the app's background work had written meanwhile.
    with app.state.bastion.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM audit_events WHERE chain = :c AND seq > :s"), {"c": org.id, "s": keep}
        )
        conn.execute(
            text("UPDATE audit_heads SET seq = :s, hash = :h WHERE chain = :c"),
            {"s": keep, "h": last, "c": org.id},
        )
    result = _verify(client, org)
    assert result["valid"] is False
    assert f"after {keep}" in str(result["problem"])


def test_forged_checkpoint_signature_is_detected(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = _org_with_history(client, factory)
    _checkpoint(client, org)
    with app.state.bastion.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_checkpoints SET signature = :s WHERE chain = :c"),
            {"s": "00" * 64, "c": org.id},
        )
    result = _verify(client, org)
    assert result["valid"] is False
    assert "signature" in str(result["problem"])


def test_concurrent_appends_never_fork_the_chain(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    state = app.state.bastion
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                with state.write_sessions() as db:
                    audit.record(
                        db,
                        type=EventType.TEAM_UPDATED,
                        actor=Actor("system", f"w{n}"),
                        org_id=org.id,
                        metadata={"i": i},
                    )
                    db.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = _verify(client, org)
    assert result["valid"] is True
    with state.sessions() as db:
        seqs = list(db.execute(select(AuditEvent.seq).where(AuditEvent.chain == org.id)).scalars())
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert len(seqs) >= 60
