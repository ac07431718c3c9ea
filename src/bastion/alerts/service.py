"""The alerts domain's public functions, called by the API and the background worker:
rules (create, list, get, update, delete), alert history (list, get, resolve), and one
evaluation-and-notification round (`run_round`). Rule kinds are described in
`bastion.alerts.rules`, matching in `bastion.alerts.evaluate`, sending in
`bastion.alerts.deliver`; docs/alerts.md is the user's guide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.alerts.deliver import Notifier, Sessions, notify_pending
from bastion.alerts.evaluate import evaluate_org, orgs_with_rules
from bastion.alerts.models import Alert, AlertCursor, AlertRule
from bastion.alerts.rules import (
    DEFAULTS,
    keep_secrets,
    open_secrets,
    seal_secrets,
    validate_channels,
    validate_params,
)
from bastion.alerts.schemas import AlertRulePatch
from bastion.audit import service as audit
from bastion.audit.stream import head_seq
from bastion.core.clock import utcnow
from bastion.core.db import get_in_org
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.keyring import Keyring
from bastion.core.pagination import Page, decode_id_cursor, page_of
from bastion.core.permissions import Permission
from bastion.core.principal import Principal


def create_rule(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    name: str,
    kind: str,
    params: Mapping[str, Any],
    channels: Sequence[Mapping[str, Any]],
    enabled: bool,
    keys: Keyring,
    allow: Sequence[str],
    plaintext: Sequence[str] = (),
) -> AlertRule:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    if kind not in DEFAULTS:
        raise InvalidInput.field("kind", f"one of {', '.join(sorted(DEFAULTS))}")
    public, secrets = validate_channels(channels, allow, plaintext)
    rule = AlertRule(
        id=new_id("alr"),
        org_id=org_id,
        name=name,
        kind=kind,
        params=validate_params(kind, params),
        channels=public,
        enabled=enabled,
        created_at=utcnow(),
    )
    if secrets:
        rule.key_version, rule.secrets_ciphertext = seal_secrets(keys, org_id, rule.id, secrets)
    db.add(rule)
    if db.get(AlertCursor, org_id) is None:
        # Rules look forward: evaluation starts at the chain's head.
        db.add(AlertCursor(org_id=org_id, seq=head_seq(db, org_id)))
    audit.record(
        db,
        type=EventType.ALERT_RULE_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("alert_rule", rule.id),
        metadata={"kind": kind, "name": name, "channels": [c["type"] for c in public]},
    )
    return rule


def _rule(db: Session, org_id: str, rule_id: str) -> AlertRule:
    return get_in_org(db, AlertRule, rule_id, org_id, prefix="alr", noun="alert rule")


def list_rules(db: Session, principal: Principal, org_id: str) -> list[AlertRule]:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    stmt = select(AlertRule).where(AlertRule.org_id == org_id).order_by(AlertRule.id)
    return list(db.execute(stmt).scalars())


def get_rule(db: Session, principal: Principal, org_id: str, rule_id: str) -> AlertRule:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    return _rule(db, org_id, rule_id)


def update_rule(
    db: Session,
    principal: Principal,
    org_id: str,
    rule_id: str,
    changes: AlertRulePatch,
    *,
    keys: Keyring,
    allow: Sequence[str],
    plaintext: Sequence[str] = (),
) -> AlertRule:
    """Change the fields given, validated as on create (422 naming the field); audited
    with the names of the fields that changed (never a channel secret). A request that
    changes nothing records nothing."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    rule = _rule(db, org_id, rule_id)
    given = changes.model_fields_set
    nulls = sorted(name for name in given if getattr(changes, name) is None)
    if nulls:
        raise InvalidInput.field(nulls[0], "may not be null")
    if changes.kind is not None and changes.kind != rule.kind:
        raise InvalidInput.field("kind", "cannot change: add a rule of the other kind instead")
    changed: list[str] = []
    if changes.name is not None and changes.name != rule.name:
        rule.name = changes.name
        changed.append("name")
    if changes.params is not None:
        params = validate_params(rule.kind, changes.params)
        if params != rule.params:
            rule.params = params
            changed.append("params")
    if changes.channels is not None:
        old: dict[str, str] = {}
        if rule.secrets_ciphertext is not None:
            old = open_secrets(keys, org_id, rule.id, rule.key_version, rule.secrets_ciphertext)
        given_channels = keep_secrets(changes.channels, rule.channels, old)
        public, secrets = validate_channels(given_channels, allow, plaintext)
        if public != rule.channels or secrets != old:
            rule.channels = public
            rule.key_version, rule.secrets_ciphertext = (
                seal_secrets(keys, org_id, rule.id, secrets) if secrets else (None, None)
            )
            changed.append("channels")
    if changes.enabled is not None and changes.enabled != rule.enabled:
        rule.enabled = changes.enabled
        changed.append("enabled")
    if changed:
        db.flush()
        audit.record(
            db,
            type=EventType.ALERT_RULE_UPDATED,
            actor=principal.actor,
            org_id=org_id,
            resource=("alert_rule", rule.id),
            metadata={
                "kind": rule.kind,
                "name": rule.name,
                "fields": changed,
                "channels": [c["type"] for c in rule.channels],
                "enabled": rule.enabled,
            },
        )
    return rule


def delete_rule(db: Session, principal: Principal, org_id: str, rule_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    rule = _rule(db, org_id, rule_id)
    db.delete(rule)
    audit.record(
        db,
        type=EventType.ALERT_RULE_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("alert_rule", rule_id),
        metadata={"kind": rule.kind, "name": rule.name},
    )


def list_alerts(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    status: str | None,
    rule_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Alert]:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    stmt = select(Alert).where(Alert.org_id == org_id)
    if status:
        stmt = stmt.where(Alert.status == status)
    if rule_id:
        stmt = stmt.where(Alert.rule_id == rule_id)
    after = decode_id_cursor(cursor)
    if after:
        stmt = stmt.where(Alert.id < after)
    rows = list(db.execute(stmt.order_by(Alert.id.desc()).limit(limit + 1)).scalars())
    return page_of(rows, limit, key=lambda a: a.id)


def _alert(db: Session, org_id: str, alert_id: str) -> Alert:
    return get_in_org(db, Alert, alert_id, org_id, prefix="alt", noun="alert")


def get_alert(db: Session, principal: Principal, org_id: str, alert_id: str) -> Alert:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    return _alert(db, org_id, alert_id)


def resolve_alert(db: Session, principal: Principal, org_id: str, alert_id: str) -> Alert:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    found = _alert(db, org_id, alert_id)
    if found.status != "resolved":
        found.status = "resolved"
        found.resolved_at = utcnow()
        audit.record(
            db,
            type=EventType.ALERT_RESOLVED,
            actor=principal.actor,
            org_id=org_id,
            resource=("alert", alert_id),
            metadata={"kind": found.kind},
        )
    return found


def run_round(
    sessions: Sessions, write_sessions: Sessions, notifier: Notifier, org_id: str | None = None
) -> int:
    """Evaluate every organisation with rules (or `org_id` alone), then notify; returns
    alerts delivered."""
    if org_id is None:
        with sessions() as db:
            orgs = orgs_with_rules(db)
    else:
        orgs = [org_id]
    for org in orgs:
        with write_sessions() as db:
            evaluate_org(db, org)
            db.commit()
    return notify_pending(write_sessions, notifier, org_id)
