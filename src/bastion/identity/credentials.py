"""Credential kinds that a domain above identity owns, and what authenticating any
credential produces.

identity authenticates its own kinds (API keys, sessions). A kind whose rows belong to
a higher domain (an agent run's token, `bat_`, owned by `bastion.agents`) is
registered by that domain at import: how to resolve it, which column holds its digest
(so it moves to the current pepper version on use) and which of its rows can still
be used (so a pepper version is retired only once nothing needs it). A kind nobody
registered is refused (default deny), and a domain cannot take over one of identity's
own kinds.

A resolver answers with `Loaded` or raises `rejected(...)`: one indexed query per
credential, which reads the organisation's status with `tenancy.service.org_status`
and the revisions with `bastion.core.revisions` in that same query.

A bearer credential that is a signed JWT (an OAuth access token, issued by
`bastion.oauth`) has no row id and no pepper. Its verifier depends on the instance (its
signing keys, its issuer URL), so the app hands one to `authenticate` (`JwtVerifier`,
built by the issuing domain): it checks the signature and claims, then reads the
credential's state in one query, as a `Resolver` does. Without one a JWT is refused.

Secrets hashed under the pepper that are not bearer credentials (an OAuth client's
secret) are declared with `register_secret_store`, so a pepper version is retired only
once none of them needs it either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from bastion.core import metrics
from bastion.core.context import Actor
from bastion.core.errors import CredentialExpired, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.principal import Principal
from bastion.identity.models import ServiceAccount, User
from bastion.identity.tokens import TokenHasher, TokenKind

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
class Loaded:
    """A resolved credential and what the cache needs to keep it."""

    result: Authenticated
    stored_hash: str
    pepper_version: int
    org_rev: int
    instance_rev: int
    valid_until: datetime | None
    last_touched: datetime
    touch_every: float  # seconds between bookkeeping writes; `math.inf`: none
    # The organisation's IP allowlist as read in the resolver's own query (use
    # `tenancy.service.org_ip_allowlist`); None: not read, `authenticate` reads it.
    ip_allowlist: list[str] | None = None


def rejected(
    actor: Actor, reason: str, org_id: str | None = None, resource: tuple[str, str] | None = None
) -> Unauthenticated:
    """The one refusal of every credential kind (the same answer whatever the reason),
    audited with the reason."""
    metrics.AUTH_FAILURES.labels(reason).inc()
    return Unauthenticated("credential is missing, invalid, revoked or expired").with_audit(
        type=EventType.AUTH_CREDENTIAL_REJECTED,
        actor=actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=resource,
    )


def expired(
    actor: Actor, reason: str, org_id: str, resource: tuple[str, str], detail: str
) -> CredentialExpired:
    """The refusal of a credential whose secret was verified but whose time is over
    (`credential_expired`, saying what to do), audited like `rejected`."""
    metrics.AUTH_FAILURES.labels(reason).inc()
    return CredentialExpired(detail).with_audit(
        type=EventType.AUTH_CREDENTIAL_REJECTED,
        actor=actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=resource,
    )


# (db, row id, secret, actor, hasher) -> the credential, or raises `rejected(...)`
Resolve = Callable[[Session, str, str, Actor, TokenHasher], Loaded]


@dataclass(frozen=True)
class Resolver:
    """How to authenticate a credential kind another domain owns. Its rows keep no
    bookkeeping (`Loaded.touch_every` is `math.inf`)."""

    kind: TokenKind
    resolve: Resolve
    # The column holding the digest; its table has `id` and `pepper_version` columns.
    digest: InstrumentedAttribute[str]
    # Which rows can still verify at a given instant (revoked and expired ones cannot).
    live: Callable[[datetime], ColumnElement[bool]]
    name: str  # in pepper usage counts, e.g. "agent_runs"

    @property
    def model(self) -> Any:
        return self.digest.class_


# (db, the JWT, actor) -> the credential, or raises `rejected(...)`. Its `Loaded` has
# `stored_hash` "" and `pepper_version` 0: the cache keeps a verified JWT by its hash.
JwtVerifier = Callable[[Session, str, Actor], Loaded]


@dataclass(frozen=True)
class SecretStore:
    """Pepper-hashed secrets that are not bearer credentials: counted by
    `bastion.identity.pepper` like the credentials (its table has `pepper_version`)."""

    digest: InstrumentedAttribute[str]
    live: Callable[[datetime], ColumnElement[bool]]
    name: str

    @property
    def model(self) -> Any:
        return self.digest.class_


OWN_KINDS = frozenset(
    {TokenKind.API_KEY, TokenKind.SESSION, TokenKind.SETUP, TokenKind.PASSWORD_RESET}
)
_RESOLVERS: dict[TokenKind, Resolver] = {}
_STORES: dict[str, SecretStore] = {}
_registering = threading.Lock()


def register(resolver: Resolver) -> None:
    """Called by the domain that owns `resolver.kind`, at import."""
    if resolver.kind in OWN_KINDS:
        raise ValueError(f"{resolver.kind.name} credentials are identity's own")
    with _registering:
        if _RESOLVERS.setdefault(resolver.kind, resolver) is not resolver:
            raise ValueError(f"{resolver.kind.name} credentials already have a resolver")


def resolver(kind: TokenKind) -> Resolver | None:
    """The kind's resolver; None (refuse) when nobody registered it."""
    return _RESOLVERS.get(kind)


def registered() -> tuple[Resolver, ...]:
    return tuple(_RESOLVERS.values())


def register_secret_store(store: SecretStore) -> None:
    with _registering:
        if _STORES.setdefault(store.name, store) is not store:
            raise ValueError(f"secret store {store.name} is already registered")


def secret_stores() -> tuple[SecretStore, ...]:
    return tuple(_STORES.values())


def labelled(row: type[tuple[Any, ...]], **columns: ColumnElement[Any] | Any) -> list[Any]:
    """The columns of a one-row query, in the order of the NamedTuple `row`'s fields and
    labelled by them, so `row._make(result)` reads each value by name: a column added,
    removed or reordered on one side only fails at import, never shifts a meaning."""
    fields: tuple[str, ...] = row._fields  # type: ignore[attr-defined]
    if set(fields) != set(columns):
        raise TypeError(f"{row.__name__}: columns {sorted(columns)} != fields {sorted(fields)}")
    return [columns[name].label(name) for name in fields]


def service_account_column(account_id: Any, column: str) -> ColumnElement[Any]:
    """A column (`status`, `role`, `org_id`) of the service account `account_id` (a
    column) names, NULL when there is none: for a resolver's one query."""
    return (
        select(getattr(ServiceAccount, column))
        .where(ServiceAccount.id == account_id)
        .scalar_subquery()
    )


def user_status(user_id: Any) -> ColumnElement[str]:
    """The status of the user `user_id` (a column) names, NULL when there is none: for
    a resolver's one query."""
    return select(User.status).where(User.id == user_id).scalar_subquery()
