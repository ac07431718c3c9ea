"""Bearer credential → Principal. The hot path of every request.

A miss reads the credential, its owner, its organisation's status and the auth
revisions in one indexed query. A hit (see `authcache`) re-checks the secret and reads
only the two revision counters, so suspension, deletion, revocation, logout, role
changes and expiry take effect on the very next request on every worker. Writes the
hot path needs (`last_used_at`, `last_seen_at`) are coarse (at most once per minute per
credential) and done after the response's transaction, never blocking it. So is the
rehash of a credential stored under an older pepper version: the secret just presented
is hashed under the active version, for the cache at once and for the row after the
request. API keys and sessions are identity's; other kinds (agent run tokens) are
resolved by the domain that registered them (`credentials`), and any other is refused.
A JWT (an OAuth access token) is verified by the `JwtVerifier` the app passes (the
issuing domain's, with this instance's keys); it is cached by its SHA-256 until it
expires or a revision changes (a revocation, a change to its client or service
account). Without a verifier every JWT is refused.

Every credential of an organisation with an IP allowlist is refused (403
`ip_not_allowed`, see `networks`) from an address outside it, before the request does
anything. The
allowlist is read once with the credential and cached parsed beside it; a change to it
bumps the organisation's auth revision, so the next request everywhere reads it anew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from bastion.authz import service as authz
from bastion.core import mfa, revisions
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.errors import Unauthenticated
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import DEFAULT_STEP_UP_MAX_AGE, Principal
from bastion.identity import credentials
from bastion.identity.authcache import AuthCache, Entry, Revisions
from bastion.identity.credentials import (
    Authenticated,
    Loaded,
    Touch,
    expired,
    labelled,
    rejected,
)
from bastion.identity.models import ApiKey, ServiceAccount, User, UserSession
from bastion.identity.networks import (
    check_address,
    key_networks,
    parse_allowlist,
    watch_network,
)
from bastion.identity.tokens import TokenHasher, TokenKind, looks_like_jwt, parse
from bastion.tenancy import service as tenancy

TOUCH_INTERVAL_SECONDS = 60


class _SessionRow(NamedTuple):
    token_hash: str
    pepper_version: int
    expires_at: datetime
    last_seen_at: datetime
    idle_timeout: int
    revoked_at: datetime | None
    user_id: str
    org_id: str
    role: str
    status: str
    grants_until: datetime | None
    org_status: str | None
    ip_allowlist: list[str] | None
    org_rev: int
    instance_rev: int
    amr: list[str] | None
    auth_time: datetime | None
    created_at: datetime
    mfa_policy: str | None
    step_up_max_age: int | None


_SESSION_QUERY = select(
    *labelled(
        _SessionRow,
        token_hash=UserSession.token_hash,
        pepper_version=UserSession.pepper_version,
        expires_at=UserSession.expires_at,
        last_seen_at=UserSession.last_seen_at,
        idle_timeout=UserSession.idle_timeout,
        revoked_at=UserSession.revoked_at,
        user_id=User.id,
        org_id=User.org_id,
        role=User.role,
        status=User.status,
        grants_until=User.grants_until,
        org_status=tenancy.org_status(User.org_id),
        ip_allowlist=tenancy.org_ip_allowlist(User.org_id),
        org_rev=revisions.org_revision(User.org_id),
        instance_rev=revisions.instance_revision(),
        amr=UserSession.amr,
        auth_time=UserSession.auth_time,
        created_at=UserSession.created_at,
        mfa_policy=tenancy.org_mfa_policy(User.org_id),
        step_up_max_age=tenancy.org_step_up_max_age(User.org_id),
    )
).join(User, User.id == UserSession.user_id)


class _KeyRow(NamedTuple):
    secret_hash: str
    pepper_version: int
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    org_id: str
    role: str
    user_id: str | None
    service_account_id: str | None
    user_status: str | None
    user_role: str  # NULL only when user_status is, which is refused first
    grants_until: datetime | None
    sa_status: str | None
    sa_role: str  # likewise with sa_status
    org_status: str | None
    ip_allowlist: list[str] | None
    refuses_admin_keys: bool | None
    org_rev: int
    instance_rev: int


_KEY_QUERY = (
    select(
        *labelled(
            _KeyRow,
            secret_hash=ApiKey.secret_hash,
            pepper_version=ApiKey.pepper_version,
            expires_at=ApiKey.expires_at,
            revoked_at=ApiKey.revoked_at,
            last_used_at=ApiKey.last_used_at,
            org_id=ApiKey.org_id,
            role=ApiKey.role,
            user_id=ApiKey.user_id,
            service_account_id=ApiKey.service_account_id,
            user_status=User.status,
            user_role=User.role,
            grants_until=User.grants_until,
            sa_status=ServiceAccount.status,
            sa_role=ServiceAccount.role,
            org_status=tenancy.org_status(ApiKey.org_id),
            ip_allowlist=tenancy.org_ip_allowlist(ApiKey.org_id),
            refuses_admin_keys=tenancy.org_refuses_admin_keys(ApiKey.org_id),
            org_rev=revisions.org_revision(ApiKey.org_id),
            instance_rev=revisions.instance_revision(),
        )
    )
    .outerjoin(User, User.id == ApiKey.user_id)
    .outerjoin(ServiceAccount, ServiceAccount.id == ApiKey.service_account_id)
)
_OWN_KINDS = frozenset({TokenKind.API_KEY, TokenKind.SESSION})


def _known(kind: TokenKind) -> bool:
    """Identity's own bearer kinds, and those another domain registered."""
    return kind in _OWN_KINDS or credentials.resolver(kind) is not None


def authenticate(
    db: Session,
    token: str | None,
    actor: Actor,
    hasher: TokenHasher,
    cache: AuthCache | None = None,
    *,
    jwt: credentials.JwtVerifier | None = None,
) -> Authenticated:
    if not token:
        raise Unauthenticated("a bearer credential is required")
    parsed = parse(token)
    if parsed is None:
        return _jwt(db, token, actor, hasher, cache, jwt)
    if not _known(parsed.kind):
        raise rejected(actor, "unknown_credential_kind")  # fail closed
    if cache is not None:
        hit = authenticate_cached(token, actor, hasher, cache)
        if hit is not None:
            return hit
    networks: frozenset[str] = frozenset()
    foreign = credentials.resolver(parsed.kind)
    if parsed.kind is TokenKind.SESSION:
        loaded = _session(db, parsed.row_id, parsed.secret, actor, hasher)
    elif parsed.kind is TokenKind.API_KEY:
        loaded = _api_key(db, parsed.row_id, parsed.secret, actor, hasher)
        networks = key_networks(db, parsed.row_id)
    elif foreign is not None:
        loaded = foreign.resolve(db, parsed.row_id, parsed.secret, actor, hasher)
    else:  # unregistered meanwhile: never an allow
        raise rejected(actor, "unknown_credential_kind")
    # Read with the credential by identity's own kinds; another domain's resolver may
    # leave it to one more primary-key read here (a miss only: a hit uses the cache).
    entries = loaded.ip_allowlist
    if entries is None:
        entries = tenancy.ip_allowlist(db, loaded.result.principal.org_id)
    allowlist = parse_allowlist(entries)
    upgraded = hasher.upgrade(parsed.kind, parsed.secret, loaded.pepper_version)
    if upgraded is not None:
        rehash = _rehash(
            parsed.kind, parsed.row_id, (loaded.stored_hash, loaded.pepper_version), upgraded
        )
        loaded = replace(
            loaded,
            result=replace(loaded.result, extra=(*loaded.result.extra, rehash)),
            stored_hash=upgraded[0],
            pepper_version=upgraded[1],
        )
    if cache is not None:
        cache.put(
            parsed.row_id,
            Entry(
                kind=parsed.kind.value,
                stored_hash=loaded.stored_hash,
                pepper_version=loaded.pepper_version,
                principal=loaded.result.principal,
                org_rev=loaded.org_rev,
                instance_rev=loaded.instance_rev,
                valid_until=loaded.valid_until,
                last_touched=utcnow() if loaded.result.touch else loaded.last_touched,
                touch_every=loaded.touch_every,
                networks=networks,
                allowlist=allowlist,
            ),
        )
    check_address(allowlist, loaded.result.principal, actor)
    return watch_network(loaded.result, parsed.kind, parsed.row_id, networks, actor, cache)


JWT_KIND = "jwt"  # the cache's kind of a verified JWT, kept under `_jwt_key`


def _jwt_key(token: str) -> str:
    return f"{JWT_KIND}:{sha256_hex(token)}"


def _jwt(
    db: Session,
    token: str,
    actor: Actor,
    hasher: TokenHasher,
    cache: AuthCache | None,
    verify: credentials.JwtVerifier | None,
) -> Authenticated:
    """A bearer credential that is no `<kind>_<id>_<secret>`: a JWT the verifier accepts,
    or refused (fail closed)."""
    if verify is None or not looks_like_jwt(token):
        raise rejected(actor, "unknown_credential_kind")
    if cache is not None:
        hit = authenticate_cached(token, actor, hasher, cache)
        if hit is not None:
            return hit
    loaded = verify(db, token, actor)
    entries = loaded.ip_allowlist
    if entries is None:
        entries = tenancy.ip_allowlist(db, loaded.result.principal.org_id)
    allowlist = parse_allowlist(entries)
    if cache is not None:
        cache.put(
            _jwt_key(token),
            Entry(
                kind=JWT_KIND,
                stored_hash="",
                pepper_version=0,
                principal=loaded.result.principal,
                org_rev=loaded.org_rev,
                instance_rev=loaded.instance_rev,
                valid_until=loaded.valid_until,
                last_touched=loaded.last_touched,
                touch_every=math.inf,
                allowlist=allowlist,
            ),
        )
    check_address(allowlist, loaded.result.principal, actor)
    return loaded.result


@dataclass(frozen=True)
class _Candidate:
    """A cached entry whose secret matched and whose time limits hold; it still needs
    its revisions confirmed."""

    row_id: str  # the cache's key (a JWT's is `_jwt_key`)
    kind: TokenKind | None  # None: a JWT
    entry: Entry
    now: datetime
    upgraded: tuple[str, int] | None  # (digest, version) under the active pepper version


def _jwt_candidate(cache: AuthCache, token: str) -> _Candidate | None:
    if not looks_like_jwt(token):
        return None
    key = _jwt_key(token)  # the same hash: the same token, verified by this app before
    entry = cache.get(key)
    if entry is None or entry.kind != JWT_KIND:
        cache.misses += 1
        return None
    now = utcnow()
    if entry.valid_until is not None and now >= entry.valid_until:
        cache.drop(key)
        return None
    return _Candidate(key, None, entry, now, None)


def _candidate(cache: AuthCache, token: str | None, hasher: TokenHasher) -> _Candidate | None:
    if not token:
        return None
    parsed = parse(token)
    if parsed is None:
        return _jwt_candidate(cache, token)
    if not _known(parsed.kind):
        return None
    entry = cache.get(parsed.row_id)
    if entry is None or entry.kind != parsed.kind.value:
        cache.misses += 1
        return None
    if not hasher.matches(parsed.kind, parsed.secret, entry.pepper_version, entry.stored_hash):
        return None
    now = utcnow()
    if entry.valid_until is not None and now >= entry.valid_until:
        cache.drop(parsed.row_id)
        return None
    upgraded = hasher.upgrade(parsed.kind, parsed.secret, entry.pepper_version)
    return _Candidate(parsed.row_id, parsed.kind, entry, now, upgraded)


def _confirm(
    cache: AuthCache, found: _Candidate, revisions: Revisions | None, actor: Actor
) -> Authenticated | None:
    entry, now, row_id = found.entry, found.now, found.row_id
    if revisions != (entry.org_rev, entry.instance_rev):  # changed, or unreadable
        cache.drop(row_id)
        cache.misses += 1
        return None
    cache.hits += 1
    check_address(entry.allowlist, entry.principal, actor)
    who = entry.principal.actor
    principal = entry.principal.acting_as(
        Actor(who.type, who.id, actor.ip, actor.user_agent, actor.request_id)
    )
    touch = None
    due = (now - entry.last_touched).total_seconds() >= entry.touch_every
    if due and found.kind in _OWN_KINDS:  # other kinds keep no bookkeeping
        touch = (
            _touch_session(row_id, now)
            if found.kind is TokenKind.SESSION
            else _touch_key(row_id, now, actor.ip)
        )
        cache.update(row_id, lambda e: replace(e, last_touched=now))
    extra: tuple[Touch, ...] = ()
    if found.upgraded is not None and found.kind is not None:
        digest, version = found.upgraded
        cache.update(row_id, lambda e: replace(e, stored_hash=digest, pepper_version=version))
        old = (entry.stored_hash, entry.pepper_version)
        extra = (_rehash(found.kind, row_id, old, found.upgraded),)
    hit = Authenticated(principal, touch, extra)
    return watch_network(hit, found.kind, row_id, entry.networks, actor, cache)


def authenticate_cached(
    token: str | None, actor: Actor, hasher: TokenHasher, cache: AuthCache
) -> Authenticated | None:
    """The cache's answer alone (no ORM session, no refusal): None means "ask
    `authenticate`", which alone decides refusals."""
    found = _candidate(cache, token, hasher)
    if found is None:
        return None
    return _confirm(cache, found, cache.revisions(found.entry.principal.org_id), actor)


async def authenticate_cached_async(
    token: str | None, actor: Actor, hasher: TokenHasher, cache: AuthCache
) -> Authenticated | None:
    """`authenticate_cached` with the revision read awaited on the event loop (for a
    networked database)."""
    found = _candidate(cache, token, hasher)
    if found is None:
        return None
    revisions = await cache.revisions_async(found.entry.principal.org_id)
    return _confirm(cache, found, revisions, actor)


def _earliest(*instants: datetime | None) -> datetime | None:
    present = [i for i in instants if i is not None]
    return min(present) if present else None


def _grants_limit(grants_until: datetime | None, now: datetime) -> datetime | None:
    """While any grant may be in force, each grant's end changes the permissions: such
    callers are not cached beyond this second."""
    if grants_until is not None and grants_until > now:
        return now + timedelta(seconds=1)
    return None


def _session(
    db: Session, session_id: str, secret: str, actor: Actor, hasher: TokenHasher
) -> Loaded:
    found = db.execute(_SESSION_QUERY.where(UserSession.id == session_id)).first()
    row = _SessionRow._make(found) if found is not None else None
    now = utcnow()
    if row is None or not hasher.matches(
        TokenKind.SESSION, secret, row.pepper_version, row.token_hash
    ):
        raise rejected(actor, "unknown_or_wrong_secret")
    org_id, resource = row.org_id, ("session", session_id)
    if row.revoked_at is not None:
        raise rejected(actor, "session_revoked", org_id, resource)
    idle = row.idle_timeout
    if row.expires_at <= now or (now - row.last_seen_at).total_seconds() > idle:
        raise expired(
            actor, "session_expired", org_id, resource, "the session has expired: sign in again"
        )
    if row.status != "active" or row.org_status != "active":
        raise rejected(actor, "user_inactive", org_id, resource)
    rights = authz.user_rights(db, org_id, row.role, row.user_id, row.grants_until)
    amr = tuple(row.amr) if row.amr else (mfa.PASSWORD,)  # sessions older than MFA
    principal = Principal(
        principal_type="user",
        id=row.user_id,
        org_id=org_id,
        role=row.role,
        credential=CredentialKind.SESSION,
        role_permissions=rights.permissions,
        user_id=row.user_id,
        session_id=session_id,
        credential_id=session_id,
        actor=Actor("user", row.user_id, actor.ip, actor.user_agent, actor.request_id),
        temporary=rights.temporary,
        # Step-up reads these from the (cached) principal: no query per sensitive action.
        # A step-up or a policy change bumps the auth revision, which reloads them.
        amr=amr,
        auth_time=as_utc(row.auth_time or row.created_at),
        step_up_max_age=row.step_up_max_age or DEFAULT_STEP_UP_MAX_AGE,
        mfa_pending=mfa.required(row.mfa_policy, row.role) and not mfa.has_second_factor(amr),
    )
    touch_every = min(TOUCH_INTERVAL_SECONDS, idle / 10)
    touch = None
    if (now - row.last_seen_at).total_seconds() >= touch_every:
        touch = _touch_session(session_id, now)
    return Loaded(
        Authenticated(principal, touch),
        stored_hash=row.token_hash,
        pepper_version=row.pepper_version,
        org_rev=int(row.org_rev),
        instance_rev=int(row.instance_rev),
        valid_until=_earliest(
            row.expires_at,
            row.last_seen_at + timedelta(seconds=idle),
            _grants_limit(row.grants_until, now),
        ),
        last_touched=row.last_seen_at,
        touch_every=touch_every,
        ip_allowlist=list(row.ip_allowlist or []),
    )


def _api_key(db: Session, key_id: str, secret: str, actor: Actor, hasher: TokenHasher) -> Loaded:
    found = db.execute(_KEY_QUERY.where(ApiKey.id == key_id)).first()
    row = _KeyRow._make(found) if found is not None else None
    now = utcnow()
    if row is None or not hasher.matches(
        TokenKind.API_KEY, secret, row.pepper_version, row.secret_hash
    ):
        raise rejected(actor, "unknown_or_wrong_secret")
    org_id, user_id, resource = row.org_id, row.user_id, ("api_key", key_id)
    if row.revoked_at is not None and row.revoked_at <= now:
        raise rejected(actor, "key_revoked", org_id, resource)
    if row.expires_at is not None and row.expires_at <= now:
        raise expired(
            actor, "key_expired", org_id, resource, "the API key has expired: use a new key"
        )
    if row.org_status != "active":
        raise rejected(actor, "org_inactive", org_id, resource)
    perms = authz.permissions_of_role(db, org_id, row.role)
    principal_type, principal_id = "api_key", key_id
    temporary: dict[Permission, datetime] = {}
    if user_id is not None:
        if row.user_status != "active":
            raise rejected(actor, "owner_inactive", org_id, resource)
        # A key never holds more than its owner holds right now, nor for longer.
        owner = authz.user_rights(db, org_id, row.user_role, user_id, row.grants_until)
        perms = perms & owner.permissions
        temporary = {p: end for p, end in owner.temporary.items() if p in perms}
    elif row.service_account_id is not None:
        if row.sa_status != "active":
            raise rejected(actor, "owner_inactive", org_id, resource)
        perms = perms & authz.permissions_of_role(db, org_id, row.sa_role)
        principal_type, principal_id = "service_account", row.service_account_id
    principal = Principal(
        principal_type=principal_type,
        id=principal_id,
        org_id=org_id,
        role=row.role,
        credential=CredentialKind.API_KEY,
        role_permissions=perms,
        user_id=user_id,
        credential_id=key_id,
        actor=Actor(principal_type, principal_id, actor.ip, actor.user_agent, actor.request_id),
        temporary=temporary,
        # Read from the (cached) principal at each step-up action; a change of the
        # setting bumps the organisation's auth revision, which reloads it.
        step_up_refused=bool(row.refuses_admin_keys) and row.role == "admin",
    )
    last_used = row.last_used_at
    touch = None
    if last_used is None or (now - last_used).total_seconds() >= TOUCH_INTERVAL_SECONDS:
        touch = _touch_key(key_id, now, actor.ip)
    return Loaded(
        Authenticated(principal, touch),
        stored_hash=row.secret_hash,
        pepper_version=row.pepper_version,
        org_rev=int(row.org_rev),
        instance_rev=int(row.instance_rev),
        valid_until=_earliest(
            row.expires_at,
            row.revoked_at,  # a rotated key's overlap ends
            _grants_limit(row.grants_until if user_id is not None else None, now),
        ),
        last_touched=last_used or now,
        touch_every=TOUCH_INTERVAL_SECONDS,
        ip_allowlist=list(row.ip_allowlist or []),
    )


_OWN_DIGESTS: dict[TokenKind, InstrumentedAttribute[str]] = {
    TokenKind.SESSION: UserSession.token_hash,
    TokenKind.API_KEY: ApiKey.secret_hash,
}


def _digest_column(kind: TokenKind) -> InstrumentedAttribute[str]:
    own = _OWN_DIGESTS.get(kind)
    if own is not None:
        return own
    foreign = credentials.resolver(kind)
    if foreign is None:  # cannot happen: only a resolved credential is rehashed
        raise LookupError(f"no resolver for {kind.name} credentials")
    return foreign.digest


def _rehash(kind: TokenKind, row_id: str, old: tuple[str, int], new: tuple[str, int]) -> Touch:
    """Store a credential's digest under the active pepper version, unless the row
    changed meanwhile (compare-and-set on the old digest and version). Bumps no auth
    revision: the same secret matches before and after (`revisions.REHASH_OPTION`)."""
    column = _digest_column(kind)
    model = column.class_

    def run(db: Session) -> None:
        db.execute(
            update(model)
            .where(model.id == row_id, model.pepper_version == old[1], column == old[0])
            .values({column.key: new[0], "pepper_version": new[1]})
            .execution_options(**{revisions.REHASH_OPTION: True})
        )

    return run


def _touch_session(session_id: str, now: datetime) -> Touch:
    def run(db: Session) -> None:
        db.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now))

    return run


def _touch_key(key_id: str, now: datetime, ip: str | None) -> Touch:
    def run(db: Session) -> None:
        db.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now, last_used_ip=ip)
        )

    return run
