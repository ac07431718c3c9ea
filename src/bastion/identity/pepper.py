"""Which pepper versions the credentials that can still be used are hashed under.

A pepper version may be retired once no such credential needs it: revoked, expired and
redeemed credentials never verify again, so they do not count. API keys, sessions and
the kinds other domains register (agent run tokens, see `credentials`) move to the
active version on their next use (rehash on use, see `authenticate`); a setup token is
used once, so it keeps its version until it is redeemed or expires (72 hours at most),
and so do a password-reset link (30 minutes) and an mfa token (5 minutes). Unused
recovery codes keep theirs until used or replaced: retiring a version they need voids
them (the person signs in with a factor and asks for a new set). Secrets other domains
declare (an OAuth client's secret, see `credentials.register_secret_store`) count too:
they move to the active version when next used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from bastion.core.clock import utcnow
from bastion.identity import credentials
from bastion.identity.models import (
    ApiKey,
    MfaChallenge,
    PasswordReset,
    RecoveryCode,
    SetupToken,
    UserSession,
)


def _live(now: datetime) -> dict[str, tuple[Any, ColumnElement[bool]]]:
    own: dict[str, tuple[Any, ColumnElement[bool]]] = {
        "api_keys": (
            ApiKey,
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now)
            & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        ),
        "sessions": (
            UserSession,
            UserSession.revoked_at.is_(None) & (UserSession.expires_at > now),
        ),
        "setup_tokens": (
            SetupToken,
            SetupToken.used_at.is_(None) & (SetupToken.expires_at > now),
        ),
        "mfa_tokens": (
            MfaChallenge,
            MfaChallenge.used_at.is_(None) & (MfaChallenge.expires_at > now),
        ),
        "recovery_codes": (RecoveryCode, RecoveryCode.used_at.is_(None)),
        "password_resets": (
            PasswordReset,
            PasswordReset.used_at.is_(None) & (PasswordReset.expires_at > now),
        ),
    }
    foreign = {r.name: (r.model, r.live(now)) for r in credentials.registered()}
    stores = {s.name: (s.model, s.live(now)) for s in credentials.secret_stores()}
    return own | foreign | stores


def kinds() -> tuple[str, ...]:
    """The credential kinds counted, in report order."""
    return tuple(_live(utcnow()))


def usage(db: Session, now: datetime) -> dict[int, dict[str, int]]:
    """{pepper version: {kind: credentials still usable}} for every version in use."""
    found: dict[int, dict[str, int]] = {}
    live = _live(now)
    for kind, (model, condition) in live.items():
        version = model.pepper_version
        stmt = select(version, func.count()).where(condition).group_by(version)
        for row in db.execute(stmt):
            found.setdefault(int(row[0]), dict.fromkeys(live, 0))[kind] = int(row[1])
    return found
