"""Sandboxes: workspaces (`/v1/orgs/{org}/workspaces`) and a run's execs and diffs
(`/v1/runs/{run}/sandbox/…`). See docs/sandboxes.md."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from bastion.agents import gate
from bastion.api.context import STARTED_KEY
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.api.state import AppState
from bastion.core.errors import BastionError, Forbidden
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf
from bastion.sandboxes import execs
from bastion.sandboxes import service as workspaces
from bastion.sandboxes.models import Workspace
from bastion.sandboxes.provider import Limits, Unavailable
from bastion.sandboxes.schemas import (
    ChangeOut,
    DiffOut,
    ExecIn,
    ExecOut,
    LimitsOut,
    NetworkOut,
    TruncatedOut,
    UsageOut,
    WorkspaceIn,
    WorkspaceOut,
    WorkspacePatch,
)

router = APIRouter(prefix="/v1/orgs/{org}/workspaces", tags=["sandboxes"])
runs_router = APIRouter(prefix="/v1/runs/{run}/sandbox", tags=["sandboxes"])

GZIP_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar+gzip")
MAX_APPROVAL_WAIT = 300.0  # seconds a pending exec waits for its approval


class SandboxUnavailable(BastionError):
    status = 503
    code = "sandbox_unavailable"
    title = "Service Unavailable"


class UnsupportedMediaType(BastionError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported Media Type"


def _out(workspace: Workspace) -> WorkspaceOut:
    network = workspace.network or {}
    return WorkspaceOut(
        id=workspace.id,
        org_id=workspace.org_id,
        name=workspace.name,
        limits=LimitsOut(**workspace.limits),
        network=NetworkOut(mode=network.get("mode", "none"), domains=network.get("domains", [])),
        base_digest=workspace.base_digest,
        base_bytes=workspace.base_bytes,
        base_files=workspace.base_files,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
    )


@router.post("", status_code=201, summary="Create a sandbox workspace")
def create_workspace(org: str, body: WorkspaceIn, principal: Caller, db: DB) -> WorkspaceOut:
    workspace = workspaces.create(db, principal, org, body)
    db.flush()
    return _out(workspace)


@router.get("", summary="The organisation's sandbox workspaces, newest first")
def list_workspaces(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[WorkspaceOut]:
    page = workspaces.list_(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[WorkspaceOut](data=[_out(w) for w in page.data], next_cursor=page.next_cursor)


@router.get("/{wks}", summary="One workspace: limits, network and its base's digest")
def get_workspace(org: str, wks: str, principal: Caller, db: DB) -> WorkspaceOut:
    return _out(workspaces.get(db, principal, org, wks))


@router.patch("/{wks}", summary="Change a workspace's name, limits or network")
def update_workspace(
    org: str, wks: str, body: WorkspacePatch, principal: Caller, db: DB
) -> WorkspaceOut:
    workspace = workspaces.update(db, principal, org, wks, body)
    db.flush()
    return _out(workspace)


@router.delete("/{wks}", status_code=204, summary="Delete a workspace (its files go too)")
def delete_workspace(org: str, wks: str, principal: Caller, db: DB) -> Response:
    workspaces.delete(db, principal, org, wks)
    return Response(status_code=204)


@router.put(
    "/{wks}/files",
    summary="Set the workspace's read-only base from a gzip tar (application/gzip)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_files(org: str, wks: str, principal: Caller, request: Request) -> WorkspaceOut:
    state: AppState = request.app.state.bastion
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    settings = state.settings

    def put() -> WorkspaceOut:
        with state.write_sessions() as db:
            workspaces.get_to_manage(db, principal, org, wks)  # 403/404 before the body
            if kind not in GZIP_TYPES:
                raise UnsupportedMediaType(
                    "send the base as a gzip tar with Content-Type: application/gzip"
                )
            workspace = workspaces.set_base(
                db, state.sandboxes, principal, org, wks, body,
                max_bytes=settings.sandbox_base_max_bytes,
                max_files=settings.sandbox_base_max_files,
            )  # fmt: skip
            db.flush()
            out = _out(workspace)
            db.commit()
            return out

    return await run_in_threadpool(put)


# --- a run's execs ------------------------------------------------------------------------


async def _decided(state: AppState, principal: Principal, run: str, body: ExecIn) -> str:
    """Ask the gate (tool `sandbox.exec`, the workspace as connection); wait for a pending
    approval within the run's time. The call's id when allowed; 403 otherwise."""
    call = await state.gate.request(
        principal,
        run,
        tool_name=execs.TOOL,
        arguments=execs.gate_arguments(body),
        connection=body.workspace,
    )
    decision, reason = call.decision, call.reason
    if decision == "pending":
        await state.waiters.wait(call.id, MAX_APPROVAL_WAIT)

        def reread() -> gate.CallState:
            with state.sessions() as db:
                return gate.get_tool_call(db, principal, run, call.id)

        found = await run_in_threadpool(reread)
        decision, reason = found.decision, found.reason
        if decision == "pending":
            reason = "approval_still_pending"
    if decision != "allow":
        raise Forbidden(f"the gate did not allow this exec ({decision}: {reason}; call {call.id})")
    return call.id


@runs_router.post(
    "/exec",
    summary="Execute a command in the run's fork of a workspace (run token; gate tool "
    "`sandbox.exec`)",
)
async def exec_command(
    run: str, body: ExecIn, principal: Caller, request: Request, response: Response
) -> ExecOut:
    state: AppState = request.app.state.bastion
    marks = [("gate", time.perf_counter())]
    call_id = await _decided(state, principal, run, body)
    marks.append(("prepare", time.perf_counter()))

    def prepare() -> execs.Prepared:
        with state.write_sessions() as db:
            prepared = execs.prepare(db, state.vault, principal, run, body)
            reason = state.sandboxes.unavailable()
            if reason is not None:  # nothing kept: the fork's row, the reveals
                raise SandboxUnavailable(f"sandboxes cannot run on this instance: {reason}")
            db.commit()
            return prepared

    prepared = await run_in_threadpool(prepare)
    marks.append(("exec", time.perf_counter()))
    try:
        outcome = await run_in_threadpool(
            lambda: execs.execute(
                state.sandboxes, prepared, body, outbound_allow=state.settings.outbound_allow
            )
        )
    except Unavailable as exc:
        raise SandboxUnavailable(str(exc)) from None

    def record() -> None:
        with state.write_sessions() as db:
            uses = {
                how: [s.name for s in body.secrets if s.as_ == how] for how in ("file", "proxy")
            }
            execs.record(db, principal, prepared, call_id, outcome, uses)
            db.commit()

    marks.append(("record", time.perf_counter()))
    await run_in_threadpool(record)
    marks.append(("", time.perf_counter()))
    result = outcome.result
    response.headers["Server-Timing"] = _server_timing(
        request.scope.get(STARTED_KEY), marks, result.timings
    )
    return ExecOut(
        call_id=call_id,
        exit_code=result.exit_code,
        stdout=result.stdout.decode("utf-8", "replace"),
        stderr=result.stderr.decode("utf-8", "replace"),
        truncated=TruncatedOut(stdout=result.stdout_truncated, stderr=result.stderr_truncated),
        duration_ms=result.duration_ms,
        killed_by=result.killed_by,
        usage=UsageOut(**_usage(result.usage)),
        limits=LimitsOut(**_limits(prepared.limits)),
    )


def _server_timing(
    started: float | None, marks: list[tuple[str, float]], parts: Mapping[str, float]
) -> str:
    """`Server-Timing` of an exec (milliseconds): the route's steps (`gate`, `prepare`,
    `exec`, `record`), the exec's parts (`fork`, `proxy`, `cgroup`, `spawn`, `run`,
    `teardown`), and `total`, from the request's arrival to the answer."""
    steps = {name: (marks[i + 1][1] - at) * 1000 for i, (name, at) in enumerate(marks[:-1])}
    steps.update({f"exec.{name}": ms for name, ms in parts.items()})
    steps["total"] = (marks[-1][1] - (started if started is not None else marks[0][1])) * 1000
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in steps.items())


def _usage(usage: Any) -> dict[str, Any]:
    return {
        k: getattr(usage, k) for k in ("cpu_ms", "memory_peak_bytes", "pids_peak", "disk_bytes")
    }


def _limits(limits: Limits) -> dict[str, Any]:
    return {k: getattr(limits, k) for k in LimitsOut.model_fields}


@runs_router.get("/{wks}/diff", summary="The files the run's fork changed (live or kept)")
def get_diff(run: str, wks: str, principal: Caller, db: DB, state: State) -> DiffOut:
    found = execs.diff(db, state.sandboxes, principal, run, wks)
    return DiffOut(
        run_id=found.run_id,
        workspace=found.workspace,
        status=found.status,
        changes=[ChangeOut(path=c.path, kind=c.kind, size=c.size) for c in found.changes],
    )
