"""The SSO sign-in flow, by connection type.

    GET  /v1/auth/sso/start         `start`: a request in flight, 302 to the provider
    GET  /v1/auth/sso/oidc/callback `oidc_flow.oidc_callback`: the provider's answer
    POST /v1/auth/sso/exchange      `exchange`: the one-time code for a session

`start` dispatches on the connection's type to a registered protocol (each registers
its own with `register_protocol`: `bastion.sso.oidc_flow`, `bastion.sso.saml_flow`). The
provider's answer goes through `answer` (claim the request once, from its browser;
verify; complete; or fail back to `return_to`). Whatever the protocol, once the
provider has proven who the person is, `complete_sign_in` takes the connection and the
`VerifiedIdentity` and does the rest: domain and user checks, just-in-time creation,
role and team mapping, audit, and the one-time code.

Binding and one-time use (login CSRF, replays): the browser that starts a sign-in gets
a random value in an HttpOnly cookie; the request in flight keeps only keyed hashes of
its `state` and of that value. The callback must come with both (a state from someone
else's browser is refused), within 10 minutes, once. The PKCE verifier and the nonce
are derived from the state under keys of their own, so neither is stored. The code is
kept as a keyed hash, lives 60 seconds and is exchanged once; a browser's exchange
(with an `Origin`) must carry the cookie of the browser that signed in.

A sign-in the provider starts on its own (SAML IdP-initiated, when the connection
allows it) has no request in flight: `unsolicited` records one, already used, bound
to the browser that posted the answer (given a binding cookie if it had none), and
ends at `/console/`.

Failures after the request in flight is known go back to its `return_to` with
`?error=<code>` (never a stack trace) and are audited with the reason; a state nobody
issued is a 400 problem (there is nowhere known to be safe to send the browser).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core import mfa
from bastion.core.clock import as_utc, utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.crypto import random_token
from bastion.core.errors import InvalidInput, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.redirects import is_allowed_return, with_params
from bastion.identity import service as users
from bastion.identity import sessions
from bastion.identity.tokens import TokenHasher
from bastion.secrets.vault import Vault
from bastion.sso import connections, domains, oidc
from bastion.sso.errors import BadReturnTo, BadState, SsoFailure
from bastion.sso.models import SsoCode, SsoConnection, SsoIdentity, SsoRequest
from bastion.tenancy import service as tenancy

log = structlog.get_logger("bastion.sso")
STATE_TTL = 600
CODE_TTL = 60
START_PATH = "/v1/auth/sso/start"
DEFAULT_RETURN_TO = "/console/"
OIDC_CALLBACK_PATH = "/v1/auth/sso/oidc/callback"
COOKIE = "bastion-sso"
SECURE_COOKIE = "__Host-bastion-sso"  # under https: Secure, Path=/, no Domain
_STATE, _BROWSER, _CODE = "sso-state", "sso-browser", "sso-code"


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who the identity provider proved the person is."""

    subject: str
    email: str | None
    email_verified: bool | None
    groups: tuple[str, ...] = ()
    name: str | None = None
    amr: tuple[str, ...] = ()  # what the provider reports it verified ("mfa" counts)


@dataclass(frozen=True)
class Env:
    """What a step of the flow needs from the running app."""

    settings: Settings
    hasher: TokenHasher = field(repr=False)
    vault: Vault = field(repr=False)
    rp: oidc.RelyingParty = field(repr=False)
    actor: Actor

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.secure else COOKIE

    @property
    def secure(self) -> bool:
        return self.settings.public_url.startswith("https://")

    @property
    def redirect_uri(self) -> str:
        return self.settings.public_url + OIDC_CALLBACK_PATH


@dataclass(frozen=True)
class Redirect:
    location: str
    browser: str | None = field(default=None, repr=False)  # cookie value to set
    # The provider answers with a cross-site POST (SAML): the binding cookie must be
    # SameSite=None (and so Secure) to come along; a redirect back (OIDC) keeps Lax.
    cross_site_post: bool = False


# (db, env, connection, state, login hint) -> where to send the browser
Starter = Callable[[Session, Env, SsoConnection, str, str | None], str]
_PROTOCOLS: dict[str, Starter] = {}
_registering = threading.Lock()


def register_protocol(kind: str, starter: Starter) -> None:
    """A connection type's first step (registered by `oidc_flow` and `saml_flow`)."""
    with _registering:
        _PROTOCOLS[kind] = starter


# --- return_to ---------------------------------------------------------------------------


def check_return_to(value: str, settings: Settings) -> str:
    """A relative path on this origin, or a URL on an allowed origin; anything else is
    refused before anything is sent anywhere (open redirect)."""
    if not is_allowed_return(value, (settings.public_url, *settings.allowed_return_origins)):
        raise BadReturnTo()
    return value


# --- start ---------------------------------------------------------------------------------


def derive(env: Env, purpose: str, state: str) -> str:
    """A value only this server can compute from a sign-in's state, per purpose (the
    PKCE verifier, the nonce; SAML: its AuthnRequest ID): nothing of it is stored."""
    return env.hasher.keyed(f"sso-{purpose}", state)[0]


def _browser_value(cookie: str | None) -> str:
    """The browser's binding value: the one it has (several tabs may sign in at once),
    or a new one."""
    if cookie and 32 <= len(cookie) <= 100 and all(c.isalnum() or c in "-_" for c in cookie):
        return cookie
    return random_token(32)


def _connection_for(
    db: Session, email: str | None, connection_id: str | None
) -> SsoConnection | None:
    if connection_id:
        return connections.find_any(db, connection_id)
    if email and "@" in email:
        owner = domains.verified_owner(db, email.rsplit("@", 1)[1].strip().lower())
        if owner is not None:
            found = connections.of_org(db, owner)
            return found[0] if found else None
    return None


def start(
    db: Session,
    env: Env,
    *,
    email: str | None,
    connection_id: str | None,
    return_to: str,
    cookie: str | None,
) -> Redirect:
    return_to = check_return_to(return_to, env.settings)
    if not email and not connection_id:
        raise InvalidInput.field("email", "give email or connection")
    conn = _connection_for(db, email, connection_id)
    if conn is None:
        audit.record(
            db,
            type=EventType.SSO_SIGNIN_FAILED,
            actor=env.actor,
            org_id=None,
            outcome=Outcome.FAILURE,
            reason="no_connection",
        )
        return Redirect(with_params(return_to, error="no_connection"))
    _prune(db)
    browser = _browser_value(cookie)
    state = random_token(32)
    state_hash, version = env.hasher.keyed(_STATE, state)
    browser_hash, browser_version = env.hasher.keyed(_BROWSER, browser)
    if browser_version != version:  # a pepper rotation in between: hash again
        state_hash, version = env.hasher.keyed(_STATE, state)
    request = SsoRequest(
        id=new_id("ssor"),
        org_id=conn.org_id,
        connection_id=conn.id,
        state_hash=state_hash,
        browser_hash=browser_hash,
        pepper_version=version,
        return_to=return_to,
        expires_at=utcnow() + timedelta(seconds=STATE_TTL),
    )
    starter = _PROTOCOLS.get(conn.type)
    try:
        if starter is None:
            raise SsoFailure("protocol_unavailable", f"no {conn.type} support in this build")
        location = _guarded(lambda: starter(db, env, conn, state, email))
    except SsoFailure as failure:
        _audit_failure(db, env, conn, None, failure)
        return Redirect(with_params(return_to, error=failure.code))
    db.add(request)
    db.flush()
    audit.record(
        db,
        type=EventType.SSO_SIGNIN_STARTED,
        actor=env.actor,
        org_id=conn.org_id,
        resource=("sso_connection", conn.id),
        metadata={"connection_id": conn.id, "type": conn.type},
    )
    return Redirect(location, browser, cross_site_post=conn.type == "saml")


PRUNE_BATCH = 200


def _prune(db: Session) -> None:
    """Drop sign-in requests and codes past their time (a day later, so a late replay
    still meets `state_replayed` rather than an unknown state), a batch at a time."""
    before = utcnow() - timedelta(days=1)
    for model in (SsoRequest, SsoCode):
        stale = select(model.id).where(model.expires_at < before).limit(PRUNE_BATCH)
        ids = list(db.execute(stale).scalars())
        if ids:
            db.execute(delete(model).where(model.id.in_(ids)))


# --- the provider's answer -----------------------------------------------------------------


def claim_request(
    db: Session, env: Env, state: str | None, cookie: str | None
) -> tuple[SsoRequest, SsoConnection]:
    """The request in flight `state` names, marked used (once, on every worker), checked
    against the browser. Raises `BadState` for a state nobody issued; `SsoFailure` (with
    the request known, so its `return_to` can be told) for everything else."""
    if not state or len(state) > 200:
        raise _bad_state(env, "state_missing")
    state_hash = env.hasher.keyed(_STATE, state)[0]
    request = db.execute(
        select(SsoRequest).where(SsoRequest.state_hash == state_hash)
    ).scalar_one_or_none()
    if request is None:
        raise _bad_state(env, "state_invalid")
    conn = connections.find_any(db, request.connection_id)
    if conn is None:
        raise _bad_state(env, "connection_removed")
    if request.used_at is not None:
        raise _Known(request, conn, SsoFailure("state_replayed", "state used before"))
    now = utcnow()
    taken = db.execute(
        update(SsoRequest)
        .where(SsoRequest.id == request.id, SsoRequest.used_at.is_(None))
        .values(used_at=now)
    )
    if int(getattr(taken, "rowcount", 0) or 0) != 1:
        raise _Known(request, conn, SsoFailure("state_replayed", "state used concurrently"))
    if as_utc(request.expires_at) <= now:
        raise _Known(request, conn, SsoFailure("state_expired", "sign-in took too long"))
    if not cookie or not env.hasher.keyed_matches(
        _BROWSER, cookie, request.pepper_version, request.browser_hash
    ):
        raise _Known(request, conn, SsoFailure("browser_mismatch", "state from another browser"))
    return request, conn


class _Known(Exception):
    def __init__(self, request: SsoRequest, conn: SsoConnection, failure: SsoFailure) -> None:
        super().__init__(failure.code)
        self.request, self.conn, self.failure = request, conn, failure


def _bad_state(env: Env, reason: str) -> BadState:
    return BadState("this sign-in is unknown or expired: start again").with_audit(
        type=EventType.SSO_SIGNIN_FAILED,
        actor=env.actor,
        org_id=None,
        outcome=Outcome.FAILURE,
        reason=reason,
    )


Verify = Callable[[SsoRequest, SsoConnection], VerifiedIdentity]


def answer(
    db: Session, env: Env, state: str | None, cookie: str | None, verify: Verify
) -> Redirect:
    """Every protocol's answer from the provider, one way: claim the request in flight
    `state` names (once, from its browser), let `verify` prove who the person is (it
    raises `SsoFailure` when the answer is not good), finish with `complete_sign_in`,
    and send the browser to `return_to` with the code, or with `?error=` and an audit
    event. The OIDC callback is one; SAML's ACS passes its RelayState and validator."""
    try:
        request, conn = claim_request(db, env, state, cookie)
    except _Known as known:
        return fail(db, env, known.request, known.conn, known.failure)
    try:
        identity = _guarded(lambda: verify(request, conn))
        code = complete_sign_in(db, env, conn, identity, request)
    except SsoFailure as failure:
        return fail(db, env, request, conn, failure)
    return Redirect(with_params(request.return_to, code=code))


def issued(db: Session, env: Env, state: str | None) -> bool:
    """Whether `state` names a sign-in this server started (in flight, used or not,
    until pruned a day after it expired)."""
    if not state or len(state) > 200:
        return False
    state_hash = env.hasher.keyed(_STATE, state)[0]
    found = db.execute(select(SsoRequest.id).where(SsoRequest.state_hash == state_hash))
    return found.first() is not None


def unsolicited(
    db: Session,
    env: Env,
    conn: SsoConnection,
    cookie: str | None,
    verify: Callable[[], VerifiedIdentity],
    *,
    return_to: str = DEFAULT_RETURN_TO,
) -> Redirect:
    """An answer the provider sent without a request of ours (SAML IdP-initiated; the
    caller has checked the connection allows it): recorded as a request already used,
    bound to this browser (the code's exchange must come from it), then `verify` and
    `complete_sign_in` as for any answer."""
    return_to = check_return_to(return_to, env.settings)
    _prune(db)
    browser = _browser_value(cookie)
    browser_hash, version = env.hasher.keyed(_BROWSER, browser)
    now = utcnow()
    request = SsoRequest(
        id=new_id("ssor"),
        org_id=conn.org_id,
        connection_id=conn.id,
        # No state travels: a random one nobody knows, so it can never be claimed.
        state_hash=env.hasher.keyed(_STATE, random_token(32))[0],
        browser_hash=browser_hash,
        pepper_version=version,
        return_to=return_to,
        expires_at=now,
        used_at=now,
    )
    db.add(request)
    db.flush()
    try:
        identity = _guarded(verify)
        code = complete_sign_in(db, env, conn, identity, request)
    except SsoFailure as failure:
        return fail(db, env, request, conn, failure)
    return Redirect(with_params(return_to, code=code), browser, cross_site_post=True)


def refuse(
    db: Session,
    env: Env,
    conn: SsoConnection,
    failure: SsoFailure,
    *,
    return_to: str = DEFAULT_RETURN_TO,
) -> Redirect:
    """Refuse an answer that belongs to no request (audited with the reason) and send
    the browser to `return_to` with the code."""
    return_to = check_return_to(return_to, env.settings)
    _audit_failure(db, env, conn, None, failure)
    return Redirect(with_params(return_to, error=failure.code))


T = TypeVar("T")


def _guarded(work: Callable[[], T]) -> T:
    """The provider's part: anything unforeseen in what it sent (a library's error on a
    malformed token, a field of an unexpected type) refuses the sign-in as a failure,
    logged without the token; the database's own errors still end the request."""
    try:
        return work()
    except (SsoFailure, SQLAlchemyError):
        raise
    except Exception as exc:
        log.warning("sso provider answer refused", error=type(exc).__name__)
        raise SsoFailure("provider_invalid", f"unexpected answer: {type(exc).__name__}") from None


def fail(
    db: Session, env: Env, request: SsoRequest, conn: SsoConnection, failure: SsoFailure
) -> Redirect:
    """Audit a refused sign-in with its reason; send the browser back with the code."""
    _audit_failure(db, env, conn, request, failure)
    return Redirect(with_params(request.return_to, error=failure.code))


def _audit_failure(
    db: Session,
    env: Env,
    conn: SsoConnection,
    request: SsoRequest | None,
    failure: SsoFailure,
    user_id: str | None = None,
) -> None:
    audit.record(
        db,
        type=EventType.SSO_SIGNIN_FAILED,
        actor=env.actor,
        org_id=conn.org_id,
        outcome=Outcome.FAILURE,
        resource=("user", user_id) if user_id else ("sso_connection", conn.id),
        reason=failure.code,
        metadata={
            "connection_id": conn.id,
            "detail": failure.detail[:300],
            "request_id": request.id if request else None,
        },
    )


# --- after the provider: one path for every protocol --------------------------------------


def _mapped_role(db: Session, conn: SsoConnection, groups: set[str]) -> str:
    """The first mapping entry whose group the person is in, else the default role;
    a role deleted since the connection was saved refuses the sign-in (fail closed)."""
    role = next((m["role"] for m in conn.role_mapping or [] if m["group"] in groups), None)
    role = role or conn.default_role
    try:
        return authz.resolve_role(db, conn.org_id, role)
    except InvalidInput:
        raise SsoFailure("mapping_invalid", "a mapped role no longer exists") from None


def _checked_email(db: Session, conn: SsoConnection, identity: VerifiedIdentity) -> str:
    email = (identity.email or "").strip()
    if "@" not in email or len(email) > 320:
        raise SsoFailure("email_missing", "the provider sent no usable email")
    if identity.email_verified is False:
        raise SsoFailure("email_unverified", "the provider says the email is not verified")
    domain = email.rsplit("@", 1)[1].lower()
    if domains.verified_owner(db, domain) != conn.org_id:
        raise SsoFailure("domain_not_verified", f"{domain} is not verified by the organisation")
    org = tenancy.find_org(db, conn.org_id)
    if org is None or org.status != "active":
        raise SsoFailure("org_inactive", "organisation not active")
    return email


def _check_binding(db: Session, conn: SsoConnection, subject: str, user_id: str | None) -> bool:
    """The provider subject and the user found by email must be bound to each other,
    or to nobody yet: True when they already are."""
    bound = db.execute(
        select(SsoIdentity.user_id).where(
            SsoIdentity.connection_id == conn.id, SsoIdentity.subject == subject
        )
    ).scalar_one_or_none()
    if bound is not None:
        if bound != user_id:
            raise SsoFailure("subject_mismatch", "this provider account signed in as another user")
        return True
    if user_id is not None:
        taken = db.execute(
            select(SsoIdentity.subject).where(
                SsoIdentity.connection_id == conn.id, SsoIdentity.user_id == user_id
            )
        ).scalar_one_or_none()
        if taken is not None:
            raise SsoFailure("subject_mismatch", "the user signs in as another provider account")
    return False


def complete_sign_in(
    db: Session,
    env: Env,
    conn: SsoConnection,
    identity: VerifiedIdentity,
    request: SsoRequest,
) -> str:
    """The provider proved `identity`: check it belongs to `conn`'s organisation,
    create or update the user, and issue the one-time code (returned). Raises
    `SsoFailure` before writing anything when the person may not sign in."""
    email = _checked_email(db, conn, identity)
    subject = identity.subject[:255]
    user = users.find_user_by_email(db, email)
    bound = _check_binding(db, conn, subject, user.id if user else None)
    if user is not None and user.org_id != conn.org_id:
        raise SsoFailure("user_in_other_org", "the email belongs to another organisation")
    if user is not None and user.status == "suspended":
        raise SsoFailure("user_suspended", "user suspended")
    if user is None and not conn.jit:
        raise SsoFailure("user_unknown", "no such user and just-in-time creation is off")
    groups = set(identity.groups)
    role = _mapped_role(db, conn, groups)
    # Decided; from here on only writes.
    created = user is None
    if user is None:
        system = Actor("system", conn.id, env.actor.ip, env.actor.user_agent, env.actor.request_id)
        user = users.provision_sso_user(
            db, system, conn.org_id, email=email, name=identity.name or "", role=role
        )
        audit.record(
            db,
            type=EventType.SSO_USER_PROVISIONED,
            actor=system,
            org_id=conn.org_id,
            resource=("user", user.id),
            metadata={"connection_id": conn.id, "email": user.email, "role": role},
        )
    actor = Actor("user", user.id, env.actor.ip, env.actor.user_agent, env.actor.request_id)
    if not bound:
        db.add(
            SsoIdentity(connection_id=conn.id, subject=subject, org_id=conn.org_id, user_id=user.id)
        )
    role_change = None if created else users.apply_sso_role(db, actor, user, role)
    _apply_teams(db, actor, conn, user.id, groups, role_change)
    code = _issue_code(db, env, conn, user.id, request, identity)
    audit.record(
        db,
        type=EventType.SSO_SIGNIN_SUCCEEDED,
        actor=actor,
        org_id=conn.org_id,
        resource=("user", user.id),
        metadata={
            "connection_id": conn.id,
            "subject": subject[:200],
            "groups": sorted(groups)[:50],
            "created": created,
        },
    )
    return code


def _apply_teams(
    db: Session,
    actor: Actor,
    conn: SsoConnection,
    user_id: str,
    groups: set[str],
    role_change: dict[str, str] | None,
) -> None:
    """The mapped teams, and one `sso.mapping_applied` event when anything changed."""
    wanted = {m["team_id"] for m in conn.team_mapping or [] if m["group"] in groups}
    managed = {m["team_id"] for m in conn.team_mapping or []}
    added, removed = tenancy.sync_memberships(
        db, actor, conn.org_id, user_id, wanted=wanted, managed=managed
    )
    if role_change or added or removed:
        audit.record(
            db,
            type=EventType.SSO_MAPPING_APPLIED,
            actor=actor,
            org_id=conn.org_id,
            resource=("user", user_id),
            metadata={
                "connection_id": conn.id,
                "role": role_change,
                "teams_added": added,
                "teams_removed": removed,
            },
        )


def _issue_code(
    db: Session,
    env: Env,
    conn: SsoConnection,
    user_id: str,
    request: SsoRequest,
    identity: VerifiedIdentity,
) -> str:
    amr = [mfa.FEDERATED] + ([mfa.MULTI] if mfa.MULTI in identity.amr else [])
    code = random_token(32)
    code_hash, version = env.hasher.keyed(_CODE, code)
    db.add(
        SsoCode(
            id=new_id("ssox"),
            org_id=conn.org_id,
            user_id=user_id,
            connection_id=conn.id,
            code_hash=code_hash,
            pepper_version=version,
            browser_hash=request.browser_hash,
            browser_pepper_version=request.pepper_version,
            amr=amr,
            expires_at=utcnow() + timedelta(seconds=CODE_TTL),
        )
    )
    db.flush()
    return code


# --- the code for a session ------------------------------------------------------------


def _refused(env: Env, reason: str, org_id: str | None, code_id: str | None) -> Unauthenticated:
    error = Unauthenticated("the code is invalid, used or expired: sign in again")
    return error.with_audit(
        type=EventType.SSO_SIGNIN_FAILED,
        actor=env.actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
        metadata={"code_id": code_id} if code_id else None,
    )


def exchange(
    db: Session, env: Env, code: str, cookie: str | None, *, from_browser: bool = False
) -> sessions.LoginResult:
    """A session for the person the code was issued to: once, within 60 seconds, and
    from the browser that signed in. A browser's request (`from_browser`: it sent an
    `Origin`) must carry that browser's cookie, so a code planted in a victim's page
    signs nobody in (login CSRF); an API client that drove the flow itself may carry
    its cookie jar or none."""
    if not code or len(code) > 200:
        raise _refused(env, "code_invalid", None, None)
    row = db.execute(
        select(SsoCode).where(SsoCode.code_hash == env.hasher.keyed(_CODE, code)[0])
    ).scalar_one_or_none()
    if row is None:
        raise _refused(env, "code_invalid", None, None)
    if row.used_at is not None:
        raise _refused(env, "code_replayed", row.org_id, row.id)
    now = utcnow()
    taken = db.execute(
        update(SsoCode).where(SsoCode.id == row.id, SsoCode.used_at.is_(None)).values(used_at=now)
    )
    if int(getattr(taken, "rowcount", 0) or 0) != 1:
        raise _refused(env, "code_replayed", row.org_id, row.id)
    if as_utc(row.expires_at) <= now:
        raise _refused(env, "code_expired", row.org_id, row.id)
    if (cookie is not None or from_browser) and not (
        cookie is not None
        and env.hasher.keyed_matches(_BROWSER, cookie, row.browser_pepper_version, row.browser_hash)
    ):
        raise _refused(env, "browser_mismatch", row.org_id, row.id).with_write(_burn(row.id, now))
    user = users.find_user_in_org(db, row.org_id, row.user_id)
    if user is None or user.status != "active":
        raise _refused(env, "user_inactive", row.org_id, row.id)
    result = sessions.open_session(
        db, env.actor, user, list(row.amr or [mfa.FEDERATED]), hasher=env.hasher,
        settings=env.settings,
    )  # fmt: skip
    audit.record(
        db,
        type=EventType.SSO_CODE_EXCHANGED,
        actor=Actor("user", user.id, env.actor.ip, env.actor.user_agent, env.actor.request_id),
        org_id=row.org_id,
        resource=("user", user.id),
        metadata={"connection_id": row.connection_id, "session_id": result.session_id},
    )
    return result


def _burn(code_id: str, now: Any) -> Callable[[Session], None]:
    def run(db: Session) -> None:
        db.execute(
            update(SsoCode)
            .where(SsoCode.id == code_id, SsoCode.used_at.is_(None))
            .values(used_at=now)
        )

    return run
