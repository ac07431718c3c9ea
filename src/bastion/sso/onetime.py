"""Values that may be accepted once: a SAML assertion's ID, an ID token's `jti`.

`use_once` records the digest of a value for a purpose until `expires_at` (when the
value could no longer be accepted anyway: its assertion's or token's own end, plus the
clock skew allowed) and answers whether this was its first use. The primary key
decides between concurrent uses on every worker: the second insert fails. Expired rows
are pruned as new ones arrive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.core.clock import as_utc, utcnow
from bastion.core.crypto import sha256_hex
from bastion.sso.models import SsoOnceUsed

PRUNE_BATCH = 500


def _key(purpose: str, value: str) -> str:
    # These values are identifiers, not credentials: a plain digest, stable across
    # pepper rotations (a keyed one would let a value be used once more per version).
    return sha256_hex(f"{purpose}\x00{value}")


def use_once(db: Session, purpose: str, value: str, expires_at: datetime) -> bool:
    """True the first time `value` is used for `purpose` (until `expires_at`); False on
    any later use. Runs in a savepoint so a replay leaves the caller's transaction
    usable."""
    now = utcnow()
    key = _key(purpose, value)
    found = db.execute(
        select(SsoOnceUsed.expires_at).where(
            SsoOnceUsed.purpose == purpose, SsoOnceUsed.key_hash == key
        )
    ).scalar_one_or_none()
    if found is not None and as_utc(found) > now:
        return False
    try:
        with db.begin_nested():
            if found is not None:  # an expired record of the same value: its time is over
                db.execute(
                    delete(SsoOnceUsed).where(
                        SsoOnceUsed.purpose == purpose, SsoOnceUsed.key_hash == key
                    )
                )
            db.add(SsoOnceUsed(purpose=purpose, key_hash=key, expires_at=expires_at))
            db.flush()
    except IntegrityError:
        return False
    _prune(db, now)
    return True


def _prune(db: Session, now: datetime) -> None:
    stale = list(
        db.execute(
            select(SsoOnceUsed.purpose, SsoOnceUsed.key_hash)
            .where(SsoOnceUsed.expires_at < now)
            .limit(PRUNE_BATCH)
        ).all()
    )
    for purpose, key in stale:
        db.execute(
            delete(SsoOnceUsed).where(SsoOnceUsed.purpose == purpose, SsoOnceUsed.key_hash == key)
        )
