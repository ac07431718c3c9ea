"""Data policies on agent traffic: which types, where, and what to do.

An organisation's policies are read once into an immutable `Policies` snapshot (the
gate keeps it with the run's view, per revision tuple: a policy change bumps the
organisation's authz revision), and `apply` answers for one value (a tool call's
arguments, a tool's result, a webhook payload, audit metadata): the strongest action
of the policies whose types were found (deny, then require_approval, then redact) and
the value with every found value of those types replaced by `<TYPE>` — what is stored,
and what approvers see, whatever the action. With no policy for a place, `apply` costs
nothing: no scan.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.privacy import detector
from bastion.privacy.models import DataPolicy
from bastion.privacy.redaction import Mode, redact_text
from bastion.privacy.types import EntityType

APPLIES_TO = ("audit_metadata", "tool_arguments", "tool_results", "webhook_payloads")
ACTIONS = ("deny", "redact", "require_approval")
# What each place can do: a result cannot wait for an approval (the call already ran);
# audit metadata and webhook payloads are only ever redacted (an event is never lost).
ALLOWED_ACTIONS: dict[str, frozenset[str]] = {
    "tool_arguments": frozenset(ACTIONS),
    "tool_results": frozenset({"deny", "redact"}),
    "audit_metadata": frozenset({"redact"}),
    "webhook_payloads": frozenset({"redact"}),
}
_STRENGTH = {"redact": 0, "require_approval": 1, "deny": 2}
MAX_POLICIES = 100  # per organisation
MAX_STRINGS = 2000  # string values scanned in one value; past it, the rest is replaced


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    applies_to: str
    types: frozenset[EntityType]
    action: str


@dataclass(frozen=True)
class Policies:
    """An organisation's policies, by place (immutable: shared between threads)."""

    by_place: dict[str, tuple[Rule, ...]] = field(default_factory=dict)

    def of(self, applies_to: str) -> tuple[Rule, ...]:
        return self.by_place.get(applies_to, ())

    def __bool__(self) -> bool:
        return bool(self.by_place)


NONE = Policies()


def policies_of(db: Session, org_id: str) -> Policies:
    """The organisation's policies (one indexed read)."""
    rows = db.execute(
        select(DataPolicy).where(DataPolicy.org_id == org_id).order_by(DataPolicy.id)
    ).scalars()
    by_place: dict[str, list[Rule]] = {}
    for p in rows:
        rule = Rule(p.id, p.name, p.applies_to, frozenset(EntityType(t) for t in p.types), p.action)
        by_place.setdefault(p.applies_to, []).append(rule)
    return Policies({k: tuple(v) for k, v in by_place.items()}) if by_place else NONE


@dataclass(frozen=True)
class Applied:
    """What the policies say of one value. `action` is None when nothing was found."""

    action: str | None
    rule: Rule | None  # the policy that decided (the first of the strongest action)
    value: Any = field(repr=False)  # the value to store: found values replaced
    types: tuple[str, ...] = ()  # the types found, sorted

    @property
    def reason(self) -> str:
        return f"privacy_policy:{self.rule.id}" if self.rule is not None else ""


def apply(policies: Policies, applies_to: str, value: Any) -> Applied:
    """Scan every string in `value` (JSON: dicts, lists, strings; keys are kept) for the
    types the place's policies name; see the module doc."""
    rules = policies.of(applies_to)
    if not rules:
        return Applied(None, None, value)
    wanted = frozenset().union(*(r.types for r in rules))
    strings: list[str] = []
    _collect(value, strings)
    if not strings:
        return Applied(None, None, value)
    found = detector().scan(strings[:MAX_STRINGS], wanted)
    kinds = {f.type for findings in found for f in findings}
    if not kinds and len(strings) <= MAX_STRINGS:
        return Applied(None, None, value)
    replaced = [redact_text(t, f, Mode.REPLACE).text for t, f in zip(strings, found, strict=False)]
    replaced += ["<REDACTED>"] * (len(strings) - len(replaced))  # too many to scan: withheld
    decided: Rule | None = None
    for rule in rules:
        if rule.types & kinds and (
            decided is None or _STRENGTH[rule.action] > _STRENGTH[decided.action]
        ):
            decided = rule
    redacted = _rebuild(value, iter(replaced))
    return Applied(
        decided.action if decided else "redact",
        decided,
        redacted,
        tuple(sorted(kinds)),
    )


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, out)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, out)


def _rebuild(value: Any, replaced: Any) -> Any:
    if isinstance(value, str):
        return next(replaced)
    if isinstance(value, dict):
        return {k: _rebuild(v, replaced) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rebuild(v, replaced) for v in value]
    return value


# --- audit metadata ---------------------------------------------------------------------

# Every audit event passes `_audit_filter` (registered with audit below): it must cost
# nothing for organisations without an `audit_metadata` policy. The instance's few such
# policies are read at most every `AUDIT_POLICIES_TTL` seconds per process (a change in
# this process applies at once; in another, within that time).
AUDIT_POLICIES_TTL = 2.0


class _AuditRules:
    """The instance's `audit_metadata` rules by organisation, with when they were read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple[float, dict[str, tuple[Rule, ...]]] | None = None

    def forget(self) -> None:
        with self._lock:
            self._held = None

    def of(self, db: Session, org_id: str) -> tuple[Rule, ...]:
        now = time.monotonic()
        with self._lock:
            held = self._held
        if held is None or now - held[0] >= AUDIT_POLICIES_TTL:
            held = (now, self._read(db))
            with self._lock:
                self._held = held
        return held[1].get(org_id, ())

    @staticmethod
    def _read(db: Session) -> dict[str, tuple[Rule, ...]]:
        stmt = select(
            DataPolicy.id, DataPolicy.org_id, DataPolicy.name, DataPolicy.types, DataPolicy.action
        ).where(DataPolicy.applies_to == "audit_metadata")
        found: dict[str, list[Rule]] = {}
        with db.no_autoflush:  # a read beside the caller's writes, never a flush of them
            for id_, org_id, name, types, action in db.execute(stmt.order_by(DataPolicy.id)):
                kinds = frozenset(map(EntityType, types))
                found.setdefault(org_id, []).append(
                    Rule(id_, name, "audit_metadata", kinds, action)
                )
        return {k: tuple(v) for k, v in found.items()}


_audit_rules = _AuditRules()
_forget_audit_rules = _audit_rules.forget


def _audit_filter(db: Session, org_id: str | None, metadata: dict[str, Any]) -> dict[str, Any]:
    if org_id is None or not metadata:
        return metadata
    rules = _audit_rules.of(db, org_id)
    if not rules:
        return metadata
    value = apply(Policies({"audit_metadata": rules}), "audit_metadata", metadata).value
    return dict(value)


audit.register_metadata_filter(_audit_filter)


# --- managing policies ------------------------------------------------------------------


def _check(applies_to: str, action: str, types: Iterable[str]) -> None:
    if action not in ALLOWED_ACTIONS[applies_to]:
        allowed = ", ".join(sorted(ALLOWED_ACTIONS[applies_to]))
        raise InvalidInput.field("action", f"for {applies_to}: one of {allowed}")
    if not list(types):
        raise InvalidInput.field("types", "name at least one type")


def _find(db: Session, org_id: str, policy_id: str) -> DataPolicy:
    policy = db.get(DataPolicy, policy_id) if has_prefix(policy_id, "dpol") else None
    if policy is None or policy.org_id != org_id:
        raise NotFound("data policy not found")
    return policy


def _describe(p: DataPolicy) -> dict[str, Any]:
    return {"name": p.name, "applies_to": p.applies_to, "types": list(p.types), "action": p.action}


def create_policy(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    name: str,
    applies_to: str,
    types: list[str],
    action: str,
) -> DataPolicy:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_MANAGE)
    _check(applies_to, action, types)
    count = len(db.execute(select(DataPolicy.id).where(DataPolicy.org_id == org_id)).all())
    if count >= MAX_POLICIES:
        raise InvalidInput(f"at most {MAX_POLICIES} data policies per organisation")
    policy = DataPolicy(
        id=new_id("dpol"),
        org_id=org_id,
        name=name,
        applies_to=applies_to,
        types=sorted(set(types)),
        action=action,
    )
    db.add(policy)
    db.flush()
    _forget_audit_rules()
    audit.record(
        db,
        type=EventType.PRIVACY_POLICY_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("privacy_policy", policy.id),
        metadata=_describe(policy),
    )
    return policy


def list_policies(db: Session, principal: Principal, org_id: str) -> list[DataPolicy]:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_READ)
    stmt = select(DataPolicy).where(DataPolicy.org_id == org_id).order_by(DataPolicy.id)
    return list(db.execute(stmt).scalars())


def get_policy(db: Session, principal: Principal, org_id: str, policy_id: str) -> DataPolicy:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_READ)
    return _find(db, org_id, policy_id)


def update_policy(
    db: Session,
    principal: Principal,
    org_id: str,
    policy_id: str,
    *,
    name: str | None = None,
    applies_to: str | None = None,
    types: list[str] | None = None,
    action: str | None = None,
) -> DataPolicy:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_MANAGE)
    policy = _find(db, org_id, policy_id)
    before = _describe(policy)
    new_types = sorted(set(types)) if types is not None else list(policy.types)
    _check(applies_to or policy.applies_to, action or policy.action, new_types)
    if name is not None:
        policy.name = name
    if applies_to is not None:
        policy.applies_to = applies_to
    if action is not None:
        policy.action = action
    policy.types = new_types
    after = _describe(policy)
    changes = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
    if changes:
        db.flush()
        _forget_audit_rules()
        audit.record(
            db,
            type=EventType.PRIVACY_POLICY_UPDATED,
            actor=principal.actor,
            org_id=org_id,
            resource=("privacy_policy", policy.id),
            metadata=changes,
        )
    return policy


def delete_policy(db: Session, principal: Principal, org_id: str, policy_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_MANAGE)
    policy = _find(db, org_id, policy_id)
    db.delete(policy)
    db.flush()
    _forget_audit_rules()
    audit.record(
        db,
        type=EventType.PRIVACY_POLICY_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("privacy_policy", policy_id),
        metadata={"name": policy.name},
    )
