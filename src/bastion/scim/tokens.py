"""SCIM tokens: the bearer credentials an identity provider provisions with (`bst_…`,
stored as keyed hashes), created, listed and revoked by the organisation's admins."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.scim.models import ScimToken


@dataclass(frozen=True)
class IssuedToken:
    token: ScimToken
    secret: str  # shown once

    def __repr__(self) -> str:
        return f"IssuedToken(token={self.token.id})"


def create_token(
    db: Session, principal: Principal, org_id: str, *, name: str, hasher: TokenHasher
) -> IssuedToken:
    """A SCIM token for the organisation's identity provider. It can create users and
    suspend anyone (admins included), so it is an identity-provisioning setting like
    SSO: an admin's permission, and for a person a recent verification (step-up)."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require(Permission.USERS_MANAGE)
    principal.require_recent_auth("scim_token.create")
    token_id = new_id("sct")
    secret, digest, version = hasher.issue(TokenKind.SCIM, token_id)
    row = ScimToken(
        id=token_id,
        org_id=org_id,
        name=name,
        token_hash=digest,
        pepper_version=version,
        created_by=principal.id,
        created_at=utcnow(),
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        type=EventType.SCIM_TOKEN_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("scim_token", token_id),
        metadata={"name": name},
    )
    return IssuedToken(row, secret)


def list_tokens(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[ScimToken]:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    stmt = select(ScimToken).where(ScimToken.org_id == org_id)
    return newest_first(db, stmt, ScimToken.id, limit=limit, cursor=cursor)


def revoke_token(db: Session, principal: Principal, org_id: str, token_id: str) -> None:
    """Revoked at once, on every worker (the row bumps the organisation's auth revision).
    No step-up: taking access away must stay quick in an incident."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    row = None
    if has_prefix(token_id, "sct"):
        row = db.execute(
            select(ScimToken).where(ScimToken.org_id == org_id, ScimToken.id == token_id)
        ).scalar_one_or_none()
    if row is None:
        raise NotFound("SCIM token not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
        audit.record(
            db,
            type=EventType.SCIM_TOKEN_REVOKED,
            actor=principal.actor,
            org_id=org_id,
            resource=("scim_token", token_id),
            metadata={"name": row.name},
        )
