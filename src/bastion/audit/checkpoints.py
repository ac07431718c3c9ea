"""Signed checkpoints over the audit chains (Ed25519, key in the data directory).

A checkpoint signs `chain, seq, hash, time`. Verification checks every signature, that
the event at each checkpoint's `seq` still has the signed hash (a rewrite after the
checkpoint is caught even if every link was recomputed), and that no checkpoint points
past the end of the chain (a cut tail is caught even if the head row was edited too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit.models import AuditCheckpoint, AuditHead
from bastion.core.clock import rfc3339, utcnow
from bastion.core.crypto import ed25519_public_key, ed25519_sign, ed25519_verify
from bastion.core.ids import new_id
from bastion.core.keyring import Keyring, LiveKeyring


def statement(chain: str, seq: int, hash_: str, created_at: str) -> bytes:
    return f"bastion-audit-checkpoint:v1\n{chain}\n{seq}\n{hash_}\n{created_at}".encode()


@dataclass(frozen=True)
class PublishedKey:
    """A signing key as anyone checking checkpoints needs it: the version a checkpoint
    names (`key_version`), the Ed25519 public key (hex) and when it signed: from
    `valid_from` until the next version replaced it (`valid_until`, None while active).
    Times are unknown (None) for keys made before they were recorded."""

    key_version: int
    algorithm: str
    public_key: str
    status: str  # "active" | "previous"
    valid_from: datetime | None
    valid_until: datetime | None


class Signer:
    """Signs with the active key version; verifies with any version it knows.

    Follows its key file (`LiveKeyring`): after `bastion keys rotate-signing` in another
    process, the next checkpoint is signed with the new version and checkpoints signed
    with it verify, without a restart. Older versions stay in the file, so checkpoints
    they signed keep verifying and their public keys stay published."""

    ALGORITHM = "Ed25519"

    def __init__(self, keys: Keyring) -> None:
        self._live = LiveKeyring(keys)

    def __repr__(self) -> str:
        return f"Signer({self._live.current()!r})"

    @property
    def keys(self) -> Keyring:
        return self._live.current(recheck=True)

    @property
    def public_keys(self) -> dict[int, bytes]:
        return {version: ed25519_public_key(seed) for version, seed in self.keys.versions.items()}

    def sign(self, message: bytes) -> tuple[int, bytes]:
        keys = self.keys
        return keys.active, ed25519_sign(keys.key(), message)

    def published(self) -> list[PublishedKey]:
        """Every version's public key with its validity, oldest first."""
        keys = self.keys
        versions = sorted(keys.versions)
        since = {v: _instant(keys.created.get(v)) for v in versions}
        return [
            PublishedKey(
                key_version=version,
                algorithm=self.ALGORITHM,
                public_key=ed25519_public_key(keys.versions[version]).hex(),
                status="active" if version == keys.active else "previous",
                valid_from=since[version],
                valid_until=(
                    None
                    if version == keys.active
                    else next((since[v] for v in versions if v > version), None)
                ),
            )
            for version in versions
        ]


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


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
