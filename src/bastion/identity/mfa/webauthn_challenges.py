"""WebAuthn challenges: issued with the options of a ceremony, stored by their SHA-256
for `TTL_SECONDS`, bound to what they were issued for, used once.

    register  the person adding a credential           (user)
    sign_in   the second factor owed by an mfa token     (user, the token's row)
    step_up   a session verifying again                  (user, the session)
    passkey   passwordless sign-in                       (nobody yet)

The challenge comes back inside the signed client data, which is how it is found; a
refused attempt uses it up too (a write after the refusal's rollback).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from webauthn.helpers import base64url_to_bytes

from bastion.core.clock import utcnow
from bastion.core.crypto import random_bytes, sha256_hex
from bastion.core.ids import new_id
from bastion.identity.models import WebAuthnChallenge

TTL_SECONDS = 300
CHALLENGE_BYTES = 32
SWEEP_BATCH = 100
REGISTER, SIGN_IN, STEP_UP, PASSKEY = "register", "sign_in", "step_up", "passkey"

Write = Callable[[Session], None]


def issue(
    db: Session, purpose: str, *, org_id: str | None, user_id: str | None, bound_to: str | None
) -> bytes:
    """A new challenge for `purpose`, stored by its hash; expired ones are swept."""
    now = utcnow()
    # A bounded sweep that skips rows another transaction holds (PostgreSQL): requests
    # issuing options at once never wait on, nor deadlock over, each other's sweep.
    stale = (
        select(WebAuthnChallenge.id)
        .where(WebAuthnChallenge.expires_at < now)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    db.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.id.in_(stale.scalar_subquery())))
    challenge = random_bytes(CHALLENGE_BYTES)
    db.add(
        WebAuthnChallenge(
            id=new_id("wac"),
            org_id=org_id,
            user_id=user_id,
            purpose=purpose,
            bound_to=bound_to,
            challenge_hash=sha256_hex(challenge),
            expires_at=now + timedelta(seconds=TTL_SECONDS),
        )
    )
    db.flush()
    return challenge


def client_challenge(credential: Mapping[str, Any]) -> bytes | None:
    """The challenge inside the credential's client data, or None when unreadable."""
    try:
        client_data = json.loads(base64url_to_bytes(credential["response"]["clientDataJSON"]))
        return base64url_to_bytes(client_data["challenge"])
    except (KeyError, TypeError, ValueError):  # binascii.Error and JSON errors are ValueErrors
        return None


def _consume(challenge_id: str) -> Write:
    """A refused attempt still uses its challenge up (written after the rollback)."""

    def run(db: Session) -> None:
        db.execute(
            update(WebAuthnChallenge)
            .where(WebAuthnChallenge.id == challenge_id, WebAuthnChallenge.used_at.is_(None))
            .values(used_at=utcnow())
        )

    return run


@dataclass(frozen=True)
class Taken:
    challenge: bytes = b""
    row_id: str = ""
    reason: str = ""

    @property
    def writes(self) -> tuple[Write, ...]:
        return (_consume(self.row_id),) if self.row_id else ()


def take(
    db: Session,
    credential: Mapping[str, Any],
    purpose: str,
    *,
    user_id: str | None,
    bound_to: str | None,
) -> Taken:
    """The challenge the credential answers, used up now; or why it cannot be used."""
    challenge = client_challenge(credential)
    if challenge is None:
        return Taken(reason="malformed_credential")
    row = db.execute(
        select(WebAuthnChallenge)
        .where(WebAuthnChallenge.challenge_hash == sha256_hex(challenge))
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return Taken(reason="unknown_challenge")
    if row.purpose != purpose or row.user_id != user_id or row.bound_to != bound_to:
        return Taken(reason="foreign_challenge")  # not consumed: it is someone else's
    if row.used_at is not None:
        return Taken(reason="reused_challenge")
    if row.expires_at <= utcnow():
        return Taken(reason="expired_challenge", row_id=row.id)
    done = db.execute(
        update(WebAuthnChallenge)
        .where(WebAuthnChallenge.id == row.id, WebAuthnChallenge.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if getattr(done, "rowcount", 0) != 1:
        return Taken(reason="reused_challenge")
    return Taken(challenge=challenge, row_id=row.id)
