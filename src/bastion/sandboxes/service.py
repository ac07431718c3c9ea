"""Workspaces: an organisation's sandbox environments. Each has limits (at most the
organisation's maxima), a network mode (`none` unless an allowlist is given) and a
read-only base set from a gzip tar. Rights: `workspaces:read` to see them,
`workspaces:manage` to change them; an agent uses one when it is among its connections
(`bastion.sandboxes.execs`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.sandboxes import limits as limits_
from bastion.sandboxes import tarball
from bastion.sandboxes.models import Workspace
from bastion.sandboxes.provider import SandboxProvider
from bastion.sandboxes.schemas import NetworkIn, WorkspaceIn, WorkspacePatch

PREFIX = "wks"


def is_workspace_id(connection: str) -> bool:
    return connection.startswith(PREFIX + "_")


def existing_workspace_ids(db: Session, org_id: str, ids: Iterable[str]) -> set[str]:
    wanted = [i for i in ids if is_workspace_id(i)]
    if not wanted:
        return set()
    stmt = select(Workspace.id).where(Workspace.org_id == org_id, Workspace.id.in_(wanted))
    return set(db.execute(stmt).scalars())


def find(db: Session, org_id: str, workspace_id: str) -> Workspace:
    return get_in_org(db, Workspace, workspace_id, org_id, prefix=PREFIX, noun="workspace")


def _network(body: NetworkIn | None) -> dict[str, Any]:
    if body is None:
        return {"mode": "none", "domains": []}
    return {"mode": body.mode, "domains": sorted(set(body.domains))}


def _name_free(db: Session, org_id: str, name: str, but: str | None = None) -> None:
    stmt = select(Workspace.id).where(Workspace.org_id == org_id, Workspace.name == name)
    taken = db.execute(stmt).scalar_one_or_none()
    if taken is not None and taken != but:
        raise Conflict("a workspace with this name already exists")


def _manager(principal: Principal, org_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.WORKSPACES_MANAGE)


def _reader(principal: Principal, org_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.WORKSPACES_READ)


def create(db: Session, principal: Principal, org_id: str, body: WorkspaceIn) -> Workspace:
    _manager(principal, org_id)
    _name_free(db, org_id, body.name)
    maxima = limits_.org_maxima(db, org_id)
    workspace = Workspace(
        id=new_id(PREFIX),
        org_id=org_id,
        name=body.name,
        limits=asdict(limits_.resolve(body.limits, maxima, None)),
        network=_network(body.network),
        base_digest=None,
        base_bytes=0,
        base_files=0,
        created_by=principal.user_id or principal.id,
    )
    db.add(workspace)
    audit.record(
        db,
        type=EventType.SANDBOX_WORKSPACE_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sandbox_workspace", workspace.id),
        metadata={"name": workspace.name, "limits": workspace.limits, "network": workspace.network},
    )
    return workspace


def list_(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[Workspace]:
    _reader(principal, org_id)
    stmt = select(Workspace).where(Workspace.org_id == org_id)
    return newest_first(db, stmt, Workspace.id, limit=limit, cursor=cursor)


def get_to_manage(db: Session, principal: Principal, org_id: str, workspace_id: str) -> Workspace:
    _manager(principal, org_id)
    return find(db, org_id, workspace_id)


def get(db: Session, principal: Principal, org_id: str, workspace_id: str) -> Workspace:
    _reader(principal, org_id)
    return find(db, org_id, workspace_id)


def update(
    db: Session, principal: Principal, org_id: str, workspace_id: str, body: WorkspacePatch
) -> Workspace:
    _manager(principal, org_id)
    workspace = find(db, org_id, workspace_id)
    changed: dict[str, Any] = {}
    if body.name is not None and body.name != workspace.name:
        _name_free(db, org_id, body.name, but=workspace.id)
        workspace.name = changed["name"] = body.name
    if body.limits is not None:
        maxima = limits_.org_maxima(db, org_id)
        workspace.limits = changed["limits"] = asdict(
            limits_.resolve(body.limits, maxima, dict(workspace.limits))
        )
    if body.network is not None:
        workspace.network = changed["network"] = _network(body.network)
    audit.record(
        db,
        type=EventType.SANDBOX_WORKSPACE_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sandbox_workspace", workspace.id),
        metadata={"fields": sorted(changed), **changed},
    )
    return workspace


def delete(db: Session, principal: Principal, org_id: str, workspace_id: str) -> None:
    """The row goes now; its base and live forks when the sweep next runs
    (`execs.sweep`), after this transaction committed."""
    _manager(principal, org_id)
    workspace = find(db, org_id, workspace_id)
    db.delete(workspace)
    audit.record(
        db,
        type=EventType.SANDBOX_WORKSPACE_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sandbox_workspace", workspace_id),
        metadata={"name": workspace.name},
    )


def set_base(
    db: Session,
    provider: SandboxProvider,
    principal: Principal,
    org_id: str,
    workspace_id: str,
    body: bytes,
    *,
    max_bytes: int,
    max_files: int,
) -> Workspace:
    """Replace the workspace's base with the gzip tar `body` (see `tarball`). Runs that
    already forked keep the base they forked; the next runs fork the new one."""
    _manager(principal, org_id)
    workspace = find(db, org_id, workspace_id)
    digest = hashlib.sha256(body).hexdigest()
    staging = provider.staging()
    unpacked = tarball.unpack(body, staging, max_bytes=max_bytes, max_files=max_files)
    provider.prepare_workspace(workspace.id, digest, staging)
    workspace.base_digest = digest
    workspace.base_bytes = unpacked.bytes
    workspace.base_files = unpacked.files
    audit.record(
        db,
        type=EventType.SANDBOX_WORKSPACE_BASE_SET,
        actor=principal.actor,
        org_id=org_id,
        resource=("sandbox_workspace", workspace.id),
        metadata={"digest": digest, "bytes": unpacked.bytes, "files": unpacked.files},
    )
    return workspace
