"""Alerts: rules over each organisation's event stream, incidents deduplicated, and
notifications by outbound webhook (Standard Webhooks signature), Slack incoming webhook
and email (SMTP).

An evaluator reads each organisation's chain after its own cursor (`alert_cursors`) and,
in the same transaction as it advances the cursor, opens or extends alerts, so an event
is evaluated exactly once even across workers and restarts. One incident is one alert:
a matching event for the same rule and subject while an alert is open and recent
extends it (`count`, `last_at`) instead of raising another. Notifications are sent after
that transaction commits, each claimed by one worker at a time (a lease on its retry
time), retried with backoff until every channel accepted. Webhook and
Slack destinations pass the SSRF guard when the rule is saved, and every send connects to
an address the guard vetted when the connection was opened (`netguard.GuardedTransport`:
no second DNS lookup between the check and the connection). Webhook and Slack URLs are
https:// and email goes over SMTP with verified TLS (STARTTLS or implicit TLS): plain
transport only to destinations in `BASTION_OUTBOUND_PLAINTEXT_ALLOW`, checked when the
rule is saved and again for every send, and never an SMTP login without TLS.

Rule kinds (parameters, defaults):
- `failed_signins_account` — `threshold` (5) failed sign-ins for one user within
  `window_seconds` (900); attempts refused by throttling count as failed.
- `failed_signins_ip` — `threshold` (20) failed sign-ins from one address within
  `window_seconds` (900); likewise.
- `new_network_signin` — a user signs in from a network (IPv4 /24, IPv6 /48) none of
  their sign-ins used in the last `lookback_days` (90); a first sign-in is no alert.
- `not_found_burst` — `threshold` (50) not-found answers to one principal within
  `window_seconds` (300), counted from its `authz.not_found` events (enumeration).
- `access_spike` — `threshold` (100) data-access events (`event_types`) by one principal
  within `window_seconds` (300).
- `permission_change` — role, grant, key and user-role changes; a burst by one actor
  within `window_seconds` (300) is one alert.
- `data_export` — audit exports; a burst by one actor within `window_seconds` is one.
- `sink_failing` — an audit sink (an integration) has failed for `after_seconds` (600);
  resolved automatically when it delivers again.
- `api_key_new_network` — an API key is used from a network (IPv4 /24, IPv6 /48) it was
  never used from before (its first use sets the baseline).
- `approval_requested` — an agent's tool call needs human approval (one alert per
  request): how approvers hear of it by email or Slack.
- `approval_pending` — an agent's tool call has waited for human approval longer than
  `after_seconds` (900); one alert per approval, resolved when it is decided or expires.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bastion.approvals import service as approvals
from bastion.audit import service as audit
from bastion.audit.models import Alert, AlertCursor, AlertRule, AuditEvent, AuditHead, AuditSink
from bastion.audit.siem_transport import backoff_delay
from bastion.core.clock import as_utc, rfc3339, utcnow
from bastion.core.db import get_in_org
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.keyring import Keyring, seal, unseal
from bastion.core.netguard import (
    GuardedTransport,
    OutboundRefused,
    check_plaintext,
    network_of,
    plaintext_permitted,
    vetted_addresses,
)
from bastion.core.pagination import Page, decode_id_cursor, page_of
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.webhooks import sign_standard

Sessions = Callable[[], Session]
BATCH = 1000
MAX_NOTIFY_ATTEMPTS = 8
NOTIFY_LEASE_SECONDS = 120  # one send's time to finish before another worker retries it

DEFAULTS: dict[str, dict[str, Any]] = {
    "failed_signins_account": {"threshold": 5, "window_seconds": 900},
    "failed_signins_ip": {"threshold": 20, "window_seconds": 900},
    "new_network_signin": {"lookback_days": 90},
    "not_found_burst": {"threshold": 50, "window_seconds": 300},
    "access_spike": {
        "threshold": 100,
        "window_seconds": 300,
        "event_types": ["audit.exported", "secret.revealed", "document.read"],
    },
    "permission_change": {"window_seconds": 300},
    "data_export": {"window_seconds": 300},
    "sink_failing": {"after_seconds": 600},
    "api_key_new_network": {},
    "approval_pending": {"after_seconds": 900},
    "approval_requested": {},
}
PERMISSION_EVENTS = frozenset(
    {
        "role.created",
        "role.updated",
        "role.deleted",
        "role_grant.created",
        "role_grant.revoked",
        "api_key.created",
        "api_key.rotated",
        "service_account.created",
        "service_account.updated",
    }
)
EXPORT_EVENTS = frozenset({"audit.exported"})
# A credential-stuffing run goes on after its address is throttled: those attempts count.
SIGNIN_FAILURES = ("auth.login_failed", "auth.login_throttled")


@dataclass(frozen=True)
class Notifier:
    """Where notifications go out: SMTP for email, the SSRF allowlist, the plain-transport
    allowance, root keys."""

    keys: Keyring
    allow: Sequence[str]
    proxy: str | None = field(default=None, repr=False)  # may carry its password
    plaintext: Sequence[str] = ()
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "bastion@localhost"
    smtp_starttls: bool = True
    smtp_tls: bool = False  # implicit TLS (SMTPS); takes precedence over STARTTLS
    smtp_ca_file: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)


# --- rules --------------------------------------------------------------------------


_PURPOSE = "alert-channel-secrets:v1"


def _aad(org_id: str, rule_id: str) -> bytes:
    return f"alert-rule|{org_id}|{rule_id}".encode()


def _params(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    defaults = DEFAULTS[kind]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        # The parameters it takes, not the ones it was given: errors echo no input.
        raise InvalidInput.field("params", f"{kind} takes only {', '.join(defaults) or 'none'}")
    params = {**defaults, **given}
    for name in ("threshold", "window_seconds", "lookback_days", "after_seconds"):
        if name in params and (not isinstance(params[name], int) or params[name] < 1):
            raise InvalidInput.field(f"params.{name}", "must be a positive integer")
    if "event_types" in params and (
        not isinstance(params["event_types"], list)
        or not all(isinstance(t, str) for t in params["event_types"])
    ):
        raise InvalidInput.field("params.event_types", "must be a list of event types")
    return params


def _channels(
    channels: Sequence[Mapping[str, Any]], allow: Sequence[str], plaintext: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Validated channels without secrets, and the secrets by channel index."""
    public: list[dict[str, Any]] = []
    secrets: dict[str, str] = {}
    for i, channel in enumerate(channels):
        field = f"channels[{i}]"
        kind = channel.get("type")
        if kind in ("webhook", "slack"):
            url = str(channel.get("url") or "")
            parsed = httpx.URL(url) if url else None
            if parsed is None or parsed.scheme not in ("https", "http") or not parsed.host:
                raise InvalidInput.field(f"{field}.url", "must be an absolute https:// URL")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                addresses = vetted_addresses(parsed.host, port, allow)
                if parsed.scheme != "https":
                    check_plaintext(parsed.host, port, plaintext, addresses)
            except OutboundRefused as exc:
                raise InvalidInput.field(f"{field}.url", exc.reason) from None
            entry: dict[str, Any] = {"type": kind, "url": url}
            if kind == "webhook":
                secret = channel.get("secret")
                if not isinstance(secret, str) or not secret.startswith("whsec_"):
                    raise InvalidInput.field(f"{field}.secret", "a whsec_… signing secret")
                secrets[str(i)] = secret
            public.append(entry)
        elif kind == "email":
            to = channel.get("to")
            if not isinstance(to, list) or not to or not all("@" in str(a) for a in to):
                raise InvalidInput.field(f"{field}.to", "a list of email addresses")
            public.append({"type": "email", "to": [str(a) for a in to]})
        else:
            raise InvalidInput.field(f"{field}.type", "one of webhook, slack, email")
    return public, secrets


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
    public, secrets = _channels(channels, allow, plaintext)
    rule = AlertRule(
        id=new_id("alr"),
        org_id=org_id,
        name=name,
        kind=kind,
        params=_params(kind, params),
        channels=public,
        enabled=enabled,
        created_at=utcnow(),
    )
    if secrets:
        rule.key_version, rule.secrets_ciphertext = seal(
            keys, _PURPOSE, json.dumps(secrets).encode(), _aad(org_id, rule.id)
        )
    db.add(rule)
    if db.get(AlertCursor, org_id) is None:
        # Rules look forward: evaluation starts at the chain's head.
        head = db.get(AuditHead, org_id)
        db.add(AlertCursor(org_id=org_id, seq=head.seq if head else 0))
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


# --- alert history ------------------------------------------------------------------


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


# --- evaluation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    key: str
    summary: str
    window: int  # seconds an open alert keeps absorbing matching events
    count: int = 1
    details: Mapping[str, Any] | None = None


def _count(db: Session, org_id: str, since: datetime, until: datetime, *conds: Any) -> int:
    stmt = (
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.chain == org_id, AuditEvent.time > since, AuditEvent.time <= until, *conds
        )
    )
    return int(db.execute(stmt).scalar_one())


def _failed_signins(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type not in SIGNIN_FAILURES:
        return None
    if rule.kind == "failed_signins_account":
        if e.resource_type != "user" or not e.resource_id:
            return None
        subject, key, cond = (
            f"user {e.resource_id}",
            f"user:{e.resource_id}",
            (AuditEvent.resource_id == e.resource_id),
        )
    else:
        if not e.actor_ip:
            return None
        subject, key, cond = e.actor_ip, f"ip:{e.actor_ip}", AuditEvent.actor_ip == e.actor_ip
    since = t - timedelta(seconds=window)
    n = _count(db, e.chain, since, t, AuditEvent.type.in_(SIGNIN_FAILURES), cond)
    if n < p["threshold"]:
        return None
    return Finding(key, f"{n} failed sign-ins for {subject} within {window} s", window, n)


def _access_spike(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type not in p["event_types"] or not e.actor_id:
        return None
    since = t - timedelta(seconds=window)
    n = _count(
        db,
        e.chain,
        since,
        t,
        AuditEvent.type.in_(p["event_types"]),
        AuditEvent.actor_id == e.actor_id,
    )
    if n < p["threshold"]:
        return None
    summary = f"{n} data-access events by {e.actor_type} {e.actor_id} within {window} s"
    return Finding(f"actor:{e.actor_id}", summary, window, n)


def _not_found_burst(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    """Not-found answers to one principal: its `authz.not_found` events in the window,
    each minute counted by the highest `count` recorded in it (a lower bound)."""
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type != "authz.not_found" or not e.actor_id:
        return None
    rows = db.execute(
        select(AuditEvent.event_metadata).where(
            AuditEvent.chain == e.chain,
            AuditEvent.type == e.type,
            AuditEvent.actor_id == e.actor_id,
            AuditEvent.time > t - timedelta(seconds=window),
            AuditEvent.time <= t,
        )
    ).scalars()
    per_minute: dict[str, int] = {}
    for metadata in rows:
        minute, count = str((metadata or {}).get("minute")), (metadata or {}).get("count")
        if isinstance(count, int):
            per_minute[minute] = max(per_minute.get(minute, 0), count)
    n = sum(per_minute.values())
    if n < p["threshold"]:
        return None
    summary = f"{n} not-found answers to {e.actor_type} {e.actor_id} within {window} s"
    return Finding(f"actor:{e.actor_id}", summary, window, n)


def _burst(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    """Permission changes and exports: a burst by one actor is one alert."""
    window = int(rule.params["window_seconds"])
    if rule.kind == "data_export":
        if e.type not in EXPORT_EVENTS:
            return None
        summary = f"audit trail exported by {e.actor_type} {e.actor_id}"
    else:
        role_change = e.type == "user.updated" and "role" in (e.event_metadata or {})
        if e.type not in PERMISSION_EVENTS and not role_change:
            return None
        summary = f"permissions changed by {e.actor_type} {e.actor_id}: {e.type}"
    return Finding(f"actor:{e.actor_id}", summary, window, details={"type": e.type})


def _key_network(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    """An API key used from a network it never used before (not its very first use)."""
    metadata = e.event_metadata or {}
    if e.type != "api_key.new_network" or metadata.get("first", True):
        return None
    network = metadata.get("network")
    summary = f"API key {e.resource_id} used from a new network {network} ({metadata.get('ip')})"
    return Finding(f"key:{e.resource_id}:net:{network}", summary, 0, details=dict(metadata))


def _approval_requested(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    if e.type != "approval.requested" or not e.resource_id:
        return None
    metadata = e.event_metadata or {}
    summary = (
        f"agent {metadata.get('agent_id')} asks to run {metadata.get('tool')}: "
        f"approval {e.resource_id} needs {metadata.get('quorum', 1)} approver(s)"
    )
    details = {k: metadata.get(k) for k in ("agent_id", "tool", "call_id", "quorum")}
    return Finding(f"approval:{e.resource_id}", summary, 0, details=details)


def _match(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    matcher = _MATCHERS.get(rule.kind)
    return matcher(db, rule, e) if matcher is not None else None


def _new_network(db: Session, rule: AlertRule, e: AuditEvent) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    if e.type != "auth.login_succeeded" or not e.actor_id or not e.actor_ip:
        return None
    network = network_of(e.actor_ip)
    if network is None:
        return None
    since = t - timedelta(days=int(p["lookback_days"]))
    earlier = db.execute(
        select(AuditEvent.actor_ip)
        .where(
            AuditEvent.chain == e.chain,
            AuditEvent.type == "auth.login_succeeded",
            AuditEvent.actor_id == e.actor_id,
            AuditEvent.seq < e.seq,
            AuditEvent.time > since,
        )
        .distinct()
        .limit(1000)
    ).scalars()
    seen = {n for n in (network_of(ip) for ip in earlier) if n is not None}
    if not seen:
        return None  # a first sign-in has no baseline to differ from
    if network in seen:
        return None
    summary = f"user {e.actor_id} signed in from a new network {network}"
    return Finding(f"user:{e.actor_id}:net:{network}", summary, 86_400, details={"ip": e.actor_ip})


_MATCHERS: dict[str, Callable[[Session, AlertRule, AuditEvent], Finding | None]] = {
    "failed_signins_account": _failed_signins,
    "failed_signins_ip": _failed_signins,
    "new_network_signin": _new_network,
    "not_found_burst": _not_found_burst,
    "access_spike": _access_spike,
    "permission_change": _burst,
    "data_export": _burst,
    "api_key_new_network": _key_network,
    "approval_requested": _approval_requested,
}


def _raise(db: Session, rule: AlertRule, found: Finding, e: AuditEvent | None) -> Alert | None:
    """Open a new alert, or extend the open one for the same subject. Returns a new one."""
    at = as_utc(e.time) if e is not None else utcnow()
    open_alert = db.execute(
        select(Alert)
        .where(Alert.rule_id == rule.id, Alert.key == found.key, Alert.status == "open")
        .order_by(Alert.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    fresh = open_alert is not None and (
        found.window == 0 or as_utc(open_alert.last_at) >= at - timedelta(seconds=found.window)
    )
    if open_alert is not None and fresh:
        open_alert.count += 1
        open_alert.last_at = at
        open_alert.last_event_id = e.id if e is not None else open_alert.last_event_id
        return None
    alert = Alert(
        id=new_id("alt"),
        org_id=rule.org_id,
        rule_id=rule.id,
        kind=rule.kind,
        key=found.key,
        status="open",
        summary=found.summary[:500],
        count=found.count,
        first_event_id=e.id if e is not None else None,
        last_event_id=e.id if e is not None else None,
        first_at=at,
        last_at=at,
        details=dict(found.details or {}),
        notify_attempts=0,
        created_at=utcnow(),
    )
    db.add(alert)
    return alert


def _check_sinks(db: Session, rule: AlertRule, now: datetime) -> list[Alert]:
    after = timedelta(seconds=int(rule.params["after_seconds"]))
    raised = []
    for sink in db.execute(select(AuditSink).where(AuditSink.org_id == rule.org_id)).scalars():
        key = f"sink:{sink.id}"
        healthy_since = as_utc(sink.last_success_at or sink.created_at)
        if sink.enabled and sink.failures and now - healthy_since >= after:
            summary = f"audit sink {sink.name} ({sink.type}) failing: {sink.last_error or ''}"
            found = Finding(key, summary, 0, details={"sink_id": sink.id})
            alert = _raise(db, rule, found, None)
            if alert is not None:
                raised.append(alert)
        elif not sink.failures:
            for alert in db.execute(
                select(Alert).where(
                    Alert.rule_id == rule.id, Alert.key == key, Alert.status == "open"
                )
            ).scalars():
                alert.status, alert.resolved_at = "resolved", now
    return raised


def _check_approvals(db: Session, rule: AlertRule, now: datetime) -> list[Alert]:
    """One alert per approval pending longer than `after_seconds`; resolved once it is
    no longer pending."""
    after = int(rule.params["after_seconds"])
    overdue = approvals.overdue(db, rule.org_id, now - timedelta(seconds=after), now)
    opened = {
        a.key: a
        for a in db.execute(
            select(Alert).where(Alert.rule_id == rule.id, Alert.status == "open")
        ).scalars()
    }
    raised = []
    for approval in overdue:
        key = f"approval:{approval.id}"
        if key in opened:
            continue
        summary = f"approval {approval.id} for tool {approval.tool} pending over {after} s"
        details = {"approval_id": approval.id, "tool": approval.tool, "run_id": approval.run_id}
        alert = _raise(db, rule, Finding(key, summary, 0, details=details), None)
        if alert is not None:
            raised.append(alert)
    waiting = {f"approval:{a.id}" for a in overdue}
    for key, alert in opened.items():
        if key not in waiting:
            alert.status, alert.resolved_at = "resolved", now
    return raised


_PERIODIC: dict[str, Callable[[Session, AlertRule, datetime], list[Alert]]] = {
    "sink_failing": _check_sinks,
    "approval_pending": _check_approvals,
}


def evaluate_org(db: Session, org_id: str) -> list[str]:
    """Read the org's new events, raise or extend alerts, advance the cursor — one
    transaction, which the caller commits. Returns new alert ids."""
    rules = list(
        db.execute(
            select(AlertRule).where(AlertRule.org_id == org_id, AlertRule.enabled.is_(True))
        ).scalars()
    )
    cursor = db.execute(
        select(AlertCursor).where(AlertCursor.org_id == org_id).with_for_update()
    ).scalar_one_or_none()
    if cursor is None or not rules:
        return []
    raised: list[Alert] = []
    events = list(
        db.execute(
            select(AuditEvent)
            .where(AuditEvent.chain == org_id, AuditEvent.seq > cursor.seq)
            .order_by(AuditEvent.seq)
            .limit(BATCH)
        ).scalars()
    )
    for e in events:
        for rule in rules:
            found = _match(db, rule, e)
            if found is not None:
                alert = _raise(db, rule, found, e)
                if alert is not None:
                    raised.append(alert)
                db.flush()
    if events:
        cursor.seq = events[-1].seq
    now = utcnow()
    for rule in rules:
        check = _PERIODIC.get(rule.kind)
        if check is not None:
            raised.extend(check(db, rule, now))
    db.flush()
    return [a.id for a in raised]


def orgs_with_rules(db: Session) -> list[str]:
    stmt = select(AlertRule.org_id).where(AlertRule.enabled.is_(True)).distinct()
    return list(db.execute(stmt).scalars())


# --- notification -------------------------------------------------------------------


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "kind": alert.kind,
        "key": alert.key,
        "status": alert.status,
        "summary": alert.summary,
        "count": alert.count,
        "first_at": rfc3339(alert.first_at),
        "last_at": rfc3339(alert.last_at),
        "first_event_id": alert.first_event_id,
        "last_event_id": alert.last_event_id,
        "details": alert.details,
    }


class NotifyError(Exception):
    pass


def _post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allow: Sequence[str],
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
) -> None:
    """POST to a webhook or Slack channel. The transport resolves the host once per
    connection and connects only to an address `allow` permits, and over http:// only to
    a destination in `plaintext` (`OutboundRefused` otherwise), so the destination cannot
    re-resolve after a check."""
    parsed = httpx.URL(url)
    try:
        with httpx.Client(
            transport=GuardedTransport(allow, proxy=proxy, plaintext=plaintext),
            timeout=10,
            follow_redirects=False,
        ) as client:
            response = client.post(url, content=body, headers=dict(headers))
    except (OutboundRefused, httpx.HTTPError) as exc:
        raise NotifyError(f"{parsed.host}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise NotifyError(f"{parsed.host}: HTTP {response.status_code}")


def _send(alert: Alert, rule: AlertRule, notifier: Notifier) -> None:
    secrets: dict[str, str] = {}
    if rule.secrets_ciphertext is not None:
        plain = unseal(
            notifier.keys,
            _PURPOSE,
            rule.key_version,
            rule.secrets_ciphertext,
            _aad(rule.org_id, rule.id),
        )
        secrets = json.loads(plain)
    payload = alert_json(alert)
    for i, channel in enumerate(rule.channels):
        if channel["type"] == "webhook":
            body = json.dumps(
                {"type": "alert.opened", "timestamp": rfc3339(utcnow()), "data": payload}
            ).encode()
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": alert.id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign_standard(secrets[str(i)], alert.id, stamp, body),
            }
            _post(channel["url"], body, headers, notifier.allow, notifier.proxy, notifier.plaintext)
        elif channel["type"] == "slack":
            text = f":rotating_light: *Bastion alert* ({alert.kind}): {alert.summary}"
            body = json.dumps({"text": text}).encode()
            _post(
                channel["url"],
                body,
                {"content-type": "application/json"},
                notifier.allow,
                notifier.proxy,
                notifier.plaintext,
            )
        elif channel["type"] == "email":
            _email(alert, channel["to"], notifier)


def _email(alert: Alert, to: Sequence[str], notifier: Notifier) -> None:
    if not notifier.smtp_host:
        raise NotifyError("email channel but no SMTP server configured (BASTION_SMTP_HOST)")
    message = EmailMessage()
    message["From"] = notifier.smtp_from
    message["To"] = ", ".join(to)
    message["Subject"] = f"[Bastion alert] {alert.summary}"[:200]
    message.set_content(json.dumps(alert_json(alert), indent=2))
    host, port = notifier.smtp_host, notifier.smtp_port
    encrypted = notifier.smtp_tls or notifier.smtp_starttls
    if not encrypted:
        if notifier.smtp_username or notifier.smtp_password:
            raise NotifyError("SMTP: refused to log in without TLS (BASTION_SMTP_STARTTLS)")
        if not plaintext_permitted(host, port, notifier.plaintext):
            raise NotifyError(
                "SMTP: refused plain SMTP: enable BASTION_SMTP_STARTTLS or BASTION_SMTP_TLS, "
                "or list the server in BASTION_OUTBOUND_PLAINTEXT_ALLOW"
            )
    try:
        smtp = (
            smtplib.SMTP_SSL(host, port, timeout=10, context=_smtp_context(notifier))
            if notifier.smtp_tls
            else smtplib.SMTP(host, port, timeout=10)
        )
        with smtp:
            if notifier.smtp_starttls and not notifier.smtp_tls:
                # Raises SMTPNotSupportedError when the server offers no STARTTLS: never
                # fall back to plain text.
                smtp.starttls(context=_smtp_context(notifier))
            if notifier.smtp_username and notifier.smtp_password:
                smtp.login(notifier.smtp_username, notifier.smtp_password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(f"SMTP: {type(exc).__name__}") from None


def _smtp_context(notifier: Notifier) -> ssl.SSLContext:
    """TLS for SMTP: the server's certificate and host name verified (the system trust
    store, or `smtp_ca_file`), TLS 1.2 at least. smtplib's own default verifies nothing."""
    context = ssl.create_default_context(cafile=notifier.smtp_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _claim(sessions: Sessions, alert: Alert) -> bool:
    """Take `alert` for one send: a compare-and-set on what was read moves its retry time
    a lease ahead, so another worker or replica reading it meanwhile skips it; a worker
    that dies mid-send leaves it to be retried when the lease ends (at least once)."""
    with sessions() as db:
        due = (
            Alert.next_notify_at.is_(None)
            if alert.next_notify_at is None
            else Alert.next_notify_at == alert.next_notify_at
        )
        claimed = db.execute(
            update(Alert)
            .where(
                Alert.id == alert.id,
                Alert.notified_at.is_(None),
                Alert.notify_attempts == alert.notify_attempts,
                due,
            )
            .values(next_notify_at=utcnow() + timedelta(seconds=NOTIFY_LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        db.commit()
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def notify_pending(sessions: Sessions, notifier: Notifier, org_id: str | None = None) -> int:
    """Send every alert not yet notified whose retry time has come (of `org_id` alone
    when given); returns how many were delivered to all their channels. Each alert is
    claimed before it is sent, so concurrent workers do not send it twice."""
    now = utcnow()
    scope = () if org_id is None else (Alert.org_id == org_id,)
    with sessions() as db:
        pending = list(
            db.execute(
                select(Alert, AlertRule)
                .join(AlertRule, AlertRule.id == Alert.rule_id)
                .where(
                    *scope,
                    Alert.notified_at.is_(None),
                    Alert.notify_attempts < MAX_NOTIFY_ATTEMPTS,
                    (Alert.next_notify_at.is_(None)) | (Alert.next_notify_at <= now),
                )
                .order_by(Alert.id)
                .limit(100)
            ).all()
        )
        db.expunge_all()
    sent = 0
    for alert, rule in pending:
        if not _claim(sessions, alert):
            continue
        error: str | None = None
        try:
            _send(alert, rule, notifier)
        except NotifyError as exc:
            error = str(exc)[:500]
        with sessions() as db:
            row = db.get(Alert, alert.id)
            if row is None:
                continue
            row.notify_attempts += 1
            if error is None:
                row.notified_at, row.notify_error, row.next_notify_at = utcnow(), None, None
                sent += 1
            else:
                row.notify_error = error
                delay = backoff_delay(row.notify_attempts - 1, base=5, cap=900)
                row.next_notify_at = utcnow() + timedelta(seconds=delay)
            db.commit()
    return sent


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
