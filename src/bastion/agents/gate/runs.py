"""Runs: starting, reading, revoking and listing them, and what a run's token may reveal.

A run is started by someone allowed to `use` the agent, for a user who may use it too
(the run's rights are the intersection), and gets a `bat_` token that can do only run
things: ask the gate, read its own calls and status, reveal the secrets its agent was
given. Revoking a run denies the approvals it still waits for.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents import service as agents
from bastion.agents import workflows
from bastion.agents.models import Agent, Run
from bastion.agents.schemas import RunIn
from bastion.approvals import service as approvals
from bastion.audit import service as audit
from bastion.authz import access
from bastion.authz import service as authz
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import Principal
from bastion.identity import rights
from bastion.identity import service as identity
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.secrets import service as secrets
from bastion.secrets.vault import Vault
from bastion.tenancy import service as tenancy


def secrets_withheld(db: Session, org_id: str, agent: Agent, run: Run) -> str | None:
    """Why the run may not reveal its agent's secrets now, or None when it may: whoever
    configured the agent, whoever started the run (who holds its token) and the user it
    acts for must each still hold `secrets:reveal`, and the run's workflow must still
    admit the agent. An agent never holds more than any of them."""
    for who, principal_id in (
        ("its configurer", agent.configured_by),
        ("whoever started the run", run.started_by),
        ("the user it acts for", run.on_behalf_of),
    ):
        if Permission.SECRETS_REVEAL not in rights.current_permissions(db, org_id, principal_id):
            return f"{who} may not reveal secrets"
    if run.workflow_id is not None and not workflows.admits(db, org_id, run.workflow_id, agent.id):
        return "its workflow no longer admits this agent"
    return None


def start_run(
    db: Session,
    hasher: TokenHasher,
    principal: Principal,
    org_id: str,
    agent_id: str,
    body: RunIn,
    sources: access.SourceRights,
) -> tuple[Run, str]:
    """A run of the agent acting for `on_behalf_of` (default: the caller). Acting for
    someone else needs `agents:manage`; the user must be allowed to use the agent too.
    Binding the run to a workflow needs the workflow to admit the agent. What the agent
    was given is checked again: secrets and sources its configurer (or the run's starter
    or user) may no longer hand on are withheld, and the run's audit event says so."""
    if principal.credential is CredentialKind.AGENT_RUN:
        raise Forbidden("agent run tokens cannot start runs", permission="agents:use")
    agent = agents.get_for(db, principal, org_id, agent_id, "use")
    user_id = body.on_behalf_of or principal.user_id
    if user_id is None:
        raise InvalidInput.field("on_behalf_of", "required when the caller is not a person")
    if user_id != principal.user_id:
        principal.require(Permission.AGENTS_MANAGE)
    try:
        user = identity.require_user_in_org(db, org_id, user_id)
    except NotFound:
        raise InvalidInput.field("on_behalf_of", "no such user in this organisation") from None
    if user.status != "active":
        raise InvalidInput.field("on_behalf_of", "the user is not active")
    user_side = agents.Asker(
        user.id,
        tenancy.teams_of(db, org_id, user.id),
        authz.user_permissions(db, org_id, user.role, user.id, user.grants_until),
    )
    verdict = agents.decide(user_side, agent, "use")
    if not verdict.allowed:
        raise Forbidden(
            f"the user may not use this agent ({verdict.reason})", permission="agents:use"
        )
    if body.workflow_id is not None:
        workflows.bind(db, principal, org_id, body.workflow_id, agent.id)
    now = utcnow()
    run = Run(
        id=new_id("run"),
        org_id=org_id,
        agent_id=agent.id,
        started_by=principal.id,
        on_behalf_of=user.id,
        workflow_id=body.workflow_id,
        expires_at=now + timedelta(seconds=body.ttl_seconds),
        max_tool_calls=body.max_tool_calls,
        max_pending_approvals=body.max_pending_approvals,
        tool_calls=0,
        created_at=now,
    )
    token, run.token_hash, run.pepper_version = hasher.issue(TokenKind.AGENT_RUN, run.id)
    db.add(run)
    withheld = secrets_withheld(db, org_id, agent, run) if agent.secrets else None
    connected = {c for c in agent.connections if c.startswith("src_")}
    audit.record(
        db,
        type=EventType.RUN_STARTED,
        actor=principal.actor,
        org_id=org_id,
        resource=("run", run.id),
        metadata={
            "agent_id": agent.id,
            "on_behalf_of": user.id,
            "workflow_id": body.workflow_id,
            "ttl_seconds": body.ttl_seconds,
            # Why its secrets are withheld, if they are (names of secrets would be
            # masked in audit metadata): the same reason a reveal would get.
            "reveal_withheld": withheld,
            "connections_withheld": sorted(connected - sources.of_agent(org_id, agent.id)),
        },
    )
    return run, token


def run_status(run: Run, now: datetime) -> str:
    if run.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(run.expires_at) <= now else "active"


def get_run(db: Session, principal: Principal, run_id: str) -> Run:
    """The run's own token, or a member of its organisation who may read its agent."""
    run = db.get(Run, run_id) if has_prefix(run_id, "run") else None
    if run is None or run.org_id != principal.org_id:
        raise NotFound("run not found")
    if principal.credential is CredentialKind.AGENT_RUN:
        if principal.id != run.id:
            raise NotFound("run not found")
        return run
    agents.get_for(db, principal, run.org_id, run.agent_id, "read")
    return run


def own_run(principal: Principal, run_id: str) -> None:
    """Only the run's own token acts as the run; anyone else finds nothing."""
    if principal.credential is not CredentialKind.AGENT_RUN or principal.id != run_id:
        raise NotFound("run not found")


def revoke_run(db: Session, principal: Principal, org_id: str, run_id: str) -> Run:
    principal.require_org(org_id)
    run = get_run(db, principal, run_id)
    if principal.credential is not CredentialKind.AGENT_RUN:
        agents.get_for(db, principal, org_id, run.agent_id, "use")
        if run.started_by != principal.id and run.on_behalf_of != principal.user_id:
            principal.require(Permission.AGENTS_MANAGE)
    if run.revoked_at is None:
        audit.lock_chain(db, org_id)  # before the run's row, as the gate locks them
        run.revoked_at = utcnow()
        audit.record(
            db,
            type=EventType.RUN_REVOKED,
            actor=principal.actor,
            org_id=org_id,
            resource=("run", run.id),
            metadata={"agent_id": run.agent_id},
        )
        approvals.end_for_run(db, org_id, run.id, principal.actor)
    return run


def list_runs(
    db: Session,
    principal: Principal,
    org_id: str,
    agent_id: str,
    *,
    limit: int,
    cursor: str | None,
) -> Page[Run]:
    agent = agents.get_for(db, principal, org_id, agent_id, "read")
    stmt = select(Run).where(Run.org_id == org_id, Run.agent_id == agent.id)
    return newest_first(db, stmt, Run.id, limit=limit, cursor=cursor)


def reveal_secret(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    name: str,
    *,
    version: int | None,
    workflow_id: str | None,
    run_id: str | None,
) -> secrets.Revealed:
    """An agent run reveals a secret its agent was given, inside its own run: the
    run's own value, else its workflow's, else the organisation's. Asking for another
    run's or workflow's scope finds nothing."""
    if principal.credential is not CredentialKind.AGENT_RUN or principal.org_id != org_id:
        raise NotFound("organization not found")
    found = db.execute(
        select(Run, Agent).join(Agent, Agent.id == Run.agent_id).where(Run.id == principal.id)
    ).first()
    if found is None:
        raise NotFound("run not found")
    run, agent = found
    if run_id not in (None, run.id) or workflow_id not in (None, run.workflow_id):
        raise NotFound("secret not found")
    if name not in agent.secrets:
        raise Forbidden("this secret was not given to this agent")
    withheld = secrets_withheld(db, org_id, agent, run)
    if withheld is not None:
        raise Forbidden(f"this run may not reveal secrets: {withheld}")
    return secrets.reveal_granted(
        db,
        vault,
        principal.actor,
        org_id,
        name,
        version=version,
        workflow_id=run.workflow_id,
        run_id=run.id,
    )
