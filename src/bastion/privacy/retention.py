"""Retention per data class: the settings (`GET|PUT /v1/orgs/{org}/retention`) and the
purge that enforces them (hourly in the app, `bastion privacy purge` by hand).

- audit events: the organisation's `audit_retention_days` (one setting, shared with
  `PATCH /v1/orgs/{org}`), purged by `bastion.audit.retention` only up to a signed
  checkpoint, so what remains still verifies from that anchor;
- tool calls, webhook events, deleted objects, run artifacts: purged by the domain that
  holds them, through a `Purger` it registers here on import (privacy sits below
  agents and webhooks and never imports them).

Each purge that removed anything records `privacy.purged` in the organisation's chain
with the counts per class and the cut-off times (never a value).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import rfc3339, utcnow
from bastion.core.context import SYSTEM
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.privacy.models import RetentionSettings
from bastion.tenancy import service as tenancy

DEFAULTS: dict[str, int] = {
    "tool_calls_days": 90,
    "webhook_events_days": 30,
    "deleted_objects_days": 30,
    "run_artifacts_hours": 24,
}
# The data classes purgers register for, and the setting that bounds each.
CLASSES: dict[str, str] = {
    "tool_calls": "tool_calls_days",
    "webhook_events": "webhook_events_days",
    "deleted_objects": "deleted_objects_days",
    "run_artifacts": "run_artifacts_hours",
}

# (db, org_id, cutoff) -> rows purged: what the class holds of the organisation from
# before `cutoff`.
Purger = Callable[[Session, str, datetime], int]

_PURGERS: dict[str, dict[str, Purger]] = {}
_registering = threading.Lock()


def register(data_class: str, name: str, purger: Purger) -> None:
    """A domain's purge of one data class (idempotent per name)."""
    if data_class not in CLASSES:
        raise ValueError(f"unknown data class {data_class!r}")
    with _registering:
        _PURGERS.setdefault(data_class, {})[name] = purger


def _settings(db: Session, org_id: str) -> dict[str, int]:
    row = db.get(RetentionSettings, org_id)
    values = dict(DEFAULTS)
    if row is not None:
        values = {k: int(getattr(row, k)) for k in DEFAULTS}
    return values


def period_of(db: Session, org_id: str, setting: str) -> int:
    """One period of the organisation other than its audit events' (the default when
    never set): what a domain holding that data class keeps it for."""
    if setting not in DEFAULTS:
        raise ValueError(f"unknown retention setting {setting!r}")
    return _settings(db, org_id)[setting]


def settings_of(db: Session, org_id: str) -> dict[str, int]:
    """Every period of the organisation (the defaults where never set)."""
    days = tenancy.audit_retention_of(db, org_id)
    if days is None:
        raise NotFound("organization not found")
    return {"audit_events_days": days, **_settings(db, org_id)}


def get_retention(db: Session, principal: Principal, org_id: str) -> dict[str, int]:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_READ)
    return settings_of(db, org_id)


def update_retention(
    db: Session, principal: Principal, org_id: str, changes: dict[str, int]
) -> dict[str, int]:
    """Set the periods given (step-up: a shorter period destroys records); audited."""
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_MANAGE)
    before = settings_of(db, org_id)
    changed = {k: v for k, v in changes.items() if v is not None and before.get(k) != v}
    if not changed:
        return before
    principal.require_recent_auth("org.retention")
    if "audit_events_days" in changed:
        tenancy.set_audit_retention(db, org_id, changed["audit_events_days"])
    rest = {k: v for k, v in changed.items() if k in DEFAULTS}
    if rest:
        row = db.get(RetentionSettings, org_id)
        if row is None:
            row = RetentionSettings(org_id=org_id, **_settings(db, org_id))
            db.add(row)
        for key, value in rest.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.PRIVACY_RETENTION_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={k: {"from": before[k], "to": v} for k, v in sorted(changed.items())},
    )
    return settings_of(db, org_id)


@dataclass(frozen=True)
class Purged:
    org_id: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _cutoff(now: datetime, setting: str, value: int) -> datetime:
    return now - (timedelta(hours=value) if setting.endswith("_hours") else timedelta(days=value))


def purge_org(db: Session, org_id: str, now: datetime | None = None) -> Purged:
    """Purge what outlived its period in one organisation (not its audit events: see
    `tenancy.apply_audit_retention`), audited when anything went."""
    now = now or utcnow()
    periods = _settings(db, org_id)
    counts: dict[str, int] = {}
    cutoffs: dict[str, Any] = {}
    with _registering:
        purgers = {k: dict(v) for k, v in _PURGERS.items()}
    for data_class, setting in CLASSES.items():
        cutoff = _cutoff(now, setting, periods[setting])
        for name, purger in sorted(purgers.get(data_class, {}).items()):
            gone = purger(db, org_id, cutoff)
            if gone:
                counts[name] = counts.get(name, 0) + gone
                cutoffs[name] = rfc3339(cutoff)
    if counts:
        audit.record(
            db,
            type=EventType.PRIVACY_PURGED,
            actor=SYSTEM,
            org_id=org_id,
            resource=("org", org_id),
            metadata={"purged": dict(sorted(counts.items())), "before": cutoffs},
        )
    return Purged(org_id, dict(sorted(counts.items())))


def org_ids(db: Session) -> list[str]:
    """The organisations a purge round visits (only those that still exist)."""
    return tenancy.active_org_ids(db)


def purge_all(sessions: Callable[[], Session], now: datetime | None = None) -> list[Purged]:
    """One purge round: each organisation in its own transaction (one failing does not
    keep the others from their purge), then the audit chains (checkpoint-anchored)."""
    with sessions() as db:
        orgs = org_ids(db)
    done: list[Purged] = []
    for org_id in orgs:
        with sessions() as db:
            done.append(purge_org(db, org_id, now))
            db.commit()
    with sessions() as db:
        tenancy.apply_audit_retention(db)
        db.commit()
    return done
