"""Where a credential may be used from: an organisation's IP allowlist (every credential
of the organisation is refused from outside it, 403 `ip_not_allowed`, audited) and the
networks an API key has been used from (a new one is recorded and audited after the
request commits)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core import clientip
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.events import EventType, Outcome
from bastion.core.netguard import network_of
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.identity.authcache import AuthCache
from bastion.identity.credentials import Authenticated, Touch
from bastion.identity.errors import IpNotAllowed
from bastion.identity.models import ApiKeyNetwork
from bastion.identity.tokens import TokenKind


def parse_allowlist(entries: list[str] | None) -> tuple[clientip.Network, ...] | None:
    """An organisation's IP allowlist, parsed; None when it has none (any address). An
    entry that does not parse (never saved so: the API validates them) matches nothing."""
    if not entries:
        return None
    parsed: list[clientip.Network] = []
    for entry in entries:
        try:
            parsed.extend(clientip.parse_networks([entry]))
        except clientip.BadNetwork:
            continue
    return tuple(parsed)


def refuse_outside(
    allowlist: tuple[clientip.Network, ...] | None,
    org_id: str,
    actor: Actor,
    resource: tuple[str, str],
) -> None:
    """Raise 403 `ip_not_allowed` (audited, sampled) when `actor.ip` is outside the
    organisation's allowlist."""
    if allowlist is None or clientip.contains(allowlist, clientip.parse_address(actor.ip)):
        return
    raise IpNotAllowed().with_audit(
        type=EventType.AUTH_IP_NOT_ALLOWED,
        actor=actor,
        org_id=org_id,
        outcome=Outcome.DENIED,
        resource=resource,
        metadata={"ip": actor.ip},
    )


def check_address(
    allowlist: tuple[clientip.Network, ...] | None, principal: Principal, actor: Actor
) -> None:
    if allowlist is None:
        return
    who = principal.actor
    refuse_outside(
        allowlist,
        principal.org_id,
        Actor(who.type, who.id, actor.ip, actor.user_agent, actor.request_id),
        (_RESOURCE.get(principal.credential, "credential"), principal.credential_id or ""),
    )


_RESOURCE = {
    CredentialKind.SESSION: "session",
    CredentialKind.API_KEY: "api_key",
    CredentialKind.AGENT_RUN: "run",
    CredentialKind.OAUTH_TOKEN: "oauth_client",
}


def key_networks(db: Session, key_id: str) -> frozenset[str]:
    stmt = select(ApiKeyNetwork.network).where(ApiKeyNetwork.key_id == key_id)
    return frozenset(db.execute(stmt).scalars())


def watch_network(
    result: Authenticated,
    kind: TokenKind | None,
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
    action = record_network(result.principal, key_id, network, actor.ip, first=not networks)
    return replace(result, extra=(*result.extra, action))


def record_network(
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
