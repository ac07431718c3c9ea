"""Bearer credential → Principal. The hot path of every request.

A miss reads the credential, its owner, its organisation and their auth revisions in
one indexed query. A hit (see `authcache`) re-checks the secret and reads only the two
revision counters, so suspension, deletion, revocation, logout, role changes and expiry
take effect on the very next request on every worker. Writes the hot path needs
(`last_used_at`, `last_seen_at`) are coarse (at most once per minute per credential)
and done after the response's transaction, never blocking it. So is the rehash of a
credential stored under an older pepper version: the secret just presented is hashed
under the active version, for the cache at once and for the row after the request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from bastion.agents.models import Agent, Run
from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.netguard import network_of
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import Principal
from bastion.core.revisions import INSTANCE, REHASH_OPTION, AuthRevision
from bastion.identity.authcache import AuthCache, Entry, Revisions
from bastion.identity.models import ApiKey, ApiKeyNetwork, ServiceAccount, User, UserSession
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.tenancy.models import Organization

TOUCH_INTERVAL_SECONDS = 60

Touch = Callable[[Session], None]


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    touch: Touch | None  # a coarse bookkeeping write to run after the request commits
    extra: tuple[Touch, ...] = ()  # further after-commit writes (e.g. a new key network)

    @property
    def after_commit(self) -> tuple[Touch, ...]:
        return (self.touch, *self.extra) if self.touch is not None else self.extra


@dataclass(frozen=True)
class _Loaded:
    """A miss's answer and what the cache needs to keep it."""

    result: Authenticated
    stored_hash: str
    pepper_version: int
    org_rev: int
    instance_rev: int
    valid_until: datetime | None
    last_touched: datetime
    touch_every: float


_OrgRev = aliased(AuthRevision)
_INSTANCE_REV = (
    select(func.coalesce(func.max(AuthRevision.revision), 0))
    .where(AuthRevision.org_id == INSTANCE)
    .scalar_subquery()
)


_SESSION_QUERY = (
    select(
        UserSession.token_hash,
        UserSession.pepper_version,
        UserSession.expires_at,
        UserSession.last_seen_at,
        UserSession.idle_timeout,
        UserSession.revoked_at,
        User.id,
        User.org_id,
        User.role,
        User.status,
        User.grants_until,
        Organization.status,
        func.coalesce(_OrgRev.revision, 0),
        _INSTANCE_REV,
    )
    .join(User, User.id == UserSession.user_id)
    .join(Organization, Organization.id == User.org_id)
    .outerjoin(_OrgRev, _OrgRev.org_id == Organization.id)
)

_KEY_QUERY = (
    select(
        ApiKey.secret_hash,
        ApiKey.pepper_version,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        ApiKey.org_id,
        ApiKey.role,
        ApiKey.user_id,
        ApiKey.service_account_id,
        User.status,
        User.role,
        User.grants_until,
        ServiceAccount.status,
        ServiceAccount.role,
        Organization.status,
        func.coalesce(_OrgRev.revision, 0),
        _INSTANCE_REV,
    )
    .outerjoin(User, User.id == ApiKey.user_id)
    .outerjoin(ServiceAccount, ServiceAccount.id == ApiKey.service_account_id)
    .join(Organization, Organization.id == ApiKey.org_id)
    .outerjoin(_OrgRev, _OrgRev.org_id == Organization.id)
)


def _rejected(
    actor: Actor, reason: str, org_id: str | None = None, resource: tuple[str, str] | None = None
) -> Unauthenticated:
    return Unauthenticated("credential is missing, invalid, revoked or expired").with_audit(
        type=EventType.AUTH_CREDENTIAL_REJECTED,
        actor=actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=resource,
    )


def authenticate(
    db: Session,
    token: str | None,
    actor: Actor,
    hasher: TokenHasher,
    cache: AuthCache | None = None,
) -> Authenticated:
    if not token:
        raise Unauthenticated("a bearer credential is required")
    parsed = parse(token)
    if parsed is None or parsed.kind not in _CACHED_KINDS:
        raise _rejected(actor, "unknown_credential_kind")  # fail closed
    if cache is not None:
        hit = authenticate_cached(token, actor, hasher, cache)
        if hit is not None:
            return hit
    networks: frozenset[str] = frozenset()
    if parsed.kind is TokenKind.SESSION:
        loaded = _session(db, parsed.row_id, parsed.secret, actor, hasher)
    elif parsed.kind is TokenKind.AGENT_RUN:
        loaded = _agent_run(db, parsed.row_id, parsed.secret, actor, hasher)
    else:
        loaded = _api_key(db, parsed.row_id, parsed.secret, actor, hasher)
        networks = _key_networks(db, parsed.row_id)
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
            ),
        )
    return _watch_network(loaded.result, parsed.kind, parsed.row_id, networks, actor, cache)


def _key_networks(db: Session, key_id: str) -> frozenset[str]:
    stmt = select(ApiKeyNetwork.network).where(ApiKeyNetwork.key_id == key_id)
    return frozenset(db.execute(stmt).scalars())


def _watch_network(
    result: Authenticated,
    kind: TokenKind,
    key_id: str,
    networks: frozenset[str],
    actor: Actor,
    cache: AuthCache | None,
) -> Authenticated:
    """An API key used from a network it was not used from before: record it (and audit
    it) after the request commits."""
    network = network_of(actor.ip) if kind is TokenKind.API_KEY else None
    if network is None or network in networks:
        return result
    if cache is not None:
        cache.update(key_id, lambda e: replace(e, networks=e.networks | {network}))
    action = _record_network(result.principal, key_id, network, actor.ip, first=not networks)
    return replace(result, extra=(*result.extra, action))


def _record_network(
    principal: Principal, key_id: str, network: str, ip: str | None, *, first: bool
) -> Touch:
    def run(db: Session) -> None:
        insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        stmt = (
            insert(ApiKeyNetwork)
            .values(key_id=key_id, network=network, org_id=principal.org_id, first_seen=utcnow())
            .on_conflict_do_nothing()
        )
        if getattr(db.execute(stmt), "rowcount", 0):  # another worker may have won
            audit.record(
                db,
                type=EventType.API_KEY_NEW_NETWORK,
                actor=principal.actor,
                org_id=principal.org_id,
                resource=("api_key", key_id),
                metadata={"network": network, "ip": ip, "first": first},
            )

    return run


@dataclass(frozen=True)
class _Candidate:
    """A cached entry whose secret matched and whose time limits hold; it still needs
    its revisions confirmed."""

    row_id: str
    kind: TokenKind
    entry: Entry
    now: datetime
    upgraded: tuple[str, int] | None  # (digest, version) under the active pepper version


_CACHED_KINDS = frozenset({TokenKind.API_KEY, TokenKind.SESSION, TokenKind.AGENT_RUN})


def _candidate(cache: AuthCache, token: str | None, hasher: TokenHasher) -> _Candidate | None:
    parsed = parse(token) if token else None
    if parsed is None or parsed.kind not in _CACHED_KINDS:
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
    who = entry.principal.actor
    principal = replace(
        entry.principal,
        actor=Actor(who.type, who.id, actor.ip, actor.user_agent, actor.request_id),
    )
    touch = None
    if (now - entry.last_touched).total_seconds() >= entry.touch_every:
        touch = (
            _touch_session(row_id, now)
            if found.kind is TokenKind.SESSION
            else _touch_key(row_id, now, actor.ip)
        )
        cache.update(row_id, lambda e: replace(e, last_touched=now))
    extra: tuple[Touch, ...] = ()
    if found.upgraded is not None:
        digest, version = found.upgraded
        cache.update(row_id, lambda e: replace(e, stored_hash=digest, pepper_version=version))
        old = (entry.stored_hash, entry.pepper_version)
        extra = (_rehash(found.kind, row_id, old, found.upgraded),)
    hit = Authenticated(principal, touch, extra)
    return _watch_network(hit, found.kind, row_id, entry.networks, actor, cache)


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
) -> _Loaded:
    row = db.execute(_SESSION_QUERY.where(UserSession.id == session_id)).first()
    now = utcnow()
    if row is None or not hasher.matches(TokenKind.SESSION, secret, row[1], row[0]):
        raise _rejected(actor, "unknown_or_wrong_secret")
    (
        _,
        _,
        expires_at,
        last_seen,
        idle,
        revoked_at,
        user_id,
        org_id,
        role,
        status,
        grants_until,
        org_status,
        org_rev,
        instance_rev,
    ) = row
    if revoked_at is not None:
        raise _rejected(actor, "session_revoked", org_id, ("session", session_id))
    if expires_at <= now or (now - last_seen).total_seconds() > idle:
        raise _rejected(actor, "session_expired", org_id, ("session", session_id))
    if status != "active" or org_status != "active":
        raise _rejected(actor, "user_inactive", org_id, ("session", session_id))
    rights = authz.user_rights(db, org_id, role, user_id, grants_until)
    principal = Principal(
        principal_type="user",
        id=user_id,
        org_id=org_id,
        role=role,
        credential=CredentialKind.SESSION,
        role_permissions=rights.permissions,
        user_id=user_id,
        session_id=session_id,
        credential_id=session_id,
        actor=Actor("user", user_id, actor.ip, actor.user_agent, actor.request_id),
        temporary=rights.temporary,
    )
    touch_every = min(TOUCH_INTERVAL_SECONDS, idle / 10)
    touch = None
    if (now - last_seen).total_seconds() >= touch_every:
        touch = _touch_session(session_id, now)
    return _Loaded(
        Authenticated(principal, touch),
        stored_hash=row[0],
        pepper_version=row[1],
        org_rev=int(org_rev),
        instance_rev=int(instance_rev),
        valid_until=_earliest(
            expires_at,
            last_seen + timedelta(seconds=idle),
            _grants_limit(grants_until, now),
        ),
        last_touched=last_seen,
        touch_every=touch_every,
    )


def _api_key(db: Session, key_id: str, secret: str, actor: Actor, hasher: TokenHasher) -> _Loaded:
    row = db.execute(_KEY_QUERY.where(ApiKey.id == key_id)).first()
    now = utcnow()
    if row is None or not hasher.matches(TokenKind.API_KEY, secret, row[1], row[0]):
        raise _rejected(actor, "unknown_or_wrong_secret")
    (
        _,
        _,
        expires_at,
        revoked_at,
        last_used,
        org_id,
        role,
        user_id,
        sa_id,
        user_status,
        user_role,
        grants_until,
        sa_status,
        sa_role,
        org_status,
        org_rev,
        instance_rev,
    ) = row
    resource = ("api_key", key_id)
    if revoked_at is not None and revoked_at <= now:
        raise _rejected(actor, "key_revoked", org_id, resource)
    if expires_at is not None and expires_at <= now:
        raise _rejected(actor, "key_expired", org_id, resource)
    if org_status != "active":
        raise _rejected(actor, "org_inactive", org_id, resource)
    perms = authz.permissions_of_role(db, org_id, role)
    principal_type, principal_id = "api_key", key_id
    temporary: dict[Permission, datetime] = {}
    if user_id is not None:
        if user_status != "active":
            raise _rejected(actor, "owner_inactive", org_id, resource)
        # A key never holds more than its owner holds right now, nor for longer.
        owner = authz.user_rights(db, org_id, user_role, user_id, grants_until)
        perms = perms & owner.permissions
        temporary = {p: end for p, end in owner.temporary.items() if p in perms}
    elif sa_id is not None:
        if sa_status != "active":
            raise _rejected(actor, "owner_inactive", org_id, resource)
        perms = perms & authz.permissions_of_role(db, org_id, sa_role)
        principal_type, principal_id = "service_account", sa_id
    principal = Principal(
        principal_type=principal_type,
        id=principal_id,
        org_id=org_id,
        role=role,
        credential=CredentialKind.API_KEY,
        role_permissions=perms,
        user_id=user_id,
        credential_id=key_id,
        actor=Actor(principal_type, principal_id, actor.ip, actor.user_agent, actor.request_id),
        temporary=temporary,
    )
    touch = None
    if last_used is None or (now - last_used).total_seconds() >= TOUCH_INTERVAL_SECONDS:
        touch = _touch_key(key_id, now, actor.ip)
    return _Loaded(
        Authenticated(principal, touch),
        stored_hash=row[0],
        pepper_version=row[1],
        org_rev=int(org_rev),
        instance_rev=int(instance_rev),
        valid_until=_earliest(
            expires_at,
            revoked_at,  # a rotated key's overlap ends
            _grants_limit(grants_until if user_id is not None else None, now),
        ),
        last_touched=last_used or now,
        touch_every=TOUCH_INTERVAL_SECONDS,
    )


_RUN_QUERY = (
    select(
        Run.token_hash,
        Run.pepper_version,
        Run.expires_at,
        Run.revoked_at,
        Run.org_id,
        Run.agent_id,
        Run.on_behalf_of,
        Organization.status,
        User.status,
        func.coalesce(_OrgRev.revision, 0),
        _INSTANCE_REV,
    )
    .join(Agent, Agent.id == Run.agent_id)
    .join(Organization, Organization.id == Run.org_id)
    .outerjoin(User, User.id == Run.on_behalf_of)
    .outerjoin(_OrgRev, _OrgRev.org_id == Organization.id)
)


def _agent_run(db: Session, run_id: str, secret: str, actor: Actor, hasher: TokenHasher) -> _Loaded:
    """A run's token: valid until the run expires or is revoked, while its agent exists,
    its organisation is active and the user it acts for is active. It carries no
    organisation permission: it acts only on its own run (and the secrets its agent
    was given). Cached like the others: revoking the run, changing or deleting its
    agent, suspending its user or organisation all bump the revision."""
    row = db.execute(_RUN_QUERY.where(Run.id == run_id)).first()
    if row is None or not hasher.matches(TokenKind.AGENT_RUN, secret, row[1], row[0]):
        raise _rejected(actor, "unknown_or_wrong_secret")
    (
        _,
        _,
        expires_at,
        revoked_at,
        org_id,
        agent_id,
        on_behalf_of,
        org_status,
        user_status,
        org_rev,
        instance_rev,
    ) = row
    resource = ("run", run_id)
    now = utcnow()
    if revoked_at is not None:
        raise _rejected(actor, "run_revoked", org_id, resource)
    if expires_at <= now:
        raise _rejected(actor, "run_expired", org_id, resource)
    if org_status != "active" or (on_behalf_of is not None and user_status != "active"):
        raise _rejected(actor, "run_inactive", org_id, resource)
    principal = Principal(
        principal_type="agent_run",
        id=run_id,
        org_id=org_id,
        role="agent_run",
        credential=CredentialKind.AGENT_RUN,
        role_permissions=frozenset(),
        credential_id=run_id,
        agent_id=agent_id,
        on_behalf_of=on_behalf_of,
        actor=Actor("agent_run", run_id, actor.ip, actor.user_agent, actor.request_id),
    )
    return _Loaded(
        Authenticated(principal, None),
        stored_hash=row[0],
        pepper_version=row[1],
        org_rev=int(org_rev),
        instance_rev=int(instance_rev),
        valid_until=expires_at,
        last_touched=now,
        touch_every=math.inf,  # nothing to keep up to date
    )


_DIGEST_COLUMN = {
    TokenKind.SESSION: UserSession.token_hash,
    TokenKind.API_KEY: ApiKey.secret_hash,
    TokenKind.AGENT_RUN: Run.token_hash,
}


def _rehash(kind: TokenKind, row_id: str, old: tuple[str, int], new: tuple[str, int]) -> Touch:
    """Store a credential's digest under the active pepper version, unless the row
    changed meanwhile (compare-and-set on the old digest and version). Bumps no auth
    revision: the same secret matches before and after (`revisions.REHASH_OPTION`)."""
    column = _DIGEST_COLUMN[kind]
    model = column.class_

    def run(db: Session) -> None:
        db.execute(
            update(model)
            .where(model.id == row_id, model.pepper_version == old[1], column == old[0])
            .values({column.key: new[0], "pepper_version": new[1]})
            .execution_options(**{REHASH_OPTION: True})
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
