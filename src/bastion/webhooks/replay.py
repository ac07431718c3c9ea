"""Replaying a failed outbound delivery: queued again, as it was (same id, body and
signature inputs: receivers deduplicate on the `webhook-id`), for one more attempt by
the delivery worker; its earlier attempts stay in the log."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.webhooks.models import WebhookDelivery, WebhookSubscription
from bastion.webhooks.outbound import FAILED, PENDING


def replay_delivery(
    db: Session, principal: Principal, org_id: str, sub_id: str, delivery_id: str
) -> WebhookDelivery:
    """Queue a failed delivery of the subscription again (409 unless it failed);
    audited in the same transaction."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    stmt = (
        select(WebhookDelivery)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.org_id == org_id,
            WebhookSubscription.id == sub_id,
            WebhookSubscription.org_id == org_id,
        )
        .with_for_update()
    )
    delivery = db.execute(stmt).scalar_one_or_none()
    if delivery is None:
        raise NotFound("delivery not found")
    if delivery.status != FAILED:
        raise Conflict(f"only a failed delivery can be replayed; this one is {delivery.status}")
    delivery.status, delivery.next_attempt_at, delivery.leased_until = PENDING, utcnow(), None
    audit.record(
        db,
        type=EventType.WEBHOOK_DELIVERY_REPLAYED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_delivery", delivery.id),
        metadata={"subscription_id": sub_id, "event_type": delivery.event_type,
                  "attempts": delivery.attempts},
    )  # fmt: skip
    return delivery
