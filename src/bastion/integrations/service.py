"""Integrations of an organisation: register (with a preset or any OAuth 2.0 provider),
list, read, delete (revoked at the provider first), and hand out access tokens.

Rights: `integrations:read` lists, `integrations:manage` registers, connects and deletes,
`integrations:use` lets someone give agents an integration as a connection (checked by
`bastion.agents` when the agent is configured, and here, against the configurer's
current rights, every time a run asks for a token). The client secret and the tokens
never leave the vault except as the access token handed to a run (`token_for_run`) or
to the MCP gateway (`access_token`)."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict, Forbidden, InvalidInput
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.netguard import OutboundRefused, check_plaintext, vetted_addresses
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import rights
from bastion.integrations import provider, vaulting
from bastion.integrations.errors import NotConnected, ProviderUnavailable
from bastion.integrations.flow import outbound
from bastion.integrations.models import Integration, IntegrationRequest
from bastion.integrations.presets import PRESETS
from bastion.integrations.schemas import IntegrationIn
from bastion.integrations.tokens import Token, TokenBroker
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

__all__ = [
    "NotConnected",
    "ProviderUnavailable",
    "Token",
    "TokenBroker",
    "access_token",
    "create",
    "delete_integration",
    "existing_names",
    "get",
    "list_integrations",
    "may_hand_on",
    "token_for_run",
]


def _check_url(field: str, url: str, settings: Settings) -> None:
    """An endpoint the caller chose: https:// (plain http:// only to
    BASTION_OUTBOUND_PLAINTEXT_ALLOW) and not internal (unless BASTION_OUTBOUND_ALLOW).
    Checked again, address by address, on every request (`GuardedTransport`)."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = vetted_addresses(parsed.host, port, settings.outbound_allow)
        if parsed.scheme != "https":
            check_plaintext(parsed.host, port, settings.outbound_plaintext_allow, addresses)
    except OutboundRefused as exc:
        raise InvalidInput.field(field, exc.reason) from None


def create(
    db: Session, vault: Vault, settings: Settings, principal: Principal, org_id: str,
    body: IntegrationIn,
) -> Integration:  # fmt: skip
    principal.require_org(org_id)
    principal.require(Permission.INTEGRATIONS_MANAGE)
    preset = PRESETS[body.provider]
    urls = {
        "authorize_url": body.authorize_url or preset.authorize_url,
        "token_url": body.token_url or preset.token_url,
        "revoke_url": body.revoke_url or preset.revoke_url,
    }
    for field in ("authorize_url", "token_url"):
        if urls[field] is None:
            raise InvalidInput.field(field, f"required for provider {body.provider}")
    for field, given in (
        ("authorize_url", body.authorize_url),
        ("token_url", body.token_url),
        ("revoke_url", body.revoke_url),
    ):
        if given is not None:  # a preset's own endpoints are public by construction
            _check_url(field, given, settings)
    taken = db.execute(
        select(Integration.id).where(Integration.org_id == org_id, Integration.name == body.name)
    ).first()
    if taken is not None:
        raise Conflict("another integration of this organisation has this name")
    now = utcnow()
    integration_id = new_id("int")
    row = Integration(
        id=integration_id,
        org_id=org_id,
        name=body.name,
        provider=body.provider,
        client_id=body.client_id,
        client_secret_id=vaulting.seal_client_secret(
            db, vault, org_id, integration_id, body.client_secret.get_secret_value()
        ),
        scopes=list(body.scopes if body.scopes is not None else preset.scopes),
        authorize_url=urls["authorize_url"],
        token_url=urls["token_url"],
        revoke_url=urls["revoke_url"],
        status="pending",
        token_version=0,
        refreshable=False,
        created_by=principal.user_id or principal.id,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:  # the same name, concurrently
        raise Conflict("another integration of this organisation has this name") from None
    audit.record(
        db,
        type=EventType.INTEGRATION_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("integration", row.id),
        metadata={"name": row.name, "provider": row.provider, "scopes": row.scopes},
    )
    return row


def get(db: Session, principal: Principal, org_id: str, integration_id: str) -> Integration:
    principal.require_org(org_id)
    principal.require(Permission.INTEGRATIONS_READ)
    return get_in_org(db, Integration, integration_id, org_id, prefix="int", noun="integration")


def list_integrations(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[Integration]:
    principal.require_org(org_id)
    principal.require(Permission.INTEGRATIONS_READ)
    stmt = select(Integration).where(Integration.org_id == org_id)
    return newest_first(db, stmt, Integration.id, limit=limit, cursor=cursor)


def delete_integration(
    db: Session, vault: Vault, settings: Settings, principal: Principal, org_id: str,
    integration_id: str,
) -> bool:  # fmt: skip
    """Revoke the grant at the provider, then delete the integration, its sealed secrets
    and its requests in flight. Returns whether the provider confirmed the revocation
    (recorded in the audit event; the integration is deleted either way)."""
    principal.require_org(org_id)
    principal.require(Permission.INTEGRATIONS_MANAGE)
    row = get_in_org(db, Integration, integration_id, org_id, prefix="int", noun="integration")
    revoked = False
    if row.tokens_secret_id is not None:
        try:
            tokens = vaulting.read_tokens(db, vault, row)
            client = provider.Client(
                row.provider,
                row.client_id,
                vaulting.client_secret(db, vault, row),
                row.token_url,
                row.revoke_url,
            )
        except sealed.Unreadable:
            pass
        else:
            revoked = provider.revoke(outbound(settings), client, tokens)
    audit.lock_chain(db, org_id)
    db.execute(delete(IntegrationRequest).where(IntegrationRequest.integration_id == row.id))
    vaulting.destroy(db, row)
    db.delete(row)
    audit.record(
        db,
        type=EventType.INTEGRATION_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("integration", row.id),
        metadata={"name": row.name, "provider": row.provider, "revoked_at_provider": revoked},
    )
    return revoked


# --- for other domains: agents (connections, run tokens) and the MCP gateway ---------


def existing_names(db: Session, org_id: str, names: Iterable[str]) -> set[str]:
    """Which of `names` are integrations of the organisation."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    stmt = select(Integration.name).where(
        Integration.org_id == org_id, Integration.name.in_(wanted)
    )
    return set(db.execute(stmt).scalars())


def may_hand_on(permissions: Iterable[Permission]) -> bool:
    """Whether someone with `permissions` may give an agent an integration (the right
    `integrations:use`; checked when configured and, for the configurer, when used)."""
    return Permission.INTEGRATIONS_USE in set(permissions)


def access_token(broker: TokenBroker, org_id: str, name: str) -> Token:
    """The integration's current access token (refreshed first when due) for a caller
    that has already decided who may have it (the MCP gateway injecting an upstream's
    credentials). Raises `NotFound`, `NotConnected`, `ProviderUnavailable`."""
    return broker.access_token(org_id, name)


def token_for_run(
    db: Session, broker: TokenBroker, actor: Actor, org_id: str, name: str, *,
    run_id: str, agent_id: str, configured_by: str,
) -> Token:  # fmt: skip
    """The access token for a run whose agent is connected to `name` (the caller checked
    that): only while the agent's configurer still holds `integrations:use`. Audited
    (the event, in `db`'s unit, names the run and the integration, never the token)."""
    if not may_hand_on(rights.current_permissions(db, org_id, configured_by)):
        raise Forbidden(
            "the agent's configurer may no longer hand on this integration",
            permission=str(Permission.INTEGRATIONS_USE),
        )
    token = broker.access_token(org_id, name)
    audit.record(
        db,
        type=EventType.INTEGRATION_TOKEN_ISSUED,
        actor=actor,
        org_id=org_id,
        resource=("integration", token.integration_id),
        metadata={"name": name, "run_id": run_id, "agent_id": agent_id},
    )
    return token
