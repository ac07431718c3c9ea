"""Connecting an integration: the authorization-code flow with PKCE (S256).

`start` (a person with `integrations:manage`, by API) records a request in flight: the
keyed hash of a random `state`, of a browser-binding cookie set with the redirect, the
person and the `return_to` (a relative path or this server's own origin: never an open
redirect), for 10 minutes. The PKCE verifier is derived from the state under a key of
its own, so nothing of it is stored.

`callback` (the provider sends the browser back to `BASTION_PUBLIC_URL` +
`/v1/integrations/oauth/callback`) claims the request once — a compare-and-set on
`used_at`, so a second use on any worker fails — and refuses a state that is unknown,
used, expired or from another browser (the state of someone else's connect: login CSRF)
with 400, audited. With the request known, the person must still be active and still
hold `integrations:manage`; the provider's `error`, or a refused code exchange, sends
the browser to `return_to?error=<code>`; success seals the tokens and sends it to
`return_to?integration=<id>&status=connected`."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.crypto import digest, random_token
from bastion.core.db import get_in_org
from bastion.core.errors import Forbidden
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.core.redirects import is_allowed_return, with_params
from bastion.identity import rights
from bastion.identity.tokens import TokenHasher
from bastion.integrations import provider, vaulting
from bastion.integrations.errors import BadReturnTo, BadState, ProviderError
from bastion.integrations.models import Integration, IntegrationRequest
from bastion.integrations.presets import PRESETS
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

STATE_TTL = 600
CALLBACK_PATH = "/v1/integrations/oauth/callback"
COOKIE = "bastion-int"
SECURE_COOKIE = "__Host-bastion-int"  # under https: Secure, Path=/, no Domain
_STATE, _BROWSER, _PKCE = "int-state", "int-browser", "int-pkce"
PRUNE_BATCH = 200


@dataclass(frozen=True)
class Env:
    settings: Settings
    hasher: TokenHasher = field(repr=False)
    vault: Vault = field(repr=False)
    actor: Actor

    @property
    def secure(self) -> bool:
        return self.settings.public_url.startswith("https://")

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.secure else COOKIE

    @property
    def redirect_uri(self) -> str:
        return redirect_uri(self.settings)

    @property
    def outbound(self) -> provider.Outbound:
        return outbound(self.settings)


def redirect_uri(settings: Settings) -> str:
    return settings.public_url + CALLBACK_PATH


def outbound(settings: Settings) -> provider.Outbound:
    return provider.Outbound(
        settings.outbound_allow, settings.outbound_plaintext_allow, settings.proxy_url
    )


@dataclass(frozen=True)
class Redirect:
    location: str
    browser: str | None = field(default=None, repr=False)  # cookie value to set


def check_return_to(value: str, settings: Settings) -> str:
    """A relative path on this server, or a URL on this server's own origin."""
    if not is_allowed_return(value, (settings.public_url,)):
        raise BadReturnTo()
    return value


def _verifier(env: Env, state: str) -> str:
    return env.hasher.keyed(_PKCE, state)[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _browser_value(cookie: str | None) -> str:
    if cookie and 32 <= len(cookie) <= 100 and all(c.isalnum() or c in "-_" for c in cookie):
        return cookie
    return random_token(32)


def start(
    db: Session,
    env: Env,
    principal: Principal,
    org_id: str,
    integration_id: str,
    *,
    return_to: str,
    cookie: str | None,
) -> Redirect:
    principal.require_org(org_id)
    principal.require(Permission.INTEGRATIONS_MANAGE)
    row = get_in_org(db, Integration, integration_id, org_id, prefix="int", noun="integration")
    if principal.user_id is None:
        raise Forbidden("only a person connects an integration (the consent is theirs)")
    return_to = check_return_to(return_to, env.settings)
    _prune(db)
    browser = _browser_value(cookie)
    state = random_token(32)
    state_hash, version = env.hasher.keyed(_STATE, state)
    browser_hash, browser_version = env.hasher.keyed(_BROWSER, browser)
    if browser_version != version:  # a pepper rotation in between: hash again
        state_hash, version = env.hasher.keyed(_STATE, state)
    db.add(
        IntegrationRequest(
            id=new_id("intr"),
            org_id=org_id,
            integration_id=row.id,
            user_id=principal.user_id,
            state_hash=state_hash,
            browser_hash=browser_hash,
            pepper_version=version,
            return_to=return_to,
            expires_at=utcnow() + timedelta(seconds=STATE_TTL),
        )
    )
    preset = PRESETS[row.provider]
    params = {
        "response_type": "code",
        "client_id": row.client_id,
        "redirect_uri": env.redirect_uri,
        "scope": preset.scope_separator.join(row.scopes or []),
        "state": state,
        "code_challenge": _b64(digest("sha256", _verifier(env, state))),
        "code_challenge_method": "S256",
        **preset.authorize_params,
    }
    if not params["scope"]:
        del params["scope"]
    audit.record(
        db,
        type=EventType.INTEGRATION_CONNECT_STARTED,
        actor=principal.actor,
        org_id=org_id,
        resource=("integration", row.id),
        metadata={"name": row.name, "provider": row.provider},
    )
    sep = "&" if "?" in row.authorize_url else "?"
    return Redirect(row.authorize_url + sep + urlencode(params), browser)


def _prune(db: Session) -> None:
    """Requests a day past their time (a late replay still meets "used" or "expired"
    rather than an unknown state), a batch at a time."""
    before = utcnow() - timedelta(days=1)
    stale = select(IntegrationRequest.id).where(IntegrationRequest.expires_at < before)
    ids = list(db.execute(stale.limit(PRUNE_BATCH)).scalars())
    if ids:
        db.execute(delete(IntegrationRequest).where(IntegrationRequest.id.in_(ids)))


def _refused(env: Env, reason: str, org_id: str | None = None) -> BadState:
    return BadState("this connect request is unknown, used or expired: start again").with_audit(
        type=EventType.INTEGRATION_CONNECT_FAILED,
        actor=env.actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
    )


def _claim(db: Session, env: Env, state: str | None, cookie: str | None) -> IntegrationRequest:
    if not state or len(state) > 200:
        raise _refused(env, "state_missing")
    state_hash = env.hasher.keyed(_STATE, state)[0]
    request = db.execute(
        select(IntegrationRequest).where(IntegrationRequest.state_hash == state_hash)
    ).scalar_one_or_none()
    if request is None:
        raise _refused(env, "state_invalid")
    if request.used_at is not None:
        raise _refused(env, "state_replayed", request.org_id)
    now = utcnow()
    taken = db.execute(
        update(IntegrationRequest)
        .where(IntegrationRequest.id == request.id, IntegrationRequest.used_at.is_(None))
        .values(used_at=now)
    )
    if int(getattr(taken, "rowcount", 0) or 0) != 1:
        raise _refused(env, "state_replayed", request.org_id)
    if as_utc(request.expires_at) <= now:
        raise _refused(env, "state_expired", request.org_id)
    if not cookie or not env.hasher.keyed_matches(
        _BROWSER, cookie, request.pepper_version, request.browser_hash
    ):
        raise _refused(env, "browser_mismatch", request.org_id)
    return request


def callback(db: Session, env: Env, params: dict[str, str], cookie: str | None) -> Redirect:
    request = _claim(db, env, params.get("state"), cookie)
    actor = replace(env.actor, type="user", id=request.user_id)
    row = db.get(Integration, request.integration_id)
    if row is None:  # deleted meanwhile (the request would have gone with it)
        raise _refused(env, "integration_removed", request.org_id)

    def fail(code: str) -> Redirect:
        audit.record(
            db,
            type=EventType.INTEGRATION_CONNECT_FAILED,
            actor=actor,
            org_id=row.org_id,
            outcome=Outcome.FAILURE,
            resource=("integration", row.id),
            reason=code,
            metadata={"name": row.name},
        )
        return Redirect(with_params(request.return_to, error=code))

    held = rights.current_permissions(db, request.org_id, request.user_id)
    if Permission.INTEGRATIONS_MANAGE not in held:
        return fail("not_allowed")
    if "error" in params:
        word = params["error"]
        safe = word if word.replace("_", "").isalnum() and len(word) < 50 else "provider_error"
        return fail(safe)
    code = params.get("code")
    if not code:
        return fail("code_missing")
    try:
        client = provider.Client(
            row.provider,
            row.client_id,
            vaulting.client_secret(db, env.vault, row),
            row.token_url,
            row.revoke_url,
        )
    except sealed.Unreadable:
        return fail("client_secret_unreadable")
    try:
        tokens = provider.exchange_code(
            env.outbound,
            client,
            code=code,
            verifier=_verifier(env, params["state"]),
            redirect_uri=env.redirect_uri,
        )
    except ProviderError as failure:
        return fail(failure.code)
    audit.lock_chain(db, row.org_id)
    vaulting.store_tokens(db, env.vault, row, tokens)
    now = utcnow()
    row.status, row.last_error = "connected", None
    row.connected_by, row.connected_at, row.updated_at = request.user_id, now, now
    row.refresh_lease_until, row.refresh_lease_owner = None, None
    audit.record(
        db,
        type=EventType.INTEGRATION_CONNECTED,
        actor=actor,
        org_id=row.org_id,
        resource=("integration", row.id),
        metadata={"name": row.name, "provider": row.provider, "refreshable": row.refreshable},
    )
    return Redirect(with_params(request.return_to, integration=row.id, status="connected"))
