"""OAuth 2.0 for machines: clients of service accounts, the client-credentials grant,
introspection and revocation, and the verification of access tokens as API credentials.

- A client (`oac_…`) acts as one service account. Making one hands its holder what the
  account holds, so it is bounded like an API key of the account: the caller manages
  API keys and service accounts, holds every permission the client may use, and steps
  up (a person) when the account's role is admin. The secret (`boc_…`) is shown once
  and stored as a keyed hash under the pepper.
- `issue_token`: the client authenticates (secret compared in constant time; failures
  throttled per client and per address, like sign-in); its service account and
  organisation are active; the request comes from inside the organisation's IP
  allowlist; the scope asked for is known and within what the client may have. The
  token is a JWT signed by the instance signing keys (`tokens`), audited.
- An access token authenticates as its service account, with the account's *current*
  role cut to the token's and client's scope (`AccessTokenVerifier`, handed to identity's
  `authenticate` by the app): deleting the client or the account, suspending either,
  revoking the token, or reducing the role applies to the very next request.
- Introspection and revocation answer a client of the token's own organisation;
  anything else is `{"active": false}` / silently nothing (RFC 7662 §2.2, RFC 7009 §2.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from limits import RateLimitItem
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.db import org_scoped
from bastion.core.errors import InvalidInput, NotFound, TooManyRequests
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import CredentialKind, Permission, parse_permissions
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.core.revisions import REHASH_OPTION, instance_revision, org_revision
from bastion.core.signing import InstanceSigner
from bastion.identity import apikeys
from bastion.identity.credentials import (
    Authenticated,
    Loaded,
    labelled,
    rejected,
    service_account_column,
)
from bastion.identity.networks import parse_allowlist, refuse_outside
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.oauth import errors, tokens
from bastion.oauth.errors import OAuthError
from bastion.oauth.models import OAuthClient, OAuthRevokedToken
from bastion.oauth.tokens import AccessClaims, Audience, TokenInvalid
from bastion.tenancy import service as tenancy

GRANT_TYPE = "client_credentials"
_UNKNOWN_DIGEST = "0" * 64  # compared against when the client is unknown: the same work


# --- clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedClient:
    client: OAuthClient
    secret: str  # shown once

    def __repr__(self) -> str:
        return f"IssuedClient(client={self.client.id})"


def _scopes(values: list[str] | None, field: str = "scopes") -> tuple[Permission, ...] | None:
    if values is None:
        return None
    known, unknown = parse_permissions(values)
    if unknown:
        raise InvalidInput.field(field, "unknown permission; see GET /v1/permissions")
    return tuple(sorted(known))


def create_client(
    db: Session,
    principal: Principal,
    org_id: str,
    service_account_id: str,
    *,
    name: str,
    scopes: list[str] | None,
    hasher: TokenHasher,
) -> IssuedClient:
    principal.require_org(org_id)
    principal.require(Permission.APIKEYS_MANAGE)
    principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)  # it acts as the account
    account = apikeys.get_account(db, principal, org_id, service_account_id)
    held = authz.permissions_of_role(db, org_id, account.role)
    wanted = _scopes(scopes)
    if wanted is not None and not set(wanted) <= held:
        raise InvalidInput.field("scopes", "beyond the service account's role")
    if account.role == "admin":  # a person handing out admin rights: step-up
        principal.require_recent_auth("oauth_client.create_admin")
    authz.ensure_can_confer(principal, held if wanted is None else wanted, until=None)
    client_id = new_id("oac")
    secret, digest, version = hasher.issue(TokenKind.OAUTH_CLIENT, client_id)
    client = OAuthClient(
        id=client_id,
        org_id=org_id,
        service_account_id=account.id,
        name=name,
        scopes=list(wanted) if wanted is not None else None,
        secret_hash=digest,
        pepper_version=version,
        created_by=principal.id,
    )
    db.add(client)
    db.flush()
    audit.record(
        db,
        type=EventType.OAUTH_CLIENT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("oauth_client", client_id),
        metadata={"name": name, "service_account_id": account.id, "scopes": client.scopes},
    )
    return IssuedClient(client, secret)


def list_clients(
    db: Session,
    principal: Principal,
    org_id: str,
    service_account_id: str,
    *,
    limit: int,
    cursor: str | None,
) -> Page[OAuthClient]:
    principal.require_org(org_id)
    account = apikeys.get_account(db, principal, org_id, service_account_id)
    stmt = select(OAuthClient).where(
        OAuthClient.org_id == org_id, OAuthClient.service_account_id == account.id
    )
    return newest_first(db, stmt, OAuthClient.id, limit=limit, cursor=cursor)


def _find_client(db: Session, org_id: str, service_account_id: str, client_id: str) -> OAuthClient:
    client = None
    if has_prefix(client_id, "oac"):
        client = db.execute(
            select(OAuthClient).where(
                OAuthClient.org_id == org_id,
                OAuthClient.service_account_id == service_account_id,
                OAuthClient.id == client_id,
            )
        ).scalar_one_or_none()
    if client is None:
        raise NotFound("OAuth client not found")
    return client


def get_client(
    db: Session, principal: Principal, org_id: str, service_account_id: str, client_id: str
) -> OAuthClient:
    principal.require_org(org_id)
    account = apikeys.get_account(db, principal, org_id, service_account_id)
    return _find_client(db, org_id, account.id, client_id)


def delete_client(
    db: Session, principal: Principal, org_id: str, service_account_id: str, client_id: str
) -> None:
    """Every token of the client stops working at once (its revision bump)."""
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)
    account = apikeys.get_account(db, principal, org_id, service_account_id)
    client = _find_client(db, org_id, account.id, client_id)
    held = authz.permissions_of_role(db, org_id, account.role)
    authz.ensure_outranks(principal, held, "this service account")
    db.delete(client)
    db.flush()
    audit.record(
        db,
        type=EventType.OAUTH_CLIENT_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("oauth_client", client_id),
        metadata={"name": client.name, "service_account_id": account.id},
    )


# --- client authentication ----------------------------------------------------------------


@dataclass(frozen=True)
class ClientCredentials:
    """What the caller of a token, introspection or revocation request presented."""

    client_id: str
    secret: str = ""
    method: str = "client_secret_basic"  # or "client_secret_post"

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, method={self.method})"


class _ClientRow(NamedTuple):
    id: str
    org_id: str
    service_account_id: str
    scopes: list[str] | None
    secret_hash: str
    pepper_version: int
    sa_status: str | None
    sa_role: str | None
    org_status: str | None
    ip_allowlist: list[str] | None


_CLIENT_QUERY = select(
    *labelled(
        _ClientRow,
        id=OAuthClient.id,
        org_id=OAuthClient.org_id,
        service_account_id=OAuthClient.service_account_id,
        scopes=OAuthClient.scopes,
        secret_hash=OAuthClient.secret_hash,
        pepper_version=OAuthClient.pepper_version,
        sa_status=service_account_column(OAuthClient.service_account_id, "status"),
        sa_role=service_account_column(OAuthClient.service_account_id, "role"),
        org_status=tenancy.org_status(OAuthClient.org_id),
        ip_allowlist=tenancy.org_ip_allowlist(OAuthClient.org_id),
    )
)


def _throttles(
    settings: Settings, client_id: str, ip: str | None
) -> list[tuple[RateLimitItem, str]]:
    window = settings.login_failure_window
    # Only a well-formed id gets a counter of its own: a caller's arbitrary text never
    # becomes a key (ids that cannot exist share one, and never authenticate anyway).
    client = client_id if has_prefix(client_id, "oac") else "malformed"
    found = [(per_window(settings.login_failures_per_account, window), f"oauth:client:{client}")]
    if ip:
        found.append((per_window(settings.login_failures_per_ip, window), f"oauth:ip:{ip}"))
    return found


def _refused(
    error: str, description: str, actor: Actor, creds: ClientCredentials, reason: str, **more: Any
) -> OAuthError:
    client = creds.client_id if has_prefix(creds.client_id, "oac") else None
    return OAuthError(
        error,
        description,
        status=401 if error == errors.INVALID_CLIENT else 400,
        challenge=error == errors.INVALID_CLIENT,
        audit={
            "type": EventType.OAUTH_TOKEN_REFUSED,
            "actor": actor,
            "org_id": more.get("org_id"),
            "outcome": Outcome.FAILURE,
            "reason": reason,
            "resource": ("oauth_client", client) if client else None,
        },
    )


def authenticate_client(
    db: Session,
    actor: Actor,
    creds: ClientCredentials,
    *,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> _ClientRow:
    """The client whose id and secret these are, or `invalid_client` (the same answer
    for an unknown client and a wrong secret, after the same work). Failures count
    against the client and the address; past the limit, 429 before any secret check."""
    throttles = _throttles(settings, creds.client_id, actor.ip)
    for item, key in throttles:
        quota = limiter.throttle_state(item, key)
        if quota.exhausted:
            raise TooManyRequests(
                "too many failed client authentications; try again later",
                retry_after=quota.reset_after,
            ).with_audit(
                type=EventType.OAUTH_TOKEN_REFUSED,
                actor=actor,
                org_id=None,
                outcome=Outcome.DENIED,
                reason="throttled",
                resource=("oauth_client", creds.client_id)
                if has_prefix(creds.client_id, "oac")
                else None,
                metadata={"scope": "client" if key.startswith("oauth:client:") else "address"},
            )
    found = None
    if has_prefix(creds.client_id, "oac"):
        found = db.execute(_CLIENT_QUERY.where(OAuthClient.id == creds.client_id)).first()
    row = _ClientRow._make(found) if found is not None else None
    parsed = parse(creds.secret) if creds.secret else None
    secret = parsed.secret if parsed is not None else creds.secret
    stored = (row.secret_hash, row.pepper_version) if row else (_UNKNOWN_DIGEST, 1)
    matched = hasher.matches(TokenKind.OAUTH_CLIENT, secret, stored[1], stored[0])
    well_formed = (
        parsed is not None
        and parsed.kind is TokenKind.OAUTH_CLIENT
        and parsed.row_id == creds.client_id
    )
    if row is None or not matched or not well_formed:
        for item, key in throttles:
            limiter.record_failure(item, key)
        raise _refused(
            errors.INVALID_CLIENT,
            "client authentication failed",
            actor,
            creds,
            "invalid_client",
            org_id=row.org_id if row else None,
        )
    upgraded = hasher.upgrade(TokenKind.OAUTH_CLIENT, secret, row.pepper_version)
    if upgraded is not None:  # rehash on use, compare-and-set
        db.execute(
            update(OAuthClient)
            .where(
                OAuthClient.id == row.id,
                OAuthClient.secret_hash == row.secret_hash,
                OAuthClient.pepper_version == row.pepper_version,
            )
            .values(secret_hash=upgraded[0], pepper_version=upgraded[1])
            .execution_options(**{REHASH_OPTION: True})
        )
    return row


# --- the token endpoint -------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str | None

    def __repr__(self) -> str:
        return f"IssuedToken(expires_in={self.expires_in})"


def _granted_scope(
    db: Session, row: _ClientRow, requested: str | None, actor: Actor, creds: ClientCredentials
) -> tuple[Permission, ...] | None:
    """The scope of the token: what was asked for (each a permission the service
    account's role and the client allow), or without a `scope` parameter the client's
    scopes (None: the whole role)."""
    allowed = _client_scopes(row.scopes)
    if requested is None:
        return allowed
    wanted = tokens.parse_scope(requested)
    if wanted is None:
        raise _refused(
            errors.INVALID_SCOPE, "unknown scope", actor, creds, "unknown_scope", org_id=row.org_id
        )
    held = authz.permissions_of_role(db, row.org_id, row.sa_role or "")
    if not set(wanted) <= held or (allowed is not None and not set(wanted) <= set(allowed)):
        raise _refused(
            errors.INVALID_SCOPE,
            "scope beyond what this client may have",
            actor,
            creds,
            "scope_exceeded",
            org_id=row.org_id,
        )
    return wanted


def _client_scopes(values: list[str] | None) -> tuple[Permission, ...] | None:
    if values is None:
        return None
    known, _unknown = parse_permissions(values)  # a name gone from the catalogue: dropped
    return tuple(sorted(known))


def issue_token(
    db: Session,
    actor: Actor,
    creds: ClientCredentials,
    *,
    grant_type: str,
    scope: str | None,
    signer: InstanceSigner,
    where: Audience,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> IssuedToken:
    """RFC 6749 §4.4: an access token for the client's service account."""
    row = authenticate_client(db, actor, creds, hasher=hasher, limiter=limiter, settings=settings)
    if grant_type != GRANT_TYPE:
        raise OAuthError(
            errors.UNSUPPORTED_GRANT_TYPE, "only grant_type=client_credentials is supported"
        )
    if row.org_status != "active" or row.sa_status != "active":
        raise _refused(
            errors.INVALID_GRANT,
            "the client's service account cannot get tokens now",
            actor,
            creds,
            "service_account_inactive" if row.org_status == "active" else "org_inactive",
            org_id=row.org_id,
        )
    refuse_outside(
        parse_allowlist(row.ip_allowlist),
        row.org_id,
        Actor("oauth_client", row.id, actor.ip, actor.user_agent, actor.request_id),
        ("oauth_client", row.id),
    )
    granted = _granted_scope(db, row, scope, actor, creds)
    now = utcnow()
    token, claims = tokens.issue(
        signer,
        where,
        service_account_id=row.service_account_id,
        org_id=row.org_id,
        client_id=row.id,
        scope=granted,
        now=now,
        ttl=settings.oauth_token_ttl,
    )
    db.execute(update(OAuthClient).where(OAuthClient.id == row.id).values(last_used_at=now))
    audit.record(
        db,
        type=EventType.OAUTH_TOKEN_ISSUED,
        actor=Actor("oauth_client", row.id, actor.ip, actor.user_agent, actor.request_id),
        org_id=row.org_id,
        resource=("oauth_client", row.id),
        metadata={
            "service_account_id": row.service_account_id,
            "jti": claims.jti,
            "scope": claims.scope_text,
            "expires_at": claims.expires_at.isoformat(),
            "method": creds.method,
        },
    )
    return IssuedToken(token, claims.exp - claims.iat, claims.scope_text)


# --- access tokens as credentials ---------------------------------------------------------


class _TokenRow(NamedTuple):
    org_id: str
    service_account_id: str
    scopes: list[str] | None
    sa_status: str | None
    sa_role: str | None
    org_status: str | None
    ip_allowlist: list[str] | None
    refuses_admin_keys: bool | None
    revoked: bool
    org_rev: int
    instance_rev: int


def _token_query(claims: AccessClaims) -> Any:
    revoked = select(OAuthRevokedToken.jti).where(OAuthRevokedToken.jti == claims.jti).exists()
    return select(
        *labelled(
            _TokenRow,
            org_id=OAuthClient.org_id,
            service_account_id=OAuthClient.service_account_id,
            scopes=OAuthClient.scopes,
            sa_status=service_account_column(OAuthClient.service_account_id, "status"),
            sa_role=service_account_column(OAuthClient.service_account_id, "role"),
            org_status=tenancy.org_status(OAuthClient.org_id),
            ip_allowlist=tenancy.org_ip_allowlist(OAuthClient.org_id),
            refuses_admin_keys=tenancy.org_refuses_admin_keys(OAuthClient.org_id),
            revoked=revoked,
            org_rev=org_revision(OAuthClient.org_id),
            instance_rev=instance_revision(),
        )
    ).where(OAuthClient.id == claims.client_id)


def _token_state(db: Session, claims: AccessClaims) -> tuple[_TokenRow | None, str | None]:
    """The token's client, account and organisation as they are now, in one query, and
    why the token no longer works (None: it works)."""
    found = db.execute(_token_query(claims)).first()
    if found is None:
        return None, "client_deleted"
    row = _TokenRow._make(found)
    if row.org_id != claims.org or row.service_account_id != claims.sub:
        return row, "claims_mismatch"  # never issued so: refused all the same
    if row.revoked:
        return row, "token_revoked"
    if row.org_status != "active":
        return row, "org_inactive"
    if row.sa_status != "active":
        return row, "service_account_inactive"
    return row, None


def _token_permissions(db: Session, row: _TokenRow, claims: AccessClaims) -> frozenset[Permission]:
    permissions = authz.permissions_of_role(db, row.org_id, row.sa_role or "")
    client = _client_scopes(row.scopes)
    if client is not None:
        permissions &= frozenset(client)
    if claims.scope is not None:
        permissions &= frozenset(claims.scope)
    return permissions


class AccessTokenVerifier:
    """Identity's `JwtVerifier` for this instance's access tokens: the signature and
    claims (`tokens.decode`), then the token's current state in one query."""

    def __init__(self, signer: InstanceSigner, where: Audience) -> None:
        self._signer = signer
        self._where = where

    def __repr__(self) -> str:
        return f"AccessTokenVerifier(issuer={self._where.issuer!r})"

    def __call__(self, db: Session, token: str, actor: Actor) -> Loaded:
        now = utcnow()
        try:
            claims = tokens.decode(self._signer, self._where, token, now)
        except TokenInvalid as exc:
            raise rejected(actor, f"access_token_{exc.reason}") from None
        row, refusal = _token_state(db, claims)
        if row is None or refusal is not None:
            org = row.org_id if row is not None else None
            raise rejected(
                actor, refusal or "client_deleted", org, ("oauth_client", claims.client_id)
            )
        principal = Principal(
            principal_type="service_account",
            id=claims.sub,
            org_id=row.org_id,
            role=row.sa_role or "",
            credential=CredentialKind.OAUTH_TOKEN,
            role_permissions=_token_permissions(db, row, claims),
            credential_id=claims.client_id,
            actor=Actor(
                "service_account", claims.sub, actor.ip, actor.user_agent, actor.request_id
            ),
            # Read from the (cached) principal at each step-up action; a change of the
            # setting bumps the organisation's auth revision, which reloads it.
            step_up_refused=bool(row.refuses_admin_keys) and row.sa_role == "admin",
        )
        return Loaded(
            Authenticated(principal, None),
            stored_hash="",
            pepper_version=0,
            org_rev=int(row.org_rev),
            instance_rev=int(row.instance_rev),
            valid_until=claims.expires_at,
            last_touched=now,
            touch_every=math.inf,  # nothing to keep up to date
            ip_allowlist=list(row.ip_allowlist or []),
        )


# --- introspection and revocation -----------------------------------------------------------


def introspect(
    db: Session,
    actor: Actor,
    creds: ClientCredentials,
    token: str,
    *,
    signer: InstanceSigner,
    where: Audience,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> dict[str, Any]:
    """RFC 7662: the token's claims when it is an access token of the caller's own
    organisation that works right now; `{"active": false}` for anything else (unknown,
    malformed, expired, revoked, of a deleted client or another organisation)."""
    caller = authenticate_client(
        db, actor, creds, hasher=hasher, limiter=limiter, settings=settings
    )
    inactive: dict[str, Any] = {"active": False}
    try:
        claims = tokens.decode(signer, where, token, utcnow())
    except TokenInvalid:
        return inactive
    if claims.org != caller.org_id:
        return inactive
    row, refusal = _token_state(db, claims)
    if row is None or refusal is not None:
        return inactive
    return {
        "active": True,
        "scope": " ".join(sorted(_token_permissions(db, row, claims))),
        "client_id": claims.client_id,
        "token_type": "Bearer",
        "exp": claims.exp,
        "iat": claims.iat,
        "sub": claims.sub,
        "aud": claims.aud,
        "iss": claims.iss,
        "jti": claims.jti,
        "org": claims.org,
    }


def revoke(
    db: Session,
    actor: Actor,
    creds: ClientCredentials,
    token: str,
    *,
    signer: InstanceSigner,
    where: Audience,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> None:
    """RFC 7009: a client revokes an access token issued to it; it stops working on
    every worker at once (the revocation bumps the organisation's auth revision).
    Anything else (unknown, malformed, expired, another client's) changes nothing and
    answers the same."""
    caller = authenticate_client(
        db, actor, creds, hasher=hasher, limiter=limiter, settings=settings
    )
    now = utcnow()
    try:
        claims = tokens.decode(signer, where, token, now, verify_exp=False)
    except TokenInvalid:
        return
    if claims.client_id != caller.id or claims.org != caller.org_id or claims.expires_at <= now:
        return
    db.execute(  # revocations of tokens that expired meanwhile serve nothing
        delete(OAuthRevokedToken)
        .where(OAuthRevokedToken.org_id == caller.org_id, OAuthRevokedToken.expires_at <= now)
        .execution_options(**org_scoped(caller.org_id))
    )
    if db.get(OAuthRevokedToken, claims.jti) is not None:
        return
    db.add(
        OAuthRevokedToken(
            jti=claims.jti,
            org_id=caller.org_id,
            client_id=caller.id,
            expires_at=claims.expires_at,
            revoked_at=now,
        )
    )
    db.flush()
    audit.record(
        db,
        type=EventType.OAUTH_TOKEN_REVOKED,
        actor=Actor("oauth_client", caller.id, actor.ip, actor.user_agent, actor.request_id),
        org_id=caller.org_id,
        resource=("oauth_client", caller.id),
        metadata={"jti": claims.jti, "service_account_id": claims.sub},
    )
