"""What agents register with the layers below them, at import (`bastion.agents`
imports this module, so any use of the package has it in place):

- a run's token (`bat_`) as a credential kind identity authenticates: valid until the
  run expires or is revoked, while its agent exists, its organisation is active and the
  user it acts for is active. It carries no organisation permission: it acts only on
  its own run (and the secrets its agent was given). Unregistered, identity refuses it.
- which agent rows change what cached answers depend on (`bastion.core.revisions`):
  revoking a run, or any change to an agent, bumps the auth revision (and an agent,
  part of the data-access model, the authz revision too). A new run bumps nothing: its
  token is not cached before its first use. Counting tool calls is bookkeeping.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent, Run
from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.identity import credentials
from bastion.identity.credentials import Authenticated, Loaded, expired, labelled, rejected
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.tenancy import service as tenancy


class _RunRow(NamedTuple):
    token_hash: str
    pepper_version: int
    expires_at: datetime
    revoked_at: datetime | None
    org_id: str
    agent_id: str
    on_behalf_of: str | None
    org_status: str | None
    user_status: str | None
    ip_allowlist: list[str] | None
    org_rev: int
    instance_rev: int


_RUN_QUERY = select(
    *labelled(
        _RunRow,
        token_hash=Run.token_hash,
        pepper_version=Run.pepper_version,
        expires_at=Run.expires_at,
        revoked_at=Run.revoked_at,
        org_id=Run.org_id,
        agent_id=Run.agent_id,
        on_behalf_of=Run.on_behalf_of,
        org_status=tenancy.org_status(Run.org_id),
        user_status=credentials.user_status(Run.on_behalf_of),
        ip_allowlist=tenancy.org_ip_allowlist(Run.org_id),
        org_rev=revisions.org_revision(Run.org_id),
        instance_rev=revisions.instance_revision(),
    )
).join(Agent, Agent.id == Run.agent_id)


def _resolve(db: Session, run_id: str, secret: str, actor: Actor, hasher: TokenHasher) -> Loaded:
    """A run's token, in one query. Cached like the others: revoking the run, changing
    or deleting its agent, suspending its user or organisation all bump the revision."""
    found = db.execute(_RUN_QUERY.where(Run.id == run_id)).first()
    row = _RunRow._make(found) if found is not None else None
    if row is None or not hasher.matches(
        TokenKind.AGENT_RUN, secret, row.pepper_version, row.token_hash
    ):
        raise rejected(actor, "unknown_or_wrong_secret")
    org_id, resource = row.org_id, ("run", run_id)
    now = utcnow()
    ended = "the agent run has ended: start a new run"
    if row.revoked_at is not None:
        raise expired(actor, "run_revoked", org_id, resource, ended)
    if row.expires_at <= now:
        raise expired(actor, "run_expired", org_id, resource, ended)
    if row.org_status != "active" or (row.on_behalf_of is not None and row.user_status != "active"):
        raise rejected(actor, "run_inactive", org_id, resource)
    principal = Principal(
        principal_type="agent_run",
        id=run_id,
        org_id=org_id,
        role="agent_run",
        credential=CredentialKind.AGENT_RUN,
        role_permissions=frozenset(),
        credential_id=run_id,
        agent_id=row.agent_id,
        on_behalf_of=row.on_behalf_of,
        actor=Actor("agent_run", run_id, actor.ip, actor.user_agent, actor.request_id),
    )
    return Loaded(
        Authenticated(principal, None),
        stored_hash=row.token_hash,
        pepper_version=row.pepper_version,
        org_rev=int(row.org_rev),
        instance_rev=int(row.instance_rev),
        valid_until=row.expires_at,
        last_touched=now,
        touch_every=math.inf,  # nothing to keep up to date
        ip_allowlist=list(row.ip_allowlist or []),
    )


def _live(now: datetime) -> ColumnElement[bool]:
    return Run.revoked_at.is_(None) & (Run.expires_at > now)


credentials.register(
    credentials.Resolver(
        kind=TokenKind.AGENT_RUN,
        resolve=_resolve,
        digest=Run.token_hash,
        live=_live,
        name="agent_runs",
    )
)
revisions.watch(Run, bookkeeping={"tool_calls"}, inserts_change_nothing=True)
revisions.watch(Agent, counters=(revisions.AuthzRevision, revisions.AuthRevision))
