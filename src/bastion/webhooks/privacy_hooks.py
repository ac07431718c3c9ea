"""Webhooks' side of retention (`bastion.privacy.retention`), registered on import:
inbound events and finished outbound deliveries older than the organisation's
`webhook_events_days` are purged (an endpoint's own shorter retention still applies)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bastion.core.db import org_scoped
from bastion.privacy import retention
from bastion.webhooks.models import WebhookDelivery, WebhookEvent


def _inbound(db: Session, org_id: str, cutoff: datetime) -> int:
    done = db.execute(
        delete(WebhookEvent).where(
            WebhookEvent.org_id == org_id, WebhookEvent.received_at < cutoff
        ),
        execution_options=org_scoped(org_id),
    )
    return int(getattr(done, "rowcount", 0) or 0)


def _outbound(db: Session, org_id: str, cutoff: datetime) -> int:
    done = db.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.org_id == org_id,
            WebhookDelivery.created_at < cutoff,
            WebhookDelivery.status != "pending",  # still to send: kept until it is done
        ),
        execution_options=org_scoped(org_id),
    )
    return int(getattr(done, "rowcount", 0) or 0)


retention.register("webhook_events", "webhook_events", _inbound)
retention.register("webhook_events", "webhook_deliveries", _outbound)
