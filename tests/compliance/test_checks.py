"""Every check of the control catalogue, each in a failing and a passing state of a real
organisation (SQLite, and PostgreSQL with BASTION_TEST_DATABASE_URL). State the API
cannot make (time gone by, a tampered event) is written to the database directly."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from bastion.agents.models import Agent
from bastion.alerts.models import AlertRule
from bastion.approvals.models import ApprovalPolicy
from bastion.audit import checkpoints
from bastion.audit.models import AuditEvent, AuditSink
from bastion.authz.models import RoleGrant
from bastion.compliance.models import AccessReview
from bastion.core.clock import utcnow
from bastion.core.ids import new_id
from bastion.identity.models import ApiKey, MfaFactor, User
from bastion.secrets.models import OrgKey
from bastion.tenancy.models import Organization
from bastion.webhooks.models import WebhookEndpoint, WebhookEndpointSecret
from tests.compliance.conftest import Check, writing
from tests.factories import Factory


def _org_set(factory: Factory, org_id: str, **values: object) -> None:
    with writing(factory) as db:
        db.execute(update(Organization).where(Organization.id == org_id).values(**values))


def test_mfa_policy(factory: Factory, check: Check) -> None:
    org = factory.org()
    result = check(org.id, "mfa_policy")
    assert result.status == "failing"
    assert "'optional'" in result.detail
    _org_set(factory, org.id, mfa_policy="admins")
    assert check(org.id, "mfa_policy").status == "failing"
    assert check(org.id, "mfa_policy", accept=["admins", "all"]).status == "passing"
    _org_set(factory, org.id, mfa_policy="all")
    assert check(org.id, "mfa_policy").status == "passing"


def test_mfa_coverage(factory: Factory, check: Check) -> None:
    org = factory.org()
    member = factory.member(org)
    result = check(org.id, "mfa_coverage")
    assert result.status == "failing"
    assert "2 active users without" in result.detail
    assert member.email in result.detail
    with writing(factory) as db:
        for user_id in (org.admin.user_id, member.user_id):
            db.add(
                MfaFactor(
                    id=new_id("mfa"),
                    org_id=org.id,
                    user_id=user_id,
                    kind="totp",
                    status="active",
                    confirmed_at=utcnow(),
                )
            )
    result = check(org.id, "mfa_coverage")
    assert result.status == "passing"
    assert "2/2 covered" in result.detail


def test_sso_enforced(factory: Factory, check: Check) -> None:
    org = factory.org()
    assert check(org.id, "sso_enforced").status == "failing"
    _org_set(factory, org.id, sso_enforced=True)
    assert check(org.id, "sso_enforced").status == "passing"


def test_stale_accounts(factory: Factory, check: Check) -> None:
    org = factory.org()
    member = factory.member(org)
    assert check(org.id, "stale_accounts").status == "passing"
    with writing(factory) as db:
        db.execute(
            update(User)
            .where(User.id == member.user_id)
            .values(last_login_at=utcnow() - timedelta(days=120))
        )
    result = check(org.id, "stale_accounts")
    assert result.status == "failing"
    assert member.email in result.detail
    assert check(org.id, "stale_accounts", days=180).status == "passing"


def test_api_key_age(factory: Factory, check: Check) -> None:
    org = factory.org()
    key = factory.api_key(org, "member")
    assert check(org.id, "api_key_age").status == "passing"
    with writing(factory) as db:
        db.execute(
            update(ApiKey)
            .where(ApiKey.id == key["id"])
            .values(created_at=utcnow() - timedelta(days=100))
        )
    result = check(org.id, "api_key_age")
    assert result.status == "failing"
    assert key["id"] in result.detail
    # Revoked, it no longer counts.
    response = factory.client.delete(f"/v1/orgs/{org.id}/api-keys/{key['id']}", headers=org.headers)
    assert response.status_code == 204, response.text
    assert check(org.id, "api_key_age").status == "passing"


def test_admin_count(factory: Factory, check: Check) -> None:
    org = factory.org()
    result = check(org.id, "admin_count")
    assert result.status == "failing"
    assert "1 active admins" in result.detail
    factory.member(org, "admin")
    assert check(org.id, "admin_count").status == "passing"
    for _ in range(4):
        factory.member(org, "admin")
    assert check(org.id, "admin_count").status == "failing"  # 6 > 5


def test_temporary_grants(factory: Factory, check: Check) -> None:
    org = factory.org()
    member = factory.member(org)
    with writing(factory) as db:
        db.add(
            RoleGrant(
                id=new_id("grt"),
                org_id=org.id,
                user_id=member.user_id,
                role="manager",
                reason="on call",
                expires_at=utcnow() + timedelta(days=7),
            )
        )
    assert check(org.id, "temporary_grants").status == "passing"
    with writing(factory) as db:
        db.add(
            RoleGrant(
                id=new_id("grt"),
                org_id=org.id,
                user_id=member.user_id,
                role="admin",
                reason="forever",
                expires_at=utcnow() + timedelta(days=90),
            )
        )
    result = check(org.id, "temporary_grants")
    assert result.status == "failing"
    assert "admin for" in result.detail


def test_audit_chain_valid(factory: Factory, check: Check) -> None:
    org = factory.org()
    factory.member(org)
    result = check(org.id, "audit_chain_valid")
    assert result.status == "passing"
    assert "with checkpoint signatures" in result.detail
    with writing(factory) as db:
        event = (
            db.execute(
                select(AuditEvent).where(AuditEvent.chain == org.id).order_by(AuditEvent.seq.desc())
            )
            .scalars()
            .first()
        )
        assert event is not None
        db.execute(
            update(AuditEvent)
            .where(AuditEvent.id == event.id)
            .values(event_metadata={"forged": True})
        )
    result = check(org.id, "audit_chain_valid")
    assert result.status == "failing"
    assert "broken" in result.detail


def test_audit_checkpoints_recent(factory: Factory, check: Check) -> None:
    org = factory.org()
    result = check(org.id, "audit_checkpoints_recent")
    assert result.status == "failing"
    assert "no signed checkpoint" in result.detail
    with writing(factory) as db:
        assert checkpoints.create(db, org.id, factory.state.signer) is not None
    assert check(org.id, "audit_checkpoints_recent").status == "passing"


def _sink(factory: Factory, org_id: str, failures: int) -> str:
    sink_id = new_id("snk")
    with writing(factory) as db:
        db.add(
            AuditSink(
                id=sink_id,
                org_id=org_id,
                name="siem",
                type="https",
                format="json",
                config={"url": "https://siem.invalid/"},
                enabled=True,
                cursor=10**9,
                failures=failures,
                last_error="connection refused" if failures else None,
                next_attempt_at=utcnow() + timedelta(days=1),
                created_at=utcnow(),
            )
        )
    return sink_id


def test_siem_sinks_healthy(factory: Factory, check: Check) -> None:
    org = factory.org()
    result = check(org.id, "siem_sinks_healthy")
    assert result.status == "failing"
    assert "no enabled audit sink" in result.detail
    _sink(factory, org.id, failures=0)
    assert check(org.id, "siem_sinks_healthy").status == "passing"
    _sink(factory, org.id, failures=3)
    result = check(org.id, "siem_sinks_healthy")
    assert result.status == "failing"
    assert "connection refused" in result.detail


def _rule(factory: Factory, org_id: str, kind: str) -> None:
    with writing(factory) as db:
        db.add(
            AlertRule(
                id=new_id("alr"),
                org_id=org_id,
                name=kind,
                kind=kind,
                params={},
                channels=[],
                enabled=True,
                created_at=utcnow(),
            )
        )


def test_alert_rules_present(factory: Factory, check: Check) -> None:
    org = factory.org()
    assert check(org.id, "alert_rules_present").status == "failing"
    _rule(factory, org.id, "failed_signins_account")
    result = check(org.id, "alert_rules_present")
    assert result.status == "failing"
    assert "missing: permission_change" in result.detail
    _rule(factory, org.id, "permission_change")
    assert check(org.id, "alert_rules_present").status == "passing"


def test_retention_configured(factory: Factory, check: Check) -> None:
    org = factory.org()
    # A new organisation keeps 90 days (the retention default): below the default
    # minimum of a year, and the detail says what to set.
    result = check(org.id, "retention_configured")
    assert result.status == "failing"
    assert "kept 90 days" in result.detail
    assert "set audit_events_days to at least 365" in result.detail
    assert check(org.id, "retention_configured", min_days=30).status == "passing"  # GDPR
    _org_set(factory, org.id, audit_retention_days=365)
    assert check(org.id, "retention_configured").status == "passing"
    assert check(org.id, "retention_configured", min_days=2190).status == "failing"  # HIPAA
    result = check(org.id, "retention_configured", min_days=30, max_days=300)
    assert result.status == "failing"
    assert "set audit_events_days to at most 300" in result.detail
    _org_set(factory, org.id, audit_retention_days=30)
    result = check(org.id, "retention_configured")
    assert result.status == "failing"
    assert "kept 30 days" in result.detail


def test_encryption_keys_rotated(factory: Factory, check: Check) -> None:
    org = factory.org()
    result = check(org.id, "encryption_keys_rotated")
    assert result.status == "passing"
    assert "no data key" in result.detail
    response = factory.client.put(
        f"/v1/orgs/{org.id}/secrets/db-password", json={"value": "hunter2"}, headers=org.headers
    )
    assert response.status_code in (200, 201), response.text
    result = check(org.id, "encryption_keys_rotated")
    assert result.status == "passing"
    assert "active for 0 days" in result.detail
    with writing(factory) as db:
        db.execute(
            update(OrgKey)
            .where(OrgKey.org_id == org.id)
            .values(created_at=utcnow() - timedelta(days=400))
        )
    assert check(org.id, "encryption_keys_rotated").status == "failing"


def test_access_reviews_completed(factory: Factory, check: Check) -> None:
    org = factory.org()
    assert check(org.id, "access_reviews_completed").status == "failing"
    now = utcnow()
    with writing(factory) as db:
        db.add(
            AccessReview(
                id=new_id("arv"),
                org_id=org.id,
                name="Q1",
                scope=["users"],
                reviewers={},
                due_at=now,
                on_due="keep",
                status="completed",
                created_at=now - timedelta(days=200),
                completed_at=now - timedelta(days=150),
            )
        )
    result = check(org.id, "access_reviews_completed")
    assert result.status == "failing"
    assert "last completed" in result.detail
    with writing(factory) as db:
        db.add(
            AccessReview(
                id=new_id("arv"),
                org_id=org.id,
                name="Q3",
                scope=["users"],
                reviewers={},
                due_at=now,
                on_due="keep",
                status="completed",
                created_at=now - timedelta(days=20),
                completed_at=now - timedelta(days=10),
            )
        )
    result = check(org.id, "access_reviews_completed")
    assert result.status == "passing"
    assert "'Q3'" in result.detail


def test_high_risk_approvals(factory: Factory, check: Check) -> None:
    org = factory.org()
    with writing(factory) as db:
        db.add(
            Agent(
                id=new_id("agt"),
                org_id=org.id,
                name="payer",
                owner_id=org.admin.user_id,
                configured_by=org.admin.user_id,
                visibility="org",
                team_ids=[],
                tools=[{"name": "refund", "risk": "high"}],
                connections=[],
                secrets=[],
            )
        )
        db.add(
            ApprovalPolicy(
                id=new_id("apl"),
                org_id=org.id,
                name="low ok",
                match={"risks": ["low"]},
                decision="allow",
                approvers={},
                quorum=1,
                expires_in=3600,
            )
        )
    result = check(org.id, "high_risk_approvals")
    assert result.status == "passing"
    assert "1 high-risk tools" in result.detail
    with writing(factory) as db:
        db.add(
            ApprovalPolicy(
                id=new_id("apl"),
                org_id=org.id,
                name="yolo",
                match={},
                decision="allow",
                approvers={},
                quorum=1,
                expires_in=3600,
            )
        )
    result = check(org.id, "high_risk_approvals")
    assert result.status == "failing"
    assert "yolo" in result.detail


def test_webhooks_verified(factory: Factory, check: Check) -> None:
    org = factory.org()
    assert check(org.id, "webhooks_verified").status == "passing"
    endpoint_id = new_id("whe")
    with writing(factory) as db:
        db.add(
            WebhookEndpoint(
                id=endpoint_id,
                org_id=org.id,
                name="github",
                provider="github",
                tolerance_seconds=None,
                retention_days=30,
                secret_id=new_id("sec"),
            )
        )
        db.flush()
        db.add(WebhookEndpointSecret(endpoint_id=endpoint_id, version=1, expires_at=None))
    assert check(org.id, "webhooks_verified").status == "passing"
    with writing(factory) as db:
        db.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(tolerance_seconds=3600)
        )
    result = check(org.id, "webhooks_verified")
    assert result.status == "failing"
    assert endpoint_id in result.detail
