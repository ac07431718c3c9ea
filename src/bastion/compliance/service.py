"""The compliance domain's public functions for controls: the frameworks, each
control evaluated from live state with its checks and evidence, the stored history of
each control's status (and the audit events that feed the `control_failing` alert
kind), and attestations for manual controls. Reports are in
`bastion.compliance.reports`, access reviews in `bastion.compliance.reviews`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.compliance import catalogue
from bastion.compliance.catalogue import Control, Framework
from bastion.compliance.checks import CheckResult, run
from bastion.compliance.facts import Facts
from bastion.compliance.models import Attestation, ControlState
from bastion.core.clock import as_utc, rfc3339, utcnow
from bastion.core.context import SYSTEM
from bastion.core.crypto import sha256_hex
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.tenancy import evidence as tenancy

Sessions = Callable[[], Session]


@dataclass(frozen=True)
class ControlResult:
    control: Control
    status: str  # passing | failing | manual
    checks: list[CheckResult]
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.control.id,
            "framework": self.control.framework,
            "title": self.control.title,
            "status": self.status,
            "checks": [c.as_json() for c in self.checks],
            "evidence": self.evidence,
        }


def framework_of(name: str, field_name: str = "framework") -> Framework:
    try:
        return catalogue.load(name)
    except KeyError:
        raise InvalidInput.field(field_name, f"one of {', '.join(catalogue.FRAMEWORKS)}") from None


def control_of(framework: str, control_id: str) -> Control:
    fw = framework_of(framework)
    for control in fw.controls:
        if control.id == control_id:
            return control
    raise InvalidInput.field("control", f"no such control in {fw.id}")


def list_frameworks(principal: Principal, org_id: str) -> list[dict[str, Any]]:
    principal.require_org(org_id)
    principal.require(Permission.COMPLIANCE_READ)
    return [
        {"id": fw.id, "title": fw.title, "version": fw.version, "controls": len(fw.controls)}
        for fw in catalogue.all_frameworks()
    ]


def _attestations(db: Session, org_id: str, framework: str) -> dict[str, list[Attestation]]:
    rows = db.execute(
        select(Attestation)
        .where(Attestation.org_id == org_id, Attestation.framework == framework)
        .order_by(Attestation.attested_at.desc())
    ).scalars()
    found: dict[str, list[Attestation]] = {}
    for row in rows:
        found.setdefault(row.control_id, []).append(row)
    return found


def attestation_json(a: Attestation) -> dict[str, Any]:
    return {
        "type": "attestation",
        "id": a.id,
        "statement": a.statement,
        "evidence_url": a.evidence_url,
        "document_sha256": a.document_sha256,
        "attested_by": a.attested_by,
        "attested_by_type": a.attested_by_type,
        "attested_at": rfc3339(a.attested_at),
        "valid_until": rfc3339(a.valid_until) if a.valid_until else None,
    }


def evaluate(db: Session, facts: Facts, framework: Framework) -> list[ControlResult]:
    """Every control of `framework` over `facts` (each check run once per control)."""
    attested = _attestations(db, facts.org_id, framework.id)
    results = []
    for control in framework.controls:
        checks = [run(ref.name, facts, ref.params) for ref in control.checks]
        evidence: list[dict[str, Any]] = []
        if control.manual:
            status = "manual"
            for a in attested.get(control.id, []):
                if a.valid_until is None or as_utc(a.valid_until) > facts.now:
                    evidence.append(attestation_json(a))
        else:
            status = "passing" if all(c.status == "passing" for c in checks) else "failing"
            evidence.append({"type": "live_state", "evaluated_at": rfc3339(facts.now)})
        if control.generated == "record_of_processing":
            evidence.append(
                {
                    "type": "record_of_processing",
                    "path": f"/v1/orgs/{facts.org_id}/compliance/gdpr/record-of-processing",
                }
            )
        if any(ref.name == "access_reviews_completed" for ref in control.checks):
            evidence.extend(
                {
                    "type": "access_review",
                    "id": r.id,
                    "name": r.name,
                    "completed_at": rfc3339(r.completed_at) if r.completed_at else None,
                }
                for r in facts.completed_reviews[:5]
            )
        results.append(ControlResult(control, status, checks, evidence))
    return results


def list_controls(
    db: Session,
    principal: Principal,
    org_id: str,
    framework: str | None,
    public_keys: Mapping[int, bytes] | None,
) -> list[ControlResult]:
    principal.require_org(org_id)
    principal.require(Permission.COMPLIANCE_READ)
    frameworks = [framework_of(framework)] if framework else catalogue.all_frameworks()
    facts = Facts(db, org_id, public_keys)
    return [r for fw in frameworks for r in evaluate(db, facts, fw)]


# --- history --------------------------------------------------------------------------


def record(db: Session, org_id: str, results: list[ControlResult], at: datetime) -> int:
    """Store an evaluation: a control whose status changed opens a new stretch (and a
    `compliance_control.failing` or `.passing` event when it failed or was fixed); one
    whose status held moves its stretch's `last_evaluated_at`. Returns changes."""
    changed = 0
    for result in results:
        c = result.control
        latest = db.execute(
            select(ControlState)
            .where(
                ControlState.org_id == org_id,
                ControlState.framework == c.framework,
                ControlState.control_id == c.id,
            )
            .order_by(ControlState.started_at.desc(), ControlState.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        checks = [x.as_json() for x in result.checks]
        if latest is not None and latest.status == result.status:
            latest.last_evaluated_at = at
            latest.evaluations += 1
            if latest.checks != checks:
                latest.checks = checks
            continue
        changed += 1
        db.add(
            ControlState(
                id=new_id("cst"),
                org_id=org_id,
                framework=c.framework,
                control_id=c.id,
                status=result.status,
                checks=checks,
                started_at=at,
                last_evaluated_at=at,
                evaluations=1,
            )
        )
        was = latest.status if latest is not None else None
        if result.status == "failing" or (was == "failing" and result.status == "passing"):
            failing = [x.name for x in result.checks if x.status == "failing"]
            audit.record(
                db,
                type=EventType.COMPLIANCE_CONTROL_FAILING
                if result.status == "failing"
                else EventType.COMPLIANCE_CONTROL_PASSING,
                actor=SYSTEM,
                org_id=org_id,
                outcome=Outcome.FAILURE if result.status == "failing" else Outcome.SUCCESS,
                resource=("compliance_control", f"{c.framework}:{c.id}"),
                metadata={
                    "framework": c.framework,
                    "control": c.id,
                    "title": c.title,
                    "failing_checks": failing,
                    "was": was,
                },
            )
    db.flush()
    return changed


def evaluate_and_record(db: Session, org_id: str, public_keys: Mapping[int, bytes] | None) -> int:
    facts = Facts(db, org_id, public_keys)
    results = [r for fw in catalogue.all_frameworks() for r in evaluate(db, facts, fw)]
    return record(db, org_id, results, facts.now)


def evaluate_round(
    write_sessions: Sessions,
    public_keys: Mapping[int, bytes] | None,
    read_sessions: Sessions | None = None,
) -> int:
    """Evaluate and store every active organisation's controls, one transaction each."""
    with (read_sessions or write_sessions)() as db:
        orgs = tenancy.active_org_ids(db)
    changed = 0
    for org_id in orgs:
        with write_sessions() as db:
            changed += evaluate_and_record(db, org_id, public_keys)
            db.commit()
    return changed


def history(
    db: Session, principal: Principal, org_id: str, framework: str, control_id: str
) -> list[ControlState]:
    """The control's stretches of status, newest first."""
    principal.require_org(org_id)
    principal.require(Permission.COMPLIANCE_READ)
    control = control_of(framework, control_id)
    return list(
        db.execute(
            select(ControlState)
            .where(
                ControlState.org_id == org_id,
                ControlState.framework == control.framework,
                ControlState.control_id == control.id,
            )
            .order_by(ControlState.started_at.desc(), ControlState.id.desc())
            .limit(500)
        ).scalars()
    )


# --- attestations ---------------------------------------------------------------------


def attest(
    db: Session,
    principal: Principal,
    org_id: str,
    framework: str,
    control_id: str,
    *,
    statement: str,
    evidence_url: str | None,
    document_sha256: str | None,
    valid_until: datetime | None,
) -> Attestation:
    """Record who states, when, that a manual control operates (and what shows it)."""
    principal.require_org(org_id)
    principal.require(Permission.COMPLIANCE_MANAGE)
    control = control_of(framework, control_id)
    if not control.manual:
        raise InvalidInput.field("control", "is evaluated from live state: no attestation")
    now = utcnow()
    if valid_until is not None and as_utc(valid_until) <= now:
        raise InvalidInput.field("valid_until", "must be in the future")
    row = Attestation(
        id=new_id("att"),
        org_id=org_id,
        framework=control.framework,
        control_id=control.id,
        statement=statement,
        evidence_url=evidence_url,
        document_sha256=document_sha256,
        attested_by=principal.user_id or principal.id,
        attested_by_type=principal.principal_type,
        attested_at=now,
        valid_until=valid_until,
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        type=EventType.COMPLIANCE_ATTESTATION_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("compliance_control", f"{control.framework}:{control.id}"),
        metadata={
            "attestation_id": row.id,
            "framework": control.framework,
            "control": control.id,
            "statement_sha256": sha256_hex(statement),
            "valid_until": rfc3339(valid_until) if valid_until else None,
        },
    )
    return row


def list_attestations(
    db: Session, principal: Principal, org_id: str, framework: str, control_id: str
) -> list[Attestation]:
    principal.require_org(org_id)
    principal.require(Permission.COMPLIANCE_READ)
    control = control_of(framework, control_id)
    return _attestations(db, org_id, control.framework).get(control.id, [])
