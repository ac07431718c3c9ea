"""The live state one evaluation reads, gathered on first use and once per evaluation
through the other domains' services and evidence modules (never their tables)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents import evidence as agents
from bastion.alerts import evidence as alerts
from bastion.approvals import policies as approvals
from bastion.audit import checkpoints, sinks
from bastion.audit import service as audit
from bastion.audit.stream import head_seq
from bastion.authz import evidence as authz
from bastion.compliance.models import AccessReview
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import NotFound
from bastion.identity import evidence as identity
from bastion.secrets import evidence as secrets
from bastion.tenancy import service as tenancy
from bastion.webhooks import evidence as webhooks


class Facts:
    """One organisation's state at `now`; each part read once, when a check asks."""

    def __init__(
        self, db: Session, org_id: str, public_keys: Mapping[int, bytes] | None = None
    ) -> None:
        self.db = db
        self.org_id = org_id
        self.public_keys = public_keys
        self.now = utcnow()
        org = tenancy.find_org(db, org_id)
        if org is None:
            raise NotFound("organisation not found")
        self.org = org

    @cached_property
    def people(self) -> list[identity.PersonFact]:
        return identity.people(self.db, self.org_id)

    @cached_property
    def active_people(self) -> list[identity.PersonFact]:
        return [p for p in self.people if p.status == "active"]

    @cached_property
    def keys(self) -> list[identity.KeyFact]:
        return identity.live_keys(self.db, self.org_id)

    @cached_property
    def service_accounts(self) -> list[identity.AccountFact]:
        return identity.service_accounts(self.db, self.org_id)

    @cached_property
    def grants(self) -> list[authz.GrantFact]:
        return authz.active_grants(self.db, self.org_id)

    @cached_property
    def chain(self) -> audit.Verification:
        return audit.verify(self.db, self.org_id, self.public_keys)

    @cached_property
    def head_seq(self) -> int:
        return head_seq(self.db, self.org_id)

    @cached_property
    def latest_checkpoint(self) -> tuple[int, datetime] | None:
        cp = checkpoints.latest(self.db, self.org_id)
        return (cp.seq, as_utc(cp.created_at)) if cp is not None else None

    @cached_property
    def sinks(self) -> list[sinks.SinkState]:
        return sinks.states(self.db, self.org_id)

    @cached_property
    def alert_kinds(self) -> dict[str, int]:
        return alerts.enabled_rule_kinds(self.db, self.org_id)

    @cached_property
    def alert_channels(self) -> list[str]:
        return alerts.rule_channels(self.db, self.org_id)

    @cached_property
    def data_key(self) -> secrets.DataKeyFact:
        return secrets.data_key(self.db, self.org_id)

    @cached_property
    def approval_policies(self) -> list[dict[str, Any]]:
        return [
            {"id": p.id, "name": p.name, "decision": p.decision, "match": dict(p.match or {})}
            for p in approvals.policies_of(self.db, self.org_id)
        ]

    @cached_property
    def agents(self) -> list[agents.AgentFact]:
        return agents.agents(self.db, self.org_id)

    @cached_property
    def webhook_endpoints(self) -> list[webhooks.EndpointFact]:
        return webhooks.endpoints(self.db, self.org_id)

    @cached_property
    def completed_reviews(self) -> list[AccessReview]:
        """Completed access review campaigns, newest first."""
        return list(
            self.db.execute(
                select(AccessReview)
                .where(AccessReview.org_id == self.org_id, AccessReview.status == "completed")
                .order_by(AccessReview.completed_at.desc())
                .limit(20)
            ).scalars()
        )
