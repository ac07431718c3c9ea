"""Personal values beside the hash (`bastion.audit.pii`): an event about a user keeps
their email readable and hashes a salted commitment to it; erasure swaps the value for a
pseudonym and the chain still verifies; altering the value or the commitment is found."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import pii
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.context import SYSTEM
from bastion.core.events import EventType
from tests.factories import Factory


def _record(db: Session, org_id: str, user_id: str, email: str) -> AuditEvent:
    event = audit.record(
        db,
        type=EventType.USER_DELETED,
        actor=SYSTEM,
        org_id=org_id,
        resource=("user", user_id),
        metadata={"email": email},
    )
    assert event is not None
    db.flush()
    return event


def test_protect_hashed_erased_round_trip() -> None:
    meta = pii.protect({"email": "ann@example.com", "role": "admin"})
    entry = meta["_pii"]["email"]
    assert set(entry) == {"c", "s"}
    assert meta["email"] == "ann@example.com"
    assert pii.hashed(meta) == {"role": "admin", "_pii": {"email": {"c": entry["c"]}}}
    assert pii.problem(meta) is None
    gone = pii.erased(meta)
    assert gone is not None
    assert gone["email"] == pii.pseudonym(entry["c"])
    assert "s" not in gone["_pii"]["email"]
    assert pii.hashed(gone) == pii.hashed(meta)  # the hashed bytes do not move
    assert pii.problem(gone) is None
    assert pii.erased(gone) is None  # nothing left to erase
    # The same value twice: different salts, different commitments (no linking).
    assert pii.protect({"email": "ann@example.com"})["_pii"]["email"]["c"] != entry["c"]
    assert pii.protect({"role": "admin"}) == {"role": "admin"}  # nothing personal
    assert pii.problem({**meta, "email": "eve@example.com"}) == "personal value 'email' altered"
    assert pii.problem({**gone, "email": "eve@example.com"}) == "personal value 'email' altered"
    assert pii.problem({**meta, "_pii": "x"}) == "personal values malformed"


def _verify(db: Session, org_id: str) -> Any:
    return audit.verify(db, org_id)


def test_erasure_keeps_the_chain_and_tampering_is_found(factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    with factory.state.write_sessions() as db:
        mine = _record(db, org.id, "usr_person", "person@example.com")
        kept = _record(db, org.id, "usr_bystander", "bystander@example.com")
        theirs = _record(db, other.id, "usr_person", "person@example.com")
        db.commit()
        assert audit.pseudonymise_subject(db, org.id, "usr_person") == 1
        db.commit()
        rows = {
            e.id: e.event_metadata
            for e in db.execute(
                select(AuditEvent).where(AuditEvent.id.in_([mine.id, kept.id, theirs.id]))
            ).scalars()
        }
        assert rows[mine.id]["email"].startswith("pii_")
        assert "s" not in rows[mine.id]["_pii"]["email"]
        assert rows[kept.id]["email"] == "bystander@example.com"  # another person
        assert rows[theirs.id]["email"] == "person@example.com"  # another organisation
        assert _verify(db, org.id).valid
        assert _verify(db, other.id).valid
        assert audit.pseudonymise_subject(db, org.id, "usr_person") == 0
        # A value altered beside the hash is found by verification.
        row = db.get(AuditEvent, kept.id)
        assert row is not None
        row.event_metadata = {**row.event_metadata, "email": "eve@example.com"}
        db.commit()
        result = _verify(db, org.id)
        assert not result.valid
        assert result.first_invalid == kept.id
        assert result.problem == "personal value 'email' altered"
