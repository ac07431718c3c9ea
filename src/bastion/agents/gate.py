"""Runs and the tool-call gate.

A run is started by someone allowed to `use` the agent, for a user who may use it too
(the run's rights are the intersection), and gets a `bat_` token that can do only run
things: ask the gate, read its own calls and status, reveal the secrets its agent was
given.

The gate decides each call in order: the run's budget, a declared tool, a connection
the agent was given, arguments valid against the tool's JSON Schema, then the approval
policies (`bastion.approvals.service.evaluate`). Every decision is recorded and
audited with the arguments' digest, never their values.

The hot path (`Gate`) reads what a decision needs once per revision tuple of the
organisation, decides outside any transaction, and commits concurrent decisions in
groups (`bastion.core.groupcommit`); the budget and the pending-approval limit are
counted in the writing transaction, so they stay exact.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import String, Table, bindparam, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from bastion.agents import (
    approval_hooks,  # noqa: F401  (registers it)
    workflows,
)
from bastion.agents import service as agents
from bastion.agents.models import Agent, Run, ToolCall
from bastion.agents.schemas import RunIn
from bastion.approvals import service as approvals
from bastion.audit import service as audit
from bastion.authz import access
from bastion.authz import service as authz
from bastion.core.clock import as_utc, utcnow
from bastion.core.crypto import sha256_hex
from bastion.core.errors import Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.groupcommit import GroupCommit
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

# --- runs -----------------------------------------------------------------------------


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


def _own_run(principal: Principal, run_id: str) -> None:
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


# --- the gate -------------------------------------------------------------------------


def arguments_digest(arguments: Any) -> str:
    return sha256_hex(json.dumps(arguments, sort_keys=True, separators=(",", ":")))


_validators: dict[str, Callable[[Any], str | None]] = {}


def _schema_error(tool: dict[str, Any], arguments: Any) -> str | None:
    """Where and why the arguments fail the tool's schema (never their values)."""
    check = _validators.get(tool["digest"])
    if check is None:
        check = _checker(tool.get("input_schema") or {})
        if len(_validators) > 5000:
            _validators.clear()
        _validators[tool["digest"]] = check
    return check(arguments)


def _checker(schema: dict[str, Any]) -> Callable[[Any], str | None]:
    """The tool's compiled validator (`agents.arguments_validator`: jsonschema-rs,
    offline). The first error is named in `jsonschema`'s notation: its JSON path in the
    arguments and the failing keyword (`false` for a `false` subschema). A schema it
    cannot compile (stored before saving required it to, or edited in the database)
    denies every call with `invalid_tool_schema` until the tool is saved again: no other
    validator, with other regular-expression semantics, runs on an agent's arguments."""
    try:
        fast = agents.arguments_validator(schema)
    except Exception:
        return _unusable

    def compiled(arguments: Any) -> str | None:
        try:
            if fast.is_valid(arguments):
                return None
            error = next(iter(fast.iter_errors(arguments)))
        except ValueError:  # too deep to describe (the edge refuses such arguments)
            return "invalid_arguments at $ (nesting)"
        except Exception:  # whatever else fails while checking denies
            return "invalid_tool_schema"
        return _reason(error.instance_path, _keyword(error.schema_path))

    return compiled


def _unusable(arguments: Any) -> str:
    return "invalid_tool_schema"


# Keywords whose value maps names to subschemas: in a schema path, the element after one
# of them is a name, not a keyword.
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def _keyword(schema_path: Sequence[str | int]) -> str:
    """The keyword that failed: the path's last keyword, or `false` when the path ends
    at a subschema (a name or an index: a `false` schema there rejected everything)."""
    keyword, named = "false", False
    for part in schema_path:
        if named or isinstance(part, int):
            keyword, named = "false", False
        else:
            keyword, named = part, part in _NAMED
    return keyword


_NAME = re.compile("[a-zA-Z][a-zA-Z0-9_]*")
_REASON_PATH_MAX = 200  # a call's reason is stored in 300 characters; keys are the caller's


def _reason(path: Iterable[str | int], keyword: str) -> str:
    """`invalid_arguments at $.a[0]['b c'] (type)`: the JSON path as `jsonschema` writes
    it (cut short, with `…`, past 200 characters), and the keyword that failed."""
    at = "$"
    for part in path:
        if isinstance(part, int):
            at += f"[{part}]"
        elif _NAME.fullmatch(part):
            at += f".{part}"
        else:
            at += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
        if len(at) > _REASON_PATH_MAX:
            at = at[: _REASON_PATH_MAX - 1] + "…"
            break
    return f"invalid_arguments at {at} ({keyword[:40]})"


def request_tool_call(
    db: Session,
    principal: Principal,
    run_id: str,
    *,
    tool_name: str,
    arguments: dict[str, Any],
    connection: str | None,
    connected: Callable[[str, str], frozenset[str]],
) -> ToolCall:
    """Decide and record one call in the caller's transaction (see `Gate.request` for
    the hot path, which decides the same way)."""
    _own_run(principal, run_id)
    view = _load_view(db, run_id, principal.org_id, None, connected)
    now = utcnow()
    verdict = _verdict(view, tool_name, arguments, connection)
    call = _record(db, principal, view, tool_name, arguments, verdict, now)
    write_decided(db)
    return call


@dataclass(frozen=True)
class _View:
    """What deciding a run's calls needs to read: the run, its agent, the organisation's
    approval policies and the user the run acts for. Kept per process while the
    organisation's revisions are unchanged (an agent, policy, membership, role or run
    change bumps them); nothing in it changes per call."""

    revisions: tuple[int, ...] | None
    run: Run
    agent: Agent
    policies: approvals.Policies
    user: dict[str, Any]
    sources: frozenset[str]  # connected sources the agent may still read (`SourceRights`)


def _load_view(
    db: Session,
    run_id: str,
    org_id: str | None,
    revisions: tuple[int, ...] | None,
    connected: Callable[[str, str], frozenset[str]],
) -> _View:
    found = db.execute(
        select(Run, Agent).join(Agent, Agent.id == Run.agent_id).where(Run.id == run_id)
    ).first()
    if found is None or found[0].org_id != org_id:
        raise NotFound("run not found")
    run, agent = found
    return _View(
        revisions,
        run,
        agent,
        approvals.policies_of(db, run.org_id),
        _user_context(db, run),
        connected(run.org_id, agent.id) if agent.connections else frozenset(),
    )


def _verdict(
    view: _View, tool_name: str, arguments: dict[str, Any], connection: str | None
) -> approvals.Verdict:
    """The decision before the run's budget and pending approvals are counted (which
    `_record` does, in the writing transaction)."""
    agent = view.agent
    tool = next((t for t in agent.tools if t["name"] == tool_name), None)
    if tool is None:
        return approvals.Verdict("deny", "undeclared_tool")
    for needed in {connection, tool.get("connection")} - {None}:
        if needed not in agent.connections:
            return approvals.Verdict("deny", f"connection_not_granted:{needed}")
        if needed.startswith("src_") and needed not in view.sources:
            # Its configurer may no longer connect this source: withheld, like a
            # connection never given.
            return approvals.Verdict("deny", f"connection_withheld:{needed}")
    error = _schema_error(tool, arguments)
    if error is not None:
        return approvals.Verdict("deny", error)
    return approvals.evaluate(view.policies, agent, tool, arguments, lambda: view.user)


_calls = cast(Table, ToolCall.__table__)
# The longest reason a call can store: the column's length.
REASON_MAX = int(cast(String, _calls.c.reason.type).length)  # type: ignore[arg-type]

# A Core statement on the session's connection: no ORM bookkeeping, and no autoflush,
# so a batch's rows are inserted together at commit (`tool_calls` is a counter that
# never changes what the run's token may do: no revision to bump).
_runs = cast(Table, Run.__table__)
_SPEND = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"), _runs.c.tool_calls < _runs.c.max_tool_calls)
    .values(tool_calls=_runs.c.tool_calls + 1)
)


def _record(
    db: Session,
    principal: Principal,
    view: _View,
    tool_name: str,
    arguments: dict[str, Any],
    verdict: approvals.Verdict,
    now: datetime,
) -> ToolCall:
    """Spend the run's budget (every call does, whatever its decision), hold a pending
    call to the run's limit of open approvals, write a pending call, its approval and
    its audit event, and leave a decided call and its event for `write_decided`, which
    the transaction runs before it commits. Safe to run again in a fresh transaction
    (see `GroupCommit`)."""
    run, agent = view.run, view.agent
    # The chain head before the run's row: every gate transaction locks in this order
    # (a group sorts its calls by organisation, then run), so none waits on another's
    # locks in the opposite order.
    audit.lock_chain(db, run.org_id)
    spent = db.connection().execute(_SPEND, {"run_id": run.id})
    if not getattr(spent, "rowcount", 0):
        verdict = approvals.Verdict("deny", "budget_exhausted")
    elif (
        verdict.decision == "pending"
        and approvals.pending_count(db, run.id, now) >= run.max_pending_approvals
    ):
        verdict = approvals.Verdict("deny", "too_many_pending_approvals", verdict.policy)
    call = ToolCall(
        id=new_id("call"),
        org_id=run.org_id,
        run_id=run.id,
        agent_id=agent.id,
        tool=tool_name,
        arguments=arguments,
        arguments_digest=arguments_digest(arguments),
        decision=verdict.decision,
        reason=verdict.reason[:REASON_MAX],
        policy_id=verdict.policy_id,
        approval_id=None,
        created_at=now,
        decided_at=None if verdict.decision == "pending" else now,
    )
    if verdict.decision == "pending":
        db.add(call)
        db.flush()
        call.approval_id = approvals.open_approval(
            db,
            org_id=call.org_id,
            run_id=run.id,
            call_id=call.id,
            agent_id=call.agent_id,
            tool=call.tool,
            arguments_digest=call.arguments_digest,
            requested_for=run.on_behalf_of,
            run_expires_at=run.expires_at,
            policy=verdict.policy,
            now=now,
        )
    # A decided call is written with its transaction's other decided calls, one
    # statement per table (`write_decided`): nothing in the transaction reads it before.
    decided = verdict.decision != "pending"
    event = (audit.event_row if decided else audit.record)(
        db,
        type=EventType.TOOL_CALL_DECIDED,
        actor=principal.actor,
        org_id=run.org_id,
        resource=("tool_call", call.id),
        outcome=Outcome.DENIED if verdict.decision == "deny" else Outcome.SUCCESS,
        reason=call.reason,
        metadata={
            "run_id": run.id,
            "agent_id": agent.id,
            "tool": tool_name,
            "decision": verdict.decision,
            "policy_id": call.policy_id,
            "approval_id": call.approval_id,
            "arguments_digest": call.arguments_digest,
        },
    )
    if decided:
        calls, events = db.info.setdefault(_DECIDED, ([], []))
        calls.append({column: getattr(call, attr) for attr, column in _CALL_COLUMNS})
        events.append(event)
    return call


_DECIDED = "bastion.gate.decided"
_CALL_COLUMNS = tuple(  # (attribute, column): a row from the mapped object
    (prop.key, prop.columns[0].key) for prop in sa_inspect(ToolCall).column_attrs
)
_INSERT_CALLS = insert(_calls)


def write_decided(db: Session) -> None:
    """Insert the transaction's decided calls and their audit events (see `_record`);
    called before it commits."""
    calls, events = db.info.pop(_DECIDED, ([], []))
    if calls:
        db.connection().execute(_INSERT_CALLS, calls)
        audit.insert_events(db, events)


def _user_context(db: Session, run: Run) -> dict[str, Any]:
    if run.on_behalf_of is None:
        return {"id": None, "role": None, "teams": []}
    try:
        user = identity.require_user_in_org(db, run.org_id, run.on_behalf_of)
    except NotFound:  # gone: its run's token no longer authenticates either
        return {"id": run.on_behalf_of, "role": None, "teams": []}
    teams = sorted(tenancy.teams_of(db, run.org_id, user.id))
    return {"id": user.id, "role": user.role, "teams": teams}


class Gate:
    """The gate's hot path in one process. A run's `_View` is read once per revision
    tuple of its organisation (checked with one primary-key read per call), the
    decision is made outside any transaction, and the writes of concurrent calls are
    committed together (`GroupCommit`): each call's row, budget and audit event still
    commit together or not at all."""

    MAX_VIEWS = 4096

    def __init__(
        self,
        sessions: Callable[[], Session],
        write_sessions: Callable[[], Session],
        revisions: Callable[[str], tuple[int, ...] | None],
        connected: Callable[[str, str], frozenset[str]],
        *,
        local: bool,
    ) -> None:
        self._sessions = sessions
        self._connected = connected
        self._revisions = revisions
        self._local = local  # the revision read is a local file read: fine on the loop
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.writes = GroupCommit(write_sessions, before_commit=write_decided)

    def __repr__(self) -> str:
        return f"Gate(views={len(self._views)}, writes={self.writes!r})"

    def close(self) -> None:
        self.writes.close()

    async def request(
        self,
        principal: Principal,
        run_id: str,
        *,
        tool_name: str,
        arguments: dict[str, Any],
        connection: str | None,
    ) -> ToolCall:
        _own_run(principal, run_id)
        org_id = principal.org_id
        view = self._fresh(run_id, org_id, self._revisions(org_id)) if self._local else None
        if view is None:
            view = await anyio.to_thread.run_sync(self._view, run_id, org_id)
        now = utcnow()
        verdict = _verdict(view, tool_name, arguments, connection)
        return await self.writes.run(
            lambda db: _record(db, principal, view, tool_name, arguments, verdict, now),
            order=f"{view.run.org_id}:{run_id}",
        )

    def _fresh(
        self, run_id: str, org_id: str | None, revisions: tuple[int, ...] | None
    ) -> _View | None:
        if revisions is None:
            return None
        with self._lock:
            view = self._views.get(run_id)
            if view is None or view.revisions != revisions or view.run.org_id != org_id:
                return None
            self._views.move_to_end(run_id)
            return view

    def _view(self, run_id: str, org_id: str | None) -> _View:
        """The run's current view, read once however many calls ask at the same time."""
        with self._lock:
            loading = self._loading.setdefault(run_id, threading.Lock())
        try:
            with loading:
                revisions = self._revisions(org_id) if org_id else None
                view = self._fresh(run_id, org_id, revisions)
                if view is not None:
                    return view
                with self._sessions() as db:
                    view = _load_view(db, run_id, org_id, revisions, self._connected)
                if revisions is not None:
                    with self._lock:
                        self._views[run_id] = view
                        self._views.move_to_end(run_id)
                        while len(self._views) > self.MAX_VIEWS:
                            self._views.popitem(last=False)
                return view
        finally:
            with self._lock:
                self._loading.pop(run_id, None)


# --- secrets --------------------------------------------------------------------------


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


# --- reading a call -------------------------------------------------------------------


@dataclass(frozen=True)
class CallState:
    call: ToolCall
    decision: str  # allow | deny | pending, with expiry applied
    reason: str


def call_state(db: Session, call: ToolCall, now: datetime) -> CallState:
    if call.decision != "pending" or call.approval_id is None:
        return CallState(call, call.decision, call.reason)
    if approvals.status_of(db, call.approval_id, now) == "expired":
        return CallState(call, "deny", "approval_expired")
    return CallState(call, "pending", call.reason)


def get_tool_call(db: Session, principal: Principal, run_id: str, call_id: str) -> CallState:
    """The call, to its own run's token or to an org member who may see the agent."""
    run = get_run(db, principal, run_id)
    call = db.get(ToolCall, call_id) if has_prefix(call_id, "call") else None
    if call is None or call.run_id != run.id:
        raise NotFound("tool call not found")
    return call_state(db, call, utcnow())
