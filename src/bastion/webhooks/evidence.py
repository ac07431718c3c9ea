"""The webhooks domain's read-only facts for compliance evidence
(`bastion.compliance`): each inbound endpoint's provider, replay window and whether its
signing secret is still in force. Never a secret."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.core.clock import as_utc, utcnow
from bastion.webhooks.models import WebhookEndpoint, WebhookEndpointSecret

DEFAULT_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class EndpointFact:
    id: str
    name: str
    provider: str
    tolerance_seconds: int
    live_secrets: int  # signing secrets not expired
    forwards: bool
    retention_days: int


def endpoints(db: Session, org_id: str) -> list[EndpointFact]:
    now = utcnow()
    found = list(
        db.execute(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.org_id == org_id)
            .order_by(WebhookEndpoint.id)
        ).scalars()
    )
    live: dict[str, int] = {}
    if found:
        for endpoint_id, expires in db.execute(
            select(WebhookEndpointSecret.endpoint_id, WebhookEndpointSecret.expires_at).where(
                WebhookEndpointSecret.endpoint_id.in_([e.id for e in found])
            )
        ):
            if expires is None or as_utc(expires) > now:
                live[endpoint_id] = live.get(endpoint_id, 0) + 1
    return [
        EndpointFact(
            e.id,
            e.name,
            e.provider,
            e.tolerance_seconds if e.tolerance_seconds is not None else DEFAULT_TOLERANCE_SECONDS,
            live.get(e.id, 0),
            e.forward_url is not None,
            e.retention_days,
        )
        for e in found
    ]
