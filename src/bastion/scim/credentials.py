"""What SCIM registers with identity, at import: its tokens (`bsp_…`) as a credential
kind. A token is valid until revoked, while its organisation is active. It carries the
user and team permissions provisioning needs, and the API answers it only at `/scim/v2`
(every `/v1` route refuses it, `bastion.api.deps`)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.permissions import CREDENTIAL_PERMISSIONS, CredentialKind
from bastion.core.principal import Principal
from bastion.identity import credentials
from bastion.identity.credentials import Authenticated, Loaded, labelled, rejected
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.scim.models import ScimToken
from bastion.tenancy import service as tenancy

PRINCIPAL_TYPE = "scim_token"


class _TokenRow(NamedTuple):
    token_hash: str
    pepper_version: int
    revoked_at: datetime | None
    org_id: str
    org_status: str | None
    ip_allowlist: list[str] | None
    org_rev: int
    instance_rev: int


_TOKEN_QUERY = select(
    *labelled(
        _TokenRow,
        token_hash=ScimToken.token_hash,
        pepper_version=ScimToken.pepper_version,
        revoked_at=ScimToken.revoked_at,
        org_id=ScimToken.org_id,
        org_status=tenancy.org_status(ScimToken.org_id),
        ip_allowlist=tenancy.org_ip_allowlist(ScimToken.org_id),
        org_rev=revisions.org_revision(ScimToken.org_id),
        instance_rev=revisions.instance_revision(),
    )
)


def _resolve(db: Session, token_id: str, secret: str, actor: Actor, hasher: TokenHasher) -> Loaded:
    found = db.execute(_TOKEN_QUERY.where(ScimToken.id == token_id)).first()
    row = _TokenRow._make(found) if found is not None else None
    if row is None or not hasher.matches(
        TokenKind.SCIM, secret, row.pepper_version, row.token_hash
    ):
        raise rejected(actor, "unknown_or_wrong_secret")
    org_id, resource = row.org_id, ("scim_token", token_id)
    if row.revoked_at is not None:
        raise rejected(actor, "scim_token_revoked", org_id, resource)
    if row.org_status != "active":
        raise rejected(actor, "org_inactive", org_id, resource)
    permissions = CREDENTIAL_PERMISSIONS[CredentialKind.SCIM]
    principal = Principal(
        principal_type=PRINCIPAL_TYPE,
        id=token_id,
        org_id=org_id,
        role="scim",
        credential=CredentialKind.SCIM,
        role_permissions=permissions,
        credential_id=token_id,
        actor=Actor(PRINCIPAL_TYPE, token_id, actor.ip, actor.user_agent, actor.request_id),
    )
    return Loaded(
        Authenticated(principal, None),
        stored_hash=row.token_hash,
        pepper_version=row.pepper_version,
        org_rev=int(row.org_rev),
        instance_rev=int(row.instance_rev),
        valid_until=None,
        last_touched=utcnow(),
        touch_every=math.inf,
        ip_allowlist=list(row.ip_allowlist or []),
    )


def _live(now: datetime) -> ColumnElement[bool]:
    return ScimToken.revoked_at.is_(None)


credentials.register(
    credentials.Resolver(
        kind=TokenKind.SCIM,
        resolve=_resolve,
        digest=ScimToken.token_hash,
        live=_live,
        name="scim_tokens",
    )
)
