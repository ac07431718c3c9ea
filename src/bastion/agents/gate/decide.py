"""Deciding a tool call, writing the decision, and reading it back.

The gate decides each call in order: the run's budget, a declared tool, a connection
the agent was given, arguments valid against the tool's JSON Schema
(`bastion.agents.gate.arguments`), the organisation's data policies on arguments
(`bastion.privacy`: deny, or hold for approval), then the approval policies
(`bastion.approvals.service.evaluate`). Every decision is recorded and audited with
the arguments' digest, never their values; a pending one opens an approval. What a
data policy found in the arguments is replaced by `<TYPE>` in everything stored.

The hot path (`Gate`) reads what a decision needs once per revision tuple of the
organisation, decides outside any transaction, and commits concurrent decisions in
groups (`bastion.core.groupcommit`); the budget and the pending-approval limit are
counted in the writing transaction, so they stay exact (`bastion.agents.gate.record`
writes a decision).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.gate.arguments import schema_error
from bastion.agents.gate.record import Call, record
from bastion.agents.gate.runs import get_run, own_run
from bastion.agents.models import Agent, Run, ToolCall
from bastion.approvals import service as approvals
from bastion.core.clock import utcnow
from bastion.core.errors import NotFound
from bastion.core.groupcommit import GroupCommit
from bastion.core.ids import has_prefix
from bastion.core.principal import Principal
from bastion.identity import service as identity
from bastion.privacy import service as privacy
from bastion.tenancy import service as tenancy


def request_tool_call(
    db: Session,
    principal: Principal,
    run_id: str,
    *,
    tool_name: str,
    arguments: dict[str, Any],
    connection: str | None,
    connected: Callable[[str, str], frozenset[str]],
) -> Call:
    """Decide and record one call in the caller's transaction (see `Gate.request` for
    the hot path, which decides the same way)."""
    own_run(principal, run_id)
    view = _load_view(db, run_id, principal.org_id, None, connected)
    now = utcnow()
    screened = _screen(view, arguments)
    verdict = _verdict(view, tool_name, arguments, connection, screened)
    return record(db, principal, view.run, view.agent, tool_name, screened, verdict, now)


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
    privacy: privacy.Policies = privacy.NO_POLICIES  # the organisation's data policies


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
        privacy.policies_of(db, run.org_id),
    )


def _screen(view: _View, arguments: dict[str, Any]) -> privacy.Applied:
    """The data policies' answer for the arguments (`tool_arguments`), and the arguments
    to store: with what they found replaced. Without a policy: no scan, the arguments."""
    return privacy.apply_policies(view.privacy, "tool_arguments", arguments)


def _needs_screen(view: _View) -> bool:
    return bool(view.privacy.of("tool_arguments"))


def _verdict(
    view: _View,
    tool_name: str,
    arguments: dict[str, Any],
    connection: str | None,
    screened: privacy.Applied,
) -> approvals.Verdict:
    """The decision before the run's budget and pending approvals are counted (which
    `_record` does, in the writing transaction). A data policy that denies decides
    after the schema check; one that requires approval holds a call the approval
    policies would allow (a stricter approval policy's request is kept)."""
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
    error = schema_error(tool, arguments)
    if error is not None:
        return approvals.Verdict("deny", error)
    if screened.action == "deny":
        return approvals.Verdict("deny", screened.reason)
    verdict = approvals.evaluate(view.policies, agent, tool, arguments, lambda: view.user)
    if screened.action == "require_approval" and verdict.decision == "allow":
        return approvals.Verdict("pending", screened.reason)
    return verdict


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
        writes: GroupCommit,
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
        self.writes = writes  # the process's write path, shared with other requests

    def __repr__(self) -> str:
        return f"Gate(views={len(self._views)}, writes={self.writes!r})"

    async def request(
        self,
        principal: Principal,
        run_id: str,
        *,
        tool_name: str,
        arguments: dict[str, Any],
        connection: str | None,
        refuse: str | None = None,
    ) -> Call:
        """`refuse`: a reason the caller (the MCP gateway) already found to deny the call
        (an upstream definition that changed, a withheld server): it is recorded,
        audited and counted like any other denial."""
        own_run(principal, run_id)
        org_id = principal.org_id
        view = self._fresh(run_id, org_id, self._revisions(org_id)) if self._local else None
        if view is None:
            view = await anyio.to_thread.run_sync(self._view, run_id, org_id)
        now = utcnow()
        if _needs_screen(view):  # a scan: CPU work, off the event loop
            screened = await anyio.to_thread.run_sync(_screen, view, arguments)
        else:
            screened = privacy.Applied(None, None, arguments)
        verdict = (
            approvals.Verdict("deny", refuse)
            if refuse is not None
            else _verdict(view, tool_name, arguments, connection, screened)
        )
        run, agent = view.run, view.agent
        return await self.writes.run(
            lambda db: record(db, principal, run, agent, tool_name, screened, verdict, now),
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


# --- reading a call -------------------------------------------------------------------


@dataclass(frozen=True)
class CallState:
    call: Call
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
