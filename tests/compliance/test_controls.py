"""The compliance API: frameworks, controls evaluated from live state, attestations for
manual controls, the stored history of each control (when it started failing, when it
was fixed) and the `control_failing` alert kind; tenants and permissions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from bastion.alerts.evaluate import evaluate_org
from bastion.alerts.models import Alert
from bastion.audit.models import AuditEvent
from bastion.compliance import service as compliance
from bastion.core.clock import clock, utcnow
from bastion.core.ids import new_id
from bastion.identity.models import MfaFactor
from bastion.tenancy.models import Organization
from tests.compliance.conftest import writing
from tests.factories import Factory, Org


def _controls(factory: Factory, org: Org, framework: str) -> dict[str, dict[str, Any]]:
    response = factory.client.get(
        f"/v1/orgs/{org.id}/compliance/controls",
        params={"framework": framework},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    return {c["id"]: c for c in response.json()["data"]}


def _record(factory: Factory, org: Org) -> int:
    with writing(factory) as db:
        return compliance.evaluate_and_record(db, org.id, factory.state.signer.public_keys)


def test_frameworks_and_controls(factory: Factory) -> None:
    org = factory.org()
    response = factory.client.get(f"/v1/orgs/{org.id}/compliance/frameworks", headers=org.headers)
    assert response.status_code == 200, response.text
    assert [f["id"] for f in response.json()["data"]] == [
        "soc2",
        "iso27001",
        "gdpr",
        "ccpa",
        "hipaa",
    ]
    soc2 = _controls(factory, org, "soc2")
    assert {"CC6.1", "CC6.2", "CC6.3", "CC7.2", "CC7.3", "CC8.1"} <= set(soc2)
    cc61 = soc2["CC6.1"]
    assert cc61["framework"] == "soc2"
    assert cc61["status"] == "failing"
    checks = {c["name"]: c for c in cc61["checks"]}
    assert set(checks) == {"mfa_policy", "mfa_coverage", "sso_enforced", "encryption_keys_rotated"}
    assert checks["mfa_policy"]["status"] == "failing"
    assert checks["mfa_policy"]["detail"]
    assert soc2["CC7.4"]["status"] == "manual"
    assert soc2["CC7.4"]["checks"] == []
    iso = _controls(factory, org, "iso27001")
    assert {
        "A.5.15",
        "A.5.16",
        "A.5.17",
        "A.5.18",
        "A.8.2",
        "A.8.5",
        "A.8.15",
        "A.8.16",
        "A.8.24",
    } <= set(iso)
    assert {"Art.5(1)(e)", "Art.15", "Art.17", "Art.25", "Art.30", "Art.32"} <= set(
        _controls(factory, org, "gdpr")
    )
    hipaa = _controls(factory, org, "hipaa")
    retention = {c["name"]: c for c in hipaa["164.312(b)"]["checks"]}["retention_configured"]
    assert retention["status"] == "failing"
    assert "at least 2190" in retention["detail"]
    assert _controls(factory, org, "ccpa")["1798.150"]["checks"]
    everything = factory.client.get(f"/v1/orgs/{org.id}/compliance/controls", headers=org.headers)
    assert {c["framework"] for c in everything.json()["data"]} == {
        "soc2",
        "iso27001",
        "gdpr",
        "ccpa",
        "hipaa",
    }


def test_refusals(factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    base = f"/v1/orgs/{org.id}/compliance"
    bad = factory.client.get(f"{base}/controls?framework=pci", headers=org.headers)
    assert bad.status_code == 422
    assert "framework" in bad.text
    assert "pci" not in bad.text
    assert factory.client.get(f"{base}/controls", headers=other.headers).status_code == 404
    viewer = factory.member(org, "viewer")
    assert factory.client.get(f"{base}/frameworks", headers=viewer.headers).status_code == 403
    report = factory.client.post(
        f"{base}/reports", json={"framework": "soc2", "format": "docx"}, headers=org.headers
    )
    assert report.status_code == 422
    assert "format" in report.text


def test_attestations_for_manual_controls(factory: Factory) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}/compliance/attestations"
    body = {
        "framework": "soc2",
        "control": "CC7.4",
        "statement": "Incident response plan v3 approved and tabletop held on 2026-11-02",
        "evidence_url": "https://wiki.example.com/ir-plan",
        "document_sha256": "a" * 64,
        "valid_until": "2099-01-01T00:00:00Z",
    }
    response = factory.client.post(url, json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["attested_by_type"] == "api_key"
    assert (made["framework"], made["control_id"]) == ("soc2", "CC7.4")
    assert made["statement"] == body["statement"]
    evidence = _controls(factory, org, "soc2")["CC7.4"]["evidence"]
    assert [e["id"] for e in evidence if e["type"] == "attestation"] == [made["id"]]
    query = {"framework": "soc2", "control": "CC7.4"}
    listed = factory.client.get(url, params=query, headers=org.headers).json()["data"]
    assert [a["id"] for a in listed] == [made["id"]]
    # An automated control takes none; an unknown control or framework, a past expiry
    # are refused naming the field; a member may not attest; another tenant sees none.
    for change, field in [
        ({"control": "CC6.1"}, "control"),
        ({"control": "CC99"}, "control"),
        ({"framework": "pci"}, "framework"),
        ({"valid_until": "2001-01-01T00:00:00Z"}, "valid_until"),
        ({"evidence_url": "javascript:alert(1)"}, "evidence_url"),
    ]:
        response = factory.client.post(url, json={**body, **change}, headers=org.headers)
        assert response.status_code == 422, (change, response.text)
        assert field in response.text
    member = factory.member(org)
    assert factory.client.post(url, json=body, headers=member.headers).status_code == 403
    other = factory.org()
    assert factory.client.get(url, params=query, headers=other.headers).status_code == 404
    with writing(factory) as db:
        events = (
            db.execute(
                select(AuditEvent.type).where(
                    AuditEvent.chain == org.id,
                    AuditEvent.type == "compliance_attestation.created",
                )
            )
            .scalars()
            .all()
        )
    assert len(events) == 1


def _fix_cc61(factory: Factory, org: Org) -> None:
    with writing(factory) as db:
        db.execute(
            update(Organization)
            .where(Organization.id == org.id)
            .values(mfa_policy="all", sso_enforced=True)
        )
        db.add(
            MfaFactor(
                id=new_id("mfa"),
                org_id=org.id,
                user_id=org.admin.user_id,
                kind="totp",
                status="active",
                confirmed_at=utcnow(),
            )
        )


def test_history_and_control_failing_alert(factory: Factory) -> None:
    org = factory.org()
    rule = factory.client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": "controls", "kind": "control_failing", "params": {"frameworks": ["soc2"]}},
        headers=org.headers,
    )
    assert rule.status_code == 201, rule.text
    assert _record(factory, org) > 0
    assert _record(factory, org) == 0  # the same status again: no new stretch
    with writing(factory) as db:
        evaluate_org(db, org.id)
    with writing(factory) as db:
        alerts = db.execute(select(Alert).where(Alert.org_id == org.id)).scalars().all()
        keys = {a.key: a.status for a in alerts}
    assert keys["control:soc2:CC6.1"] == "open"
    assert not any(k.startswith("control:iso27001") for k in keys)  # only soc2 wanted

    clock.advance(3600)
    _fix_cc61(factory, org)
    assert _record(factory, org) > 0
    with writing(factory) as db:
        evaluate_org(db, org.id)
        alert = db.execute(
            select(Alert).where(Alert.org_id == org.id, Alert.key == "control:soc2:CC6.1")
        ).scalar_one()
        assert alert.status == "resolved"
    url = f"/v1/orgs/{org.id}/compliance/history"
    query = {"framework": "soc2", "control": "CC6.1"}
    response = factory.client.get(url, params=query, headers=org.headers)
    assert response.status_code == 200, response.text
    history = response.json()["data"]
    assert [h["status"] for h in history] == ["passing", "failing"]
    fixed, failed = history
    assert failed["evaluations"] == 2
    assert fixed["started_at"] > failed["last_evaluated_at"]
    assert {c["name"] for c in failed["checks"] if c["status"] == "failing"} >= {"mfa_policy"}
    with writing(factory) as db:
        types = (
            db.execute(
                select(AuditEvent.type)
                .where(AuditEvent.chain == org.id, AuditEvent.resource_id == "soc2:CC6.1")
                .order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
    assert types == ["compliance_control.failing", "compliance_control.passing"]
    other = factory.org()
    assert factory.client.get(url, params=query, headers=other.headers).status_code == 404
    unknown = {"framework": "soc2", "control": "CC0"}
    response = factory.client.get(url, params=unknown, headers=org.headers)
    assert response.status_code == 422
    assert "control" in response.text


def test_record_of_processing(factory: Factory) -> None:
    org = factory.org("Record <Keepers>")
    factory.member(org)
    response = factory.client.get(
        f"/v1/orgs/{org.id}/compliance/gdpr/record-of-processing", headers=org.headers
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["controller"] == {"organisation_id": org.id, "name": "Record <Keepers>"}
    audit_trail = record["processing_activities"][1]
    assert audit_trail["retention"] == {"audit_retention_days": 90}
    assert record["processing_activities"][0]["data_subjects"]["members"] == 2
    gdpr = _controls(factory, org, "gdpr")
    assert {
        "type": "record_of_processing",
        "path": f"/v1/orgs/{org.id}/compliance/gdpr/record-of-processing",
    } in gdpr["Art.30"]["evidence"]
