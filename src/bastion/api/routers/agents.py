"""Agents, the hub, runs and the tool-call gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from bastion.agents import gate
from bastion.agents import service as agents
from bastion.agents.models import Agent, Run
from bastion.agents.schemas import (
    AgentIn,
    AgentOut,
    AgentPatch,
    HubAgentOut,
    RunIn,
    RunOut,
    RunStarted,
    ToolCallIn,
    ToolCallOut,
)
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State, reauthenticate
from bastion.api.state import AppState
from bastion.approvals.models import Approval
from bastion.core import metrics
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import BastionError
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf, QueryNumber

router = APIRouter(prefix="/v1/orgs/{org}/agents", tags=["agents"])
hub_router = APIRouter(prefix="/v1/hub", tags=["agents"])
runs_router = APIRouter(prefix="/v1/runs", tags=["runs"])
org_runs_router = APIRouter(prefix="/v1/orgs/{org}/runs", tags=["runs"])

MAX_WAIT_SECONDS = 60
RECHECK_SECONDS = 5.0  # how often an open event stream checks its caller's credential


def _agent(agent: Agent) -> AgentOut:
    return AgentOut.model_validate(agent)


@router.post("", status_code=201, summary="Register an agent, or clone one from the hub")
def create_agent(org: str, body: AgentIn, principal: Caller, db: DB, state: State) -> AgentOut:
    agent = agents.create_agent(db, principal, org, body, state.source_rights)
    db.flush()
    return _agent(agent)


@router.get("", summary="Agents the caller may see, newest first")
def list_agents(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[AgentOut]:
    page = agents.list_agents(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[AgentOut](data=[_agent(a) for a in page.data], next_cursor=page.next_cursor)


@router.get("/{agt}", summary="One agent")
def get_agent(org: str, agt: str, principal: Caller, db: DB) -> AgentOut:
    return _agent(agents.get_agent(db, principal, org, agt))


@router.patch(
    "/{agt}",
    summary="Change an agent (owner or agents:manage); a changed tool gets a new digest",
)
def update_agent(
    org: str, agt: str, body: AgentPatch, principal: Caller, db: DB, state: State
) -> AgentOut:
    agent = agents.update_agent(db, principal, org, agt, body, state.source_rights)
    db.flush()
    return _agent(agent)


@router.delete("/{agt}", status_code=204, summary="Delete an agent and its runs")
def delete_agent(org: str, agt: str, principal: Caller, db: DB) -> Response:
    agents.delete_agent(db, principal, org, agt)
    return Response(status_code=204)


@hub_router.get("/agents", summary="Public agents of every organisation (read-only)")
def list_hub(
    principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[HubAgentOut]:
    page = agents.list_hub(db, principal, limit=limit, cursor=cursor)
    return ListOf[HubAgentOut](
        data=[HubAgentOut.model_validate(a) for a in page.data], next_cursor=page.next_cursor
    )


# --- runs -----------------------------------------------------------------------------


def _run(run: Run) -> RunOut:
    return RunOut(
        id=run.id,
        org_id=run.org_id,
        agent_id=run.agent_id,
        started_by=run.started_by,
        on_behalf_of=run.on_behalf_of,
        workflow_id=run.workflow_id,
        status=gate.run_status(run, utcnow()),
        expires_at=run.expires_at,
        revoked_at=run.revoked_at,
        max_tool_calls=run.max_tool_calls,
        max_pending_approvals=run.max_pending_approvals,
        tool_calls=run.tool_calls,
        created_at=run.created_at,
    )


@router.post(
    "/{agt}/runs",
    status_code=201,
    summary="Start a run: a short-lived `bat_` token scoped to this run",
)
def start_run(
    org: str, agt: str, body: RunIn, principal: Caller, db: DB, state: State
) -> RunStarted:
    run, token = gate.start_run(db, state.hasher, principal, org, agt, body, state.source_rights)
    return RunStarted(run_id=run.id, token=token, expires_at=run.expires_at)


@router.get("/{agt}/runs", summary="An agent's runs, newest first")
def list_runs(
    org: str,
    agt: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[RunOut]:
    page = gate.list_runs(db, principal, org, agt, limit=limit, cursor=cursor)
    return ListOf[RunOut](data=[_run(r) for r in page.data], next_cursor=page.next_cursor)


@org_runs_router.post("/{run}/revoke", summary="End a run: its token stops working at once")
def revoke_run(org: str, run: str, principal: Caller, db: DB) -> RunOut:
    return _run(gate.revoke_run(db, principal, org, run))


@runs_router.get("/{run}", summary="A run's status (its own token, or a member)")
def get_run(run: str, principal: Caller, db: DB) -> RunOut:
    return _run(gate.get_run(db, principal, run))


def _call(found: gate.CallState) -> ToolCallOut:
    call = found.call
    return ToolCallOut(
        id=call.id,
        run_id=call.run_id,
        tool=call.tool,
        decision=found.decision,
        approval_id=call.approval_id,
        reason=found.reason,
        arguments_digest=call.arguments_digest,
        created_at=call.created_at,
        decided_at=call.decided_at,
    )


@runs_router.post(
    "/{run}/tool-calls",
    status_code=201,
    summary="Ask the gate: allow, deny, or pending a human approval (agent token)",
)
async def request_tool_call(
    run: str, body: ToolCallIn, principal: Caller, request: Request
) -> ToolCallOut:
    idempotent = request.headers.get("idempotency-key") is not None
    state: AppState = request.app.state.bastion
    return await ask_gate(state, request.scope[SCOPE_KEY], principal, run, body, idempotent)


async def ask_gate(
    state: AppState,
    ctx: RequestContext,
    principal: Principal,
    run: str,
    body: ToolCallIn,
    idempotent: bool,
) -> ToolCallOut:
    """The answer of `POST /v1/runs/{run}/tool-calls` (also served by `bastion.api.fast`);
    `idempotent` when the request carries an Idempotency-Key."""
    if not idempotent:
        call = await state.gate.request(
            principal,
            run,
            tool_name=body.tool,
            arguments=body.arguments,
            connection=body.connection,
        )
    else:  # in the request's transaction, which also keeps the answer for a replay
        call = await run_in_threadpool(
            partial(
                gate.request_tool_call,
                ctx.db,
                principal,
                run,
                tool_name=body.tool,
                arguments=body.arguments,
                connection=body.connection,
                connected=state.source_rights.of_agent,
            )
        )
    counter = metrics.GATE_DECISION.get(call.decision)
    if counter is not None:
        counter.inc()
    return _call(gate.CallState(call, call.decision, call.reason))


@runs_router.get(
    "/{run}/tool-calls/{call}",
    summary="A tool call's decision; with `wait`, long-poll until it is decided",
)
async def get_tool_call(
    run: str,
    call: str,
    principal: Caller,
    request: Request,
    state: State,
    wait: Annotated[
        QueryNumber,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for a pending decision."),
    ] = 0,
) -> ToolCallOut:
    ctx: RequestContext = request.scope[SCOPE_KEY]
    found = await run_in_threadpool(gate.get_tool_call, ctx.db, principal, run, call)
    ctx.end_read()  # no transaction is held while waiting
    if found.decision != "pending" or wait <= 0:
        return _call(found)
    deadline = min(wait, await run_in_threadpool(_until_expiry, state, found) + 0.05)
    await state.waiters.wait(call, deadline)

    def reread() -> gate.CallState:
        # The credential again: a run revoked or expired while it waited hears 401, not
        # a decision it may no longer act on.
        caller = reauthenticate(request, state)
        with state.sessions() as db:
            return gate.get_tool_call(db, caller, run, call)

    return _call(await run_in_threadpool(reread))


@runs_router.get(
    "/{run}/tool-calls/{call}/stream",
    summary="Server-sent events: the call's state now, and again once it is decided",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_tool_call(
    run: str,
    call: str,
    principal: Caller,
    request: Request,
    state: State,
    duration: Annotated[
        QueryNumber,
        Query(ge=1, le=3600, description="Seconds before the stream ends if undecided."),
    ] = 300,
) -> StreamingResponse:
    """For an agent that waits with server-sent events instead of long-polling: an
    `event: tool_call` (the same object as `GET …/tool-calls/{call}`) at once, and, if
    the call was pending, another when it is decided or its approval expires; then the
    stream ends. Every 5 s it checks the caller's credential again (a revoked or expired
    run ends it) and sends a comment line, which also keeps proxies open."""
    ctx: RequestContext = request.scope[SCOPE_KEY]
    found = await run_in_threadpool(gate.get_tool_call, ctx.db, principal, run, call)
    ctx.end_read()  # no transaction is held while the stream is open

    def reread() -> gate.CallState:
        # The credential again, each time: a revoked or expired run, session or key (or
        # a caller who may no longer see the agent) ends the stream.
        caller = reauthenticate(request, state)
        with state.sessions() as db:
            return gate.get_tool_call(db, caller, run, call)

    def frame(current: gate.CallState) -> str:
        body = _call(current).model_dump_json()
        return f"id: {call}:{current.decision}\nevent: tool_call\ndata: {body}\n\n"

    async def events() -> AsyncIterator[str]:
        current = found
        yield frame(current)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while current.decision == "pending" and loop.time() < end:
            expiry = await run_in_threadpool(_until_expiry, state, current)
            await state.waiters.wait(call, min(end - loop.time(), expiry + 0.05, RECHECK_SECONDS))
            try:
                current = await run_in_threadpool(reread)
            except BastionError:  # the credential or the call is gone: the stream ends
                return
            if current.decision != "pending":
                yield frame(current)
            elif loop.time() < end:
                yield ": keepalive\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def _until_expiry(state: State, found: gate.CallState) -> float:
    with state.sessions() as db:
        approval = db.get(Approval, found.call.approval_id) if found.call.approval_id else None
        if approval is None:
            return MAX_WAIT_SECONDS
        expires: datetime = as_utc(approval.expires_at)
    return max(0.0, (expires - utcnow()).total_seconds())
