"""Limits: the instance's defaults, the organisation's maxima (`sandbox_limits` of
`GET|PATCH /v1/orgs/{org}`), a workspace's own (each at most the maxima: 422 above),
and what an exec gets (the workspace's, lowered to the maxima of now)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.sandboxes.models import SandboxLimits
from bastion.sandboxes.provider import Limits
from bastion.sandboxes.schemas import LIMIT_FIELDS, LimitsIn

DEFAULT_MAXIMA = Limits(
    cpu=2.0, memory_mb=2048, disk_mb=4096, pids=512, wall_seconds=600, cpu_seconds=600
)


def from_dict(data: dict[str, Any], fallback: Limits) -> Limits:
    base = asdict(fallback)
    for name in LIMIT_FIELDS:
        value = data.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            base[name] = value
    base["cpu"] = float(base["cpu"])
    for name in LIMIT_FIELDS[1:]:
        base[name] = int(base[name])
    return Limits(**base)


def org_maxima(db: Session, org_id: str) -> Limits:
    row = db.get(SandboxLimits, org_id)
    return from_dict(row.limits if row is not None else {}, DEFAULT_MAXIMA)


def set_org_maxima(db: Session, principal: Principal, org_id: str, body: LimitsIn) -> Limits:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    given = body.model_dump(exclude_none=True)
    row = db.get(SandboxLimits, org_id)
    if row is None:
        row = SandboxLimits(org_id=org_id, limits={})
        db.add(row)
    maxima = from_dict({**row.limits, **given}, DEFAULT_MAXIMA)
    row.limits = asdict(maxima)
    audit.record(
        db,
        type=EventType.SANDBOX_LIMITS_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"maxima": row.limits, "fields": sorted(given)},
    )
    return maxima


def resolve(body: LimitsIn | None, maxima: Limits, current: dict[str, Any] | None) -> Limits:
    """A workspace's limits: those given (each at most the maxima), the rest as they
    were, or the maxima for a new workspace."""
    given = body.model_dump(exclude_none=True) if body is not None else {}
    top = asdict(maxima)
    for name, value in given.items():
        if value > top[name]:
            raise InvalidInput.field(
                f"limits.{name}", f"above the organisation's maximum ({top[name]})"
            )
    return from_dict({**(current or {}), **given}, maxima)


def effective(workspace_limits: dict[str, Any], maxima: Limits) -> Limits:
    """The workspace's limits, none above the organisation's maxima of now."""
    own = from_dict(workspace_limits, maxima)
    return Limits(
        **{f.name: min(getattr(own, f.name), getattr(maxima, f.name)) for f in fields(Limits)}
    )
