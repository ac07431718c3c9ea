"""Evaluation: each organisation's audit chain read after its own cursor
(`alert_cursors`) and matched against its enabled rules; in the same transaction as the
cursor advances, alerts are opened or extended, so an event is evaluated exactly once
even across workers and restarts. One incident is one alert: a matching event for the
same rule and subject while an alert is open and recent extends it (`count`,
`last_at`) instead of raising another. Bursts and thresholds are counted over the
chain's events in the rule's window; periodic kinds (`sink_failing`,
`approval_pending`) look at state rather than events and resolve themselves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.alerts.models import Alert, AlertCursor, AlertRule
from bastion.approvals import service as approvals
from bastion.audit import sinks, stream
from bastion.core.clock import as_utc, utcnow
from bastion.core.ids import new_id
from bastion.core.netguard import network_of

BATCH = 1000
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
MFA_FAILURES = ("auth.mfa_failed", "auth.step_up_failed")
MFA_CHANGES = frozenset(
    {
        "mfa_factor.confirmed",
        "mfa_factor.deleted",
        "mfa_factor.reset",
        "mfa_recovery_code.used",
        "mfa_recovery_codes.generated",
    }
)
STEP_UP_REFUSALS = ("auth.step_up_required",)
SSO_FAILURES = ("sso.signin_failed",)
CONTROL_EVENTS = ("compliance_control.failing", "compliance_control.passing")
KEY_EVENTS = ("org.encryption_key.unavailable", "org.encryption_key.restored")


class Event(Protocol):
    """What matching reads of an audit event (`bastion.audit.stream` returns them)."""

    @property
    def id(self) -> str: ...
    @property
    def chain(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def time(self) -> datetime: ...
    @property
    def type(self) -> str: ...
    @property
    def actor_type(self) -> str: ...
    @property
    def actor_id(self) -> str | None: ...
    @property
    def actor_ip(self) -> str | None: ...
    @property
    def resource_type(self) -> str | None: ...
    @property
    def resource_id(self) -> str | None: ...
    @property
    def event_metadata(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Finding:
    key: str
    summary: str
    window: int  # seconds an open alert keeps absorbing matching events
    count: int = 1
    details: Mapping[str, Any] | None = None


def _failed_signins(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type not in SIGNIN_FAILURES:
        return None
    if rule.kind == "failed_signins_account":
        if e.resource_type != "user" or not e.resource_id:
            return None
        subject, key = f"user {e.resource_id}", f"user:{e.resource_id}"
        user, ip = e.resource_id, None
    else:
        if not e.actor_ip:
            return None
        subject, key = e.actor_ip, f"ip:{e.actor_ip}"
        user, ip = None, e.actor_ip
    since = t - timedelta(seconds=window)
    n = stream.count_between(
        db, e.chain, since, t, types=SIGNIN_FAILURES, resource_id=user, actor_ip=ip
    )
    if n < p["threshold"]:
        return None
    return Finding(key, f"{n} failed sign-ins for {subject} within {window} s", window, n)


def _access_spike(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type not in p["event_types"] or not e.actor_id:
        return None
    since = t - timedelta(seconds=window)
    n = stream.count_between(db, e.chain, since, t, types=p["event_types"], actor_id=e.actor_id)
    if n < p["threshold"]:
        return None
    summary = f"{n} data-access events by {e.actor_type} {e.actor_id} within {window} s"
    return Finding(f"actor:{e.actor_id}", summary, window, n)


def _not_found_burst(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """Not-found answers to one principal: its `authz.not_found` events in the window,
    each minute counted by the highest `count` recorded in it (a lower bound)."""
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type != "authz.not_found" or not e.actor_id:
        return None
    since = t - timedelta(seconds=window)
    rows = stream.metadata_between(db, e.chain, since, t, type_=e.type, actor_id=e.actor_id)
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


def _person_threshold(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """Wrong second-factor codes, or actions refused for a stale verification, by one
    person: `threshold` within the window."""
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    types = MFA_FAILURES if rule.kind == "mfa_failures" else STEP_UP_REFUSALS
    if e.type not in types or e.actor_type != "user" or not e.actor_id:
        return None
    since = t - timedelta(seconds=window)
    n = stream.count_between(db, e.chain, since, t, types=types, actor_id=e.actor_id)
    if n < p["threshold"]:
        return None
    what = "wrong second-factor codes" if rule.kind == "mfa_failures" else "step-up refusals"
    return Finding(f"user:{e.actor_id}", f"{n} {what} for user {e.actor_id} within {window} s",
                   window, n)  # fmt: skip


def _sso_failures(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """Refused SSO sign-ins of the organisation: `threshold` within the window (a
    broken or misconfigured provider, or someone replaying and forging answers)."""
    p, t = rule.params, as_utc(e.time)
    window = int(p["window_seconds"])
    if e.type not in SSO_FAILURES:
        return None
    since = t - timedelta(seconds=window)
    n = stream.count_between(db, e.chain, since, t, types=SSO_FAILURES)
    if n < p["threshold"]:
        return None
    return Finding("sso", f"{n} refused SSO sign-ins within {window} s", window, n)


def _burst(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """Permission changes and exports: a burst by one actor is one alert."""
    window = int(rule.params["window_seconds"])
    if rule.kind == "data_export":
        if e.type not in EXPORT_EVENTS:
            return None
        summary = f"audit trail exported by {e.actor_type} {e.actor_id}"
    elif rule.kind == "mfa_change":
        if e.type not in MFA_CHANGES:
            return None
        summary = f"second factors changed by {e.actor_type} {e.actor_id}: {e.type}"
        details = {"type": e.type, "resource": f"{e.resource_type}:{e.resource_id}"}
        return Finding(f"actor:{e.actor_id}", summary, window, details=details)
    else:
        role_change = e.type == "user.updated" and "role" in (e.event_metadata or {})
        if e.type not in PERMISSION_EVENTS and not role_change:
            return None
        summary = f"permissions changed by {e.actor_type} {e.actor_id}: {e.type}"
    return Finding(f"actor:{e.actor_id}", summary, window, details={"type": e.type})


def _key_network(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """An API key used from a network it never used before (not its very first use)."""
    metadata = e.event_metadata or {}
    if e.type != "api_key.new_network" or metadata.get("first", True):
        return None
    network = metadata.get("network")
    summary = f"API key {e.resource_id} used from a new network {network} ({metadata.get('ip')})"
    return Finding(f"key:{e.resource_id}:net:{network}", summary, 0, details=dict(metadata))


def _approval_requested(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    if e.type != "approval.requested" or not e.resource_id:
        return None
    metadata = e.event_metadata or {}
    summary = (
        f"agent {metadata.get('agent_id')} asks to run {metadata.get('tool')}: "
        f"approval {e.resource_id} needs {metadata.get('quorum', 1)} approver(s)"
    )
    details = {k: metadata.get(k) for k in ("agent_id", "tool", "call_id", "quorum")}
    return Finding(f"approval:{e.resource_id}", summary, 0, details=details)


def _scim_admin(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """An admin de-provisioned by the identity provider (`scim_user.deprovisioned`)."""
    metadata = e.event_metadata or {}
    if e.type != "scim_user.deprovisioned" or metadata.get("role") != "admin":
        return None
    summary = (
        f"admin {e.resource_id} {metadata.get('action', 'de-provisioned')} by SCIM"
        f" (token {e.actor_id})"
    )
    details = {"user_id": e.resource_id, "action": metadata.get("action"), "token": e.actor_id}
    return Finding(f"user:{e.resource_id}", summary, 0, details=details)


def _integration_disconnected(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """An integration whose refresh its provider refused (`integration.disconnected`)."""
    if e.type != "integration.disconnected" or not e.resource_id:
        return None
    metadata = e.event_metadata or {}
    summary = (
        f"integration {metadata.get('name')} ({metadata.get('provider')}) disconnected:"
        f" its provider refused the token refresh ({metadata.get('error')})"
    )
    details = {"integration_id": e.resource_id, "name": metadata.get("name"),
               "error": metadata.get("error")}  # fmt: skip
    return Finding(f"integration:{e.resource_id}", summary, 0, details=details)


def _control_failing(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """A compliance control started failing: one alert per control; the event that it
    passes again resolves that alert."""
    metadata = e.event_metadata or {}
    wanted = rule.params.get("frameworks") or []
    if e.type not in CONTROL_EVENTS or (wanted and metadata.get("framework") not in wanted):
        return None
    key = f"control:{e.resource_id}"
    if e.type == "compliance_control.passing":
        for alert in db.execute(
            select(Alert).where(Alert.rule_id == rule.id, Alert.key == key, Alert.status == "open")
        ).scalars():
            alert.status, alert.resolved_at = "resolved", as_utc(e.time)
        return None
    failing = metadata.get("failing_checks") or []
    summary = (
        f"{metadata.get('framework')} control {metadata.get('control')} is failing:"
        f" {', '.join(str(x) for x in failing)}"
    )
    details = {k: metadata.get(k) for k in ("framework", "control", "title", "failing_checks")}
    return Finding(key, summary, 0, details=details)


def _key_unavailable(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """The organisation's customer-managed key stopped answering: one alert until it
    answers again (the `restored` event resolves it)."""
    if e.type not in KEY_EVENTS:
        return None
    key = f"encryption-key:{e.resource_id}"
    if e.type == "org.encryption_key.restored":
        for alert in db.execute(
            select(Alert).where(Alert.rule_id == rule.id, Alert.key == key, Alert.status == "open")
        ).scalars():
            alert.status, alert.resolved_at = "resolved", as_utc(e.time)
        return None
    metadata = e.event_metadata or {}
    summary = (
        f"the organisation's {metadata.get('provider')} key is {metadata.get('status')}"
        f" ({metadata.get('reason')}): secrets cannot be revealed or written"
    )
    details = {k: metadata.get(k) for k in ("provider", "status", "reason")}
    return Finding(key, summary, 0, details=details)


def _review_due(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    """Reviewers of an open access review reminded: one alert per reminder."""
    if e.type != "access_review.reminder":
        return None
    metadata = e.event_metadata or {}
    summary = (
        f"access review {metadata.get('name')} ({e.resource_id}): {metadata.get('undecided')}"
        f" items undecided, due {metadata.get('due_at')}"
    )
    details = {k: metadata.get(k) for k in ("name", "undecided", "due_at", "reviewers")}
    return Finding(f"review:{e.resource_id}:{e.id}", summary, 0, details=details)


def _match(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    matcher = _MATCHERS.get(rule.kind)
    return matcher(db, rule, e) if matcher is not None else None


def _new_network(db: Session, rule: AlertRule, e: Event) -> Finding | None:
    p, t = rule.params, as_utc(e.time)
    if e.type != "auth.login_succeeded" or not e.actor_id or not e.actor_ip:
        return None
    network = network_of(e.actor_ip)
    if network is None:
        return None
    since = t - timedelta(days=int(p["lookback_days"]))
    earlier = stream.addresses_before(
        db, e.chain, e.seq, since, type_="auth.login_succeeded", actor_id=e.actor_id, limit=1000
    )
    seen = {n for n in (network_of(ip) for ip in earlier) if n is not None}
    if not seen:
        return None  # a first sign-in has no baseline to differ from
    if network in seen:
        return None
    summary = f"user {e.actor_id} signed in from a new network {network}"
    return Finding(f"user:{e.actor_id}:net:{network}", summary, 86_400, details={"ip": e.actor_ip})


_MATCHERS: dict[str, Callable[[Session, AlertRule, Event], Finding | None]] = {
    "failed_signins_account": _failed_signins,
    "failed_signins_ip": _failed_signins,
    "new_network_signin": _new_network,
    "not_found_burst": _not_found_burst,
    "access_spike": _access_spike,
    "permission_change": _burst,
    "data_export": _burst,
    "api_key_new_network": _key_network,
    "approval_requested": _approval_requested,
    "mfa_failures": _person_threshold,
    "mfa_change": _burst,
    "step_up_refused": _person_threshold,
    "sso_failures": _sso_failures,
    "scim_admin_deprovisioned": _scim_admin,
    "integration_disconnected": _integration_disconnected,
    "control_failing": _control_failing,
    "access_review_due": _review_due,
    "encryption_key_unavailable": _key_unavailable,
}


def _raise(db: Session, rule: AlertRule, found: Finding, e: Event | None) -> Alert | None:
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
    for sink in sinks.states(db, rule.org_id):
        key = f"sink:{sink.id}"
        healthy_since = as_utc(sink.healthy_since)
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
    events = stream.events_after(db, org_id, cursor.seq, BATCH)
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
