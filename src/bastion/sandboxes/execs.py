"""Executing a run's command in its fork of a workspace, reading the fork's diff, and
destroying forks when their runs end.

An exec is asked of the tool-call gate first (tool `sandbox.exec`, connection: the
workspace; the API does that, `bastion.api.routers.sandboxes`), then `prepare`d in a
transaction (the run's grant, the workspace, its limits, the fork's row, the secrets,
each reveal audited), `execute`d outside any transaction, and `record`ed (audited with
limits, usage and `killed_by`, and each egress connection and secret injection).
"""

from __future__ import annotations

import contextlib
import secrets as pysecrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.agents import gate, run_grants
from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import SYSTEM
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.principal import Principal
from bastion.privacy import service as privacy
from bastion.sandboxes import limits as limits_
from bastion.sandboxes import service as workspaces
from bastion.sandboxes.models import SandboxFork, Workspace
from bastion.sandboxes.provider import Change, ExecResult, Fork, Limits, RunSpec, SandboxProvider
from bastion.sandboxes.proxy import EgressProxy, Injection, allowed
from bastion.sandboxes.schemas import ExecIn
from bastion.secrets.vault import Vault

TOOL = "sandbox.exec"
DEFAULT_HEADER = "Authorization"


def gate_arguments(body: ExecIn) -> dict[str, Any]:
    """What the gate decides on and records (policies can match `argv`): never the
    environment's values, stdin or any secret value."""
    return {
        "workspace": body.workspace,
        "argv": list(body.argv),
        "env": sorted(body.env),
        "secrets": [{"name": s.name, "as": s.as_, "host": s.host} for s in body.secrets],
        "timeout_seconds": body.timeout_seconds,
    }


@dataclass(frozen=True)
class Prepared:
    run_id: str
    org_id: str
    agent_id: str
    workspace_id: str
    fork_id: str
    digest: str
    limits: Limits
    domains: tuple[str, ...]
    files: dict[str, bytes] = field(repr=False)
    injections: tuple[Injection, ...] = field(repr=False)


def prepare(db: Session, vault: Vault, principal: Principal, run_id: str, body: ExecIn) -> Prepared:
    grant = run_grants.active_grant(db, principal, run_id)
    if body.workspace not in grant.connections:
        raise Forbidden("this workspace is not among the agent's connections")
    workspace = workspaces.find(db, grant.org_id, body.workspace)
    network = dict(workspace.network or {})
    domains = tuple(network.get("domains") or ()) if network.get("mode") == "allowlist" else ()
    for use in body.secrets:
        if use.name not in grant.secrets:
            raise Forbidden("this secret was not given to this agent")
        if use.as_ == "proxy" and not (use.host and allowed(use.host, domains)):
            raise InvalidInput.field(
                "secrets", "a proxy secret's host must be on the workspace's allowlist"
            )
    fork = _fork_row(db, grant, workspace)
    limits = limits_.effective(fork.limits, limits_.org_maxima(db, grant.org_id))
    files: dict[str, bytes] = {}
    injections: list[Injection] = []
    for use in body.secrets:
        revealed = gate.reveal_secret(
            db, vault, principal, grant.org_id, use.name, version=None, workflow_id=None,
            run_id=None,
        )  # fmt: skip
        if use.as_ == "file":
            files[use.name] = revealed.value.encode()
        else:
            injections.append(
                Injection(use.name, str(use.host), use.header or DEFAULT_HEADER, revealed.value)
            )
    return Prepared(
        run_id=grant.run_id,
        org_id=grant.org_id,
        agent_id=grant.agent_id,
        workspace_id=workspace.id,
        fork_id=fork.id,
        digest=fork.base_digest,
        limits=limits,
        domains=domains,
        files=files,
        injections=tuple(injections),
    )


def _fork_row(db: Session, grant: run_grants.RunGrant, workspace: Workspace) -> SandboxFork:
    """The run's fork of the workspace: the base it was first forked from, the limits
    of then (the org's maxima of now still lower them)."""
    stmt = select(SandboxFork).where(
        SandboxFork.run_id == grant.run_id, SandboxFork.workspace_id == workspace.id
    )
    found = db.execute(stmt).scalar_one_or_none()
    if found is not None:
        if found.destroyed_at is not None:
            raise NotFound("run not found")
        return found
    if workspace.base_digest is None:
        raise Conflict("the workspace has no files yet (PUT …/files)")
    row = SandboxFork(
        id=new_id("sbf"),
        org_id=grant.org_id,
        run_id=grant.run_id,
        workspace_id=workspace.id,
        base_digest=workspace.base_digest,
        limits=dict(workspace.limits),
        execs=0,
    )
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:  # a concurrent first exec of the same run made it
        found = db.execute(stmt).scalar_one_or_none()
        if found is None:
            raise
        return found
    return row


@dataclass
class ExecOutcome:
    result: ExecResult
    events: list[dict[str, Any]]


def execute(
    provider: SandboxProvider,
    prepared: Prepared,
    body: ExecIn,
    *,
    outbound_allow: Sequence[str] = (),
) -> ExecOutcome:
    """Fork (or find the run's fork), run, and collect the proxy's events. No
    transaction. The result's `timings` add `fork` (and `proxy`) to the backend's."""
    timeout = body.timeout_seconds
    began = time.perf_counter()
    fork = provider.fork(prepared.fork_id, prepared.workspace_id, prepared.digest, prepared.limits)
    timings = {"fork": (time.perf_counter() - began) * 1000}
    events: list[dict[str, Any]] = []
    spec = RunSpec(
        argv=tuple(body.argv),
        limits=prepared.limits,
        stdin=body.stdin.encode(),
        env=dict(body.env),
        files=prepared.files,
        timeout_seconds=float(timeout) if timeout else None,
    )
    if not prepared.domains:
        return ExecOutcome(_timed(provider.run(fork, spec), timings), events)
    began = time.perf_counter()
    with _proxy(provider, prepared, events, outbound_allow) as socket_path:
        spec = RunSpec(**{**_fields(spec), "proxy_socket": socket_path})
        ran = time.perf_counter()
        result = provider.run(fork, spec)
        ran = time.perf_counter() - ran
    timings["proxy"] = (time.perf_counter() - began - ran) * 1000  # started and stopped
    return ExecOutcome(_timed(result, timings), events)


def _timed(result: ExecResult, timings: dict[str, float]) -> ExecResult:
    return replace(result, timings={**timings, **result.timings})


def _fields(spec: RunSpec) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}


@contextlib.contextmanager
def _proxy(
    provider: SandboxProvider,
    prepared: Prepared,
    events: list[dict[str, Any]],
    outbound_allow: Sequence[str],
) -> Any:
    directory = provider.proxy_dir() / pysecrets.token_hex(8)
    directory.mkdir(parents=True, mode=0o711)
    path = directory / "proxy.sock"
    proxy = EgressProxy(
        path, prepared.domains, prepared.injections, on_event=events.append,
        outbound_allow=outbound_allow,
    )  # fmt: skip
    try:
        with proxy:
            yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def record(
    db: Session,
    principal: Principal,
    prepared: Prepared,
    call_id: str,
    outcome: ExecOutcome,
    uses: dict[str, list[str]],
) -> None:
    """`uses`: the names of the secrets given to the exec, by how (`file`, `proxy`).
    (A metadata key naming secrets would be masked: names are not values.)"""
    result = outcome.result
    fork = db.get(SandboxFork, prepared.fork_id)
    if fork is not None:
        fork.execs += 1
    for event in outcome.events:
        injected = event.get("kind") == "secret_injected"
        audit.record(
            db,
            type=EventType.SANDBOX_SECRET_INJECTED if injected else EventType.SANDBOX_EGRESS,
            actor=principal.actor,
            org_id=prepared.org_id,
            resource=("run", prepared.run_id),
            outcome=Outcome.DENIED if event.get("decision") == "denied" else Outcome.SUCCESS,
            reason=event.get("reason"),
            metadata={"workspace": prepared.workspace_id, "call_id": call_id, **event},
        )
    audit.record(
        db,
        type=EventType.SANDBOX_EXEC,
        actor=principal.actor,
        org_id=prepared.org_id,
        resource=("run", prepared.run_id),
        outcome=Outcome.SUCCESS if result.exit_code == 0 else Outcome.FAILURE,
        reason=f"killed_by_{result.killed_by}" if result.killed_by else None,
        metadata={
            "agent_id": prepared.agent_id,
            "workspace": prepared.workspace_id,
            "fork_id": prepared.fork_id,
            "call_id": call_id,
            "exit_code": result.exit_code,
            "killed_by": result.killed_by,
            "duration_ms": result.duration_ms,
            "limits": asdict(prepared.limits),
            "usage": asdict(result.usage),
            "given": uses,
        },
    )


# --- diffs and the end of runs ----------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    run_id: str
    workspace: str
    status: Literal["none", "live", "destroyed"]
    changes: list[Change]


def diff(
    db: Session, provider: SandboxProvider, principal: Principal, run_id: str, workspace_id: str
) -> Diff:
    """The fork's changed files: to the run's own token, or a member who may read its
    agent. Live while the run is; kept the organisation's `run_artifacts_hours` after."""
    run = gate.get_run(db, principal, run_id)
    fork = db.execute(
        select(SandboxFork).where(
            SandboxFork.run_id == run.id,
            SandboxFork.workspace_id == workspace_id,
            SandboxFork.org_id == run.org_id,
        )
    ).scalar_one_or_none()
    if fork is None:
        workspaces.find(db, run.org_id, workspace_id)  # 404 for no such workspace
        return Diff(run.id, workspace_id, "none", [])
    if fork.destroyed_at is None:
        return Diff(run.id, workspace_id, "live", provider.diff(_fork(fork)))
    if fork.diff is None:
        raise NotFound("this fork's diff is no longer kept")
    return Diff(run.id, workspace_id, "destroyed", [Change(**c) for c in fork.diff])


def _fork(row: SandboxFork) -> Fork:
    return Fork(row.id, row.workspace_id, limits_.from_dict(row.limits, Limits()))


def sweep(db: Session, provider: SandboxProvider, now: datetime | None = None) -> int:
    """Destroy the forks of runs that ended (their diff kept), forget diffs past their
    time, and remove the files of deleted workspaces. Returns the forks destroyed."""
    now = now or utcnow()
    live = list(db.execute(select(SandboxFork).where(SandboxFork.destroyed_at.is_(None))).scalars())
    ended = run_grants.ended_runs(db, {f.run_id for f in live})
    destroyed = 0
    hours: dict[str, int] = {}  # each organisation's run_artifacts_hours, read once
    for fork in live:
        if fork.run_id not in ended:
            continue
        changes = provider.diff(_fork(fork))
        provider.destroy(fork.id)
        fork.diff = [asdict(c) for c in changes]
        fork.destroyed_at = now
        if fork.org_id not in hours:
            hours[fork.org_id] = privacy.run_artifacts_hours(db, fork.org_id)
        fork.diff_expires_at = now + timedelta(hours=hours[fork.org_id])
        destroyed += 1
        audit.record(
            db,
            type=EventType.SANDBOX_FORK_DESTROYED,
            actor=SYSTEM,
            org_id=fork.org_id,
            resource=("run", fork.run_id),
            metadata={"workspace": fork.workspace_id, "fork_id": fork.id, "changes": len(changes)},
        )
    for fork in db.execute(
        select(SandboxFork).where(SandboxFork.diff_expires_at.is_not(None))
    ).scalars():
        if fork.diff is not None and fork.diff_expires_at and as_utc(fork.diff_expires_at) <= now:
            fork.diff = None
    known = set(db.execute(select(Workspace.id)).scalars())
    for workspace_id in provider.workspace_ids():
        if workspace_id not in known:
            provider.remove_workspace(workspace_id)
    return destroyed
