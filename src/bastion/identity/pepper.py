"""Which pepper versions the credentials that can still be used are hashed under.

A pepper version may be retired once no such credential needs it: revoked, expired and
redeemed credentials never verify again, so they do not count. API keys, sessions and
agent run tokens move to the active version on their next use (rehash on use, see
`authenticate`); a setup token is used once, so it keeps its version until it is
redeemed or expires (72 hours at most).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from bastion.agents.models import Run
from bastion.identity.models import ApiKey, SetupToken, UserSession

KINDS = ("api_keys", "sessions", "setup_tokens", "agent_runs")


def _live(now: datetime) -> dict[str, tuple[type, ColumnElement[bool]]]:
    return {
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
        "agent_runs": (Run, Run.revoked_at.is_(None) & (Run.expires_at > now)),
    }


def usage(db: Session, now: datetime) -> dict[int, dict[str, int]]:
    """{pepper version: {kind: credentials still usable}} for every version in use."""
    found: dict[int, dict[str, int]] = {}
    for kind, (model, live) in _live(now).items():
        version = model.pepper_version  # type: ignore[attr-defined]
        stmt = select(version, func.count()).where(live).group_by(version)
        for row in db.execute(stmt):
            found.setdefault(int(row[0]), dict.fromkeys(KINDS, 0))[kind] = int(row[1])
    return found
