"""The checks controls map to: each reads the live state (`Facts`) and says what it
looked at and why it passes or fails, as `{"name", "status", "detail"}`. Parameters
have defaults here; a control of the catalogue may set others (HIPAA keeps audit
records six years). docs/compliance.md says what each check proves and its limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bastion.compliance.facts import Facts
from bastion.core.clock import as_utc

HIGH_RISK = ("high", "critical")


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # passing | failing
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _result(name: str, ok: bool, detail: str) -> CheckResult:
    return CheckResult(name, "passing" if ok else "failing", detail)


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def mfa_policy(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    policy = f.org.mfa_policy
    wanted = tuple(p["accept"])
    return _result(
        "mfa_policy",
        policy in wanted,
        f"organisation MFA policy is '{policy}'; "
        + (
            "a second factor is required"
            if policy in wanted
            else f"needs one of {', '.join(wanted)}"
        ),
    )


def mfa_coverage(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    people = f.active_people
    without = [x.email for x in people if not x.has_mfa]
    if f.org.sso_enforced:
        # Sign-in goes through the identity provider, whose MFA Bastion cannot see:
        # only break-glass holders (admins) sign in locally.
        without = [x.email for x in people if not x.has_mfa and x.role == "admin"]
        scope = "active admins (SSO enforced: others sign in at the identity provider)"
    else:
        scope = "active users"
    covered = len(people) - len(without) if not f.org.sso_enforced else None
    detail = (
        f"{len(without)} {scope} without a confirmed second factor"
        + (f": {_names(without)}" if without else "")
        + (f"; {covered}/{len(people)} covered" if covered is not None else "")
    )
    return _result("mfa_coverage", not without, detail)


def sso_enforced(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    on = bool(f.org.sso_enforced)
    return _result(
        "sso_enforced",
        on,
        "sign-in through the organisation's identity provider is enforced"
        + (" (break-glass admins may sign in with a password)" if f.org.sso_break_glass else "")
        if on
        else "SSO is not enforced: members may sign in with passwords",
    )


def stale_accounts(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(p["days"])
    since = f.now - timedelta(days=days)
    stale = [x.email for x in f.active_people if (x.last_login_at or x.created_at) < since]
    return _result(
        "stale_accounts",
        not stale,
        f"{len(stale)} of {len(f.active_people)} active users without a sign-in for {days} days"
        + (f": {_names(stale)}" if stale else ""),
    )


def api_key_age(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(p["max_age_days"])
    since = f.now - timedelta(days=days)
    old = [f"{k.name} ({k.id})" for k in f.keys if k.created_at < since]
    return _result(
        "api_key_age",
        not old,
        f"{len(old)} of {len(f.keys)} live API keys older than {days} days (rotate them)"
        + (f": {_names(old)}" if old else ""),
    )


def admin_count(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    admins = [x.email for x in f.active_people if x.role == "admin"]
    keys = [k for k in f.keys if k.role == "admin"]
    low, high = int(p["min"]), int(p["max"])
    ok = low <= len(admins) <= high
    return _result(
        "admin_count",
        ok,
        f"{len(admins)} active admins (policy {low} to {high});"
        f" {len(keys)} live admin-role API keys",
    )


def temporary_grants(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(p["max_days"])
    limit = f.now + timedelta(days=days)
    long = [
        f"{g.role} for {g.user_id} until {g.expires_at:%Y-%m-%d}"
        for g in f.grants
        if g.expires_at > limit
    ]
    return _result(
        "temporary_grants",
        not long,
        f"{len(f.grants)} temporary grants in force; {len(long)} end more than {days} days ahead"
        + (f": {_names(long)}" if long else ""),
    )


def audit_chain_valid(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    v = f.chain
    signed = "with checkpoint signatures" if f.public_keys is not None else "without signatures"
    detail = (
        f"hash chain verified over {v.checked} events {signed}"
        if v.valid
        else f"hash chain broken: {v.problem or 'mismatch'}"
        + (f" at event {v.first_invalid}" if v.first_invalid else "")
    )
    return _result("audit_chain_valid", v.valid, detail)


def audit_checkpoints_recent(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    hours = int(p["max_age_hours"])
    head = f.head_seq
    cp = f.latest_checkpoint
    if head == 0:
        return _result("audit_checkpoints_recent", True, "no audit events yet: nothing to anchor")
    if cp is None:
        return _result("audit_checkpoints_recent", False, f"{head} events and no signed checkpoint")
    seq, at = cp
    fresh = seq >= head or at >= f.now - timedelta(hours=hours)
    return _result(
        "audit_checkpoints_recent",
        fresh,
        f"latest signed checkpoint at event {seq} of {head}, made {at:%Y-%m-%dT%H:%MZ}"
        + ("" if fresh else f"; older than {hours} h with events after it"),
    )


def siem_sinks_healthy(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    enabled = [s for s in f.sinks if s.enabled]
    if not enabled:
        return _result(
            "siem_sinks_healthy", False, "no enabled audit sink streams events to a SIEM"
        )
    failing = [f"{s.name} ({s.type}): {s.last_error or 'failing'}" for s in enabled if s.failures]
    return _result(
        "siem_sinks_healthy",
        not failing,
        f"{len(enabled) - len(failing)} of {len(enabled)} enabled sinks delivering"
        + (f"; failing: {_names(failing)}" if failing else ""),
    )


def alert_rules_present(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    kinds = f.alert_kinds
    wanted = [k for k in p["kinds"] if k not in kinds]
    if not kinds:
        return _result("alert_rules_present", False, "no enabled alert rule")
    return _result(
        "alert_rules_present",
        not wanted,
        f"{sum(kinds.values())} enabled alert rules ({', '.join(sorted(kinds))}); "
        + (f"missing: {', '.join(wanted)}" if wanted else "every expected kind present"),
    )


def retention_configured(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(f.org.audit_retention_days)
    low, high = int(p["min_days"]), p.get("max_days")
    ok = days >= low and (high is None or days <= int(high))
    bound = f"at least {low}" + (f" and at most {high}" if high is not None else "")
    # A new organisation keeps 90 days (the retention default), below most frameworks'
    # minimum: the detail says what to set rather than only that it falls short.
    fix = ""
    if days < low:
        fix = f"; set audit_events_days to at least {low} (PUT /v1/orgs/{{org}}/retention)"
    elif high is not None and days > int(high):
        fix = f"; set audit_events_days to at most {high} (PUT /v1/orgs/{{org}}/retention)"
    return _result(
        "retention_configured",
        ok,
        f"audit events kept {days} days (policy: {bound}){fix}",
    )


def encryption_keys_rotated(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(p["max_age_days"])
    key = f.data_key
    if key.active_version is None or key.active_since is None:
        return _result(
            "encryption_keys_rotated", True, "no data key yet: the organisation holds no secret"
        )
    age = (f.now - key.active_since).days
    ok = age <= days
    return _result(
        "encryption_keys_rotated",
        ok,
        f"data key version {key.active_version} active for {age} days (policy: {days});"
        f" {key.secret_versions} secret versions under it",
    )


def access_reviews_completed(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    days = int(p["within_days"])
    since = f.now - timedelta(days=days)
    recent = [
        r
        for r in f.completed_reviews
        if r.completed_at is not None and as_utc(r.completed_at) >= since
    ]
    if not recent:
        last = f.completed_reviews[0] if f.completed_reviews else None
        when = (
            f"; last completed {as_utc(last.completed_at):%Y-%m-%d}"
            if last is not None and last.completed_at is not None
            else ""
        )
        return _result(
            "access_reviews_completed", False, f"no access review completed in {days} days{when}"
        )
    r = recent[0]
    return _result(
        "access_reviews_completed",
        True,
        f"{len(recent)} access reviews completed in {days} days; latest '{r.name}' ({r.id})",
    )


def high_risk_approvals(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    bypass = [
        f"{x['name']} ({x['id']})"
        for x in f.approval_policies
        if x["decision"] == "allow"
        and (x["match"].get("risks") is None or set(HIGH_RISK) & set(x["match"]["risks"]))
    ]
    tools = sum(len(a.high_risk_tools) for a in f.agents)
    return _result(
        "high_risk_approvals",
        not bypass,
        f"{tools} high-risk tools on {len(f.agents)} agents need human approval by default;"
        + (
            f" allow policies that can skip it: {_names(bypass)}"
            if bypass
            else " no allow policy covers high or critical tools"
        ),
    )


def webhooks_verified(f: Facts, p: Mapping[str, Any]) -> CheckResult:
    window = int(p["max_tolerance_seconds"])
    eps = f.webhook_endpoints
    bad = [f"{e.name} ({e.id})" for e in eps if e.live_secrets == 0 or e.tolerance_seconds > window]
    return _result(
        "webhooks_verified",
        not bad,
        f"{len(eps)} inbound webhook endpoints verify signatures with a replay window of at"
        f" most {window} s" + (f"; not: {_names(bad)}" if bad else ""),
    )


Check = Callable[[Facts, Mapping[str, Any]], CheckResult]

CHECKS: dict[str, tuple[Check, dict[str, Any]]] = {
    "mfa_policy": (mfa_policy, {"accept": ["all"]}),
    "mfa_coverage": (mfa_coverage, {}),
    "sso_enforced": (sso_enforced, {}),
    "stale_accounts": (stale_accounts, {"days": 90}),
    "api_key_age": (api_key_age, {"max_age_days": 90}),
    "admin_count": (admin_count, {"min": 2, "max": 5}),
    "temporary_grants": (temporary_grants, {"max_days": 30}),
    "audit_chain_valid": (audit_chain_valid, {}),
    "audit_checkpoints_recent": (audit_checkpoints_recent, {"max_age_hours": 24}),
    "siem_sinks_healthy": (siem_sinks_healthy, {}),
    "alert_rules_present": (
        alert_rules_present,
        {"kinds": ["failed_signins_account", "permission_change"]},
    ),
    "retention_configured": (retention_configured, {"min_days": 365}),
    "encryption_keys_rotated": (encryption_keys_rotated, {"max_age_days": 365}),
    "access_reviews_completed": (access_reviews_completed, {"within_days": 92}),
    "high_risk_approvals": (high_risk_approvals, {}),
    "webhooks_verified": (webhooks_verified, {"max_tolerance_seconds": 300}),
}


def run(name: str, facts: Facts, params: Mapping[str, Any]) -> CheckResult:
    fn, defaults = CHECKS[name]
    return fn(facts, {**defaults, **params})
