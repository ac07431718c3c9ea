"""Signed checkpoints over the audit chains (Ed25519, the instance signing keys).

A checkpoint signs `chain, seq, hash, time`. Verification checks every signature, that
the event at each checkpoint's `seq` still has the signed hash (a rewrite after the
checkpoint is caught even if every link was recomputed), and that no checkpoint points
past the end of the chain (a cut tail is caught even if the head row was edited too).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit.models import AuditCheckpoint, AuditHead
from bastion.core.clock import rfc3339, utcnow
from bastion.core.crypto import ed25519_verify
from bastion.core.ids import new_id
from bastion.core.signing import InstanceSigner

# Checkpoints are signed by the instance signing keys (`bastion.core.signing`), which
# also sign OAuth access tokens and reports; the names audit used before stay.
Signer = InstanceSigner


def statement(chain: str, seq: int, hash_: str, created_at: str) -> bytes:
    return f"bastion-audit-checkpoint:v1\n{chain}\n{seq}\n{hash_}\n{created_at}".encode()


def checkpoint_valid(cp: AuditCheckpoint, public_keys: Mapping[int, bytes]) -> bool:
    key = public_keys.get(cp.key_version)
    if key is None:
        return False
    try:
        signature = bytes.fromhex(cp.signature)
    except ValueError:
        return False
    return ed25519_verify(
        key, signature, statement(cp.chain, cp.seq, cp.hash, rfc3339(cp.created_at) or "")
    )


def latest(db: Session, chain: str) -> AuditCheckpoint | None:
    return db.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain == chain)
        .order_by(AuditCheckpoint.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def create(db: Session, chain: str, signer: Signer) -> AuditCheckpoint | None:
    """Sign the chain's current head; None when the newest checkpoint already covers it."""
    head = db.get(AuditHead, chain)
    if head is None or head.seq == 0:
        return None
    newest = latest(db, chain)
    if newest is not None and newest.seq >= head.seq:
        return None
    created_at = utcnow()
    version, signature = signer.sign(
        statement(chain, head.seq, head.hash, rfc3339(created_at) or "")
    )
    checkpoint = AuditCheckpoint(
        id=new_id("chk"),
        chain=chain,
        seq=head.seq,
        hash=head.hash,
        created_at=created_at,
        key_version=version,
        signature=signature.hex(),
    )
    try:
        with db.begin_nested():
            db.add(checkpoint)
    except IntegrityError:
        return None  # another worker signed the same head
    return checkpoint


def create_all(db: Session, signer: Signer) -> int:
    """Checkpoint every chain with events newer than its last checkpoint."""
    made = 0
    for chain in list(db.execute(select(AuditHead.chain)).scalars()):
        if create(db, chain, signer) is not None:
            made += 1
    return made


def for_chain(db: Session, chain: str) -> list[AuditCheckpoint]:
    return list(
        db.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.chain == chain)
            .order_by(AuditCheckpoint.seq)
        ).scalars()
    )
