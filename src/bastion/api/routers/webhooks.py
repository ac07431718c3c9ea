from __future__ import annotations

import base64
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from bastion.api.context import RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Ctx, Cursor, Limit, State
from bastion.api.state import AppState
from bastion.core.schemas import ListOf
from bastion.webhooks import gateway, replay
from bastion.webhooks import service as webhooks
from bastion.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
    WebhookEvent,
    WebhookSubscription,
)
from bastion.webhooks.schemas import (
    Accepted,
    AttemptOut,
    DeliveryOut,
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    RotateIn,
    SecretVersionOut,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
    WebhookEventOut,
)

endpoints_router = APIRouter(prefix="/v1/orgs/{org}/webhook-endpoints", tags=["webhooks"])
subscriptions_router = APIRouter(prefix="/v1/orgs/{org}/webhook-subscriptions", tags=["webhooks"])
hooks_router = APIRouter(prefix="/v1/hooks", tags=["webhooks"])


def _endpoint_out(e: WebhookEndpoint, secrets: list[WebhookEndpointSecret]) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        name=e.name,
        provider=e.provider,
        url=webhooks.hook_path(e.id),
        tolerance_seconds=e.tolerance_seconds,
        forward_url=e.forward_url,
        retention_days=e.retention_days,
        secret_versions=[SecretVersionOut.model_validate(s) for s in secrets],
        created_at=e.created_at,
        updated_at=e.updated_at,
    )


def _one(db: DB, e: WebhookEndpoint) -> EndpointOut:
    return _endpoint_out(e, webhooks.secret_versions(db, [e.id])[e.id])


@endpoints_router.post("", status_code=201, summary="Create an inbound webhook endpoint")
def create_endpoint(
    org: str, body: EndpointIn, principal: Caller, db: DB, state: State
) -> EndpointCreated:
    spec = webhooks.EndpointSpec(
        name=body.name,
        provider=body.provider.value,
        secret=body.secret.get_secret_value(),
        tolerance_seconds=body.tolerance_seconds,
        forward_url=body.forward_url,
        retention_days=body.retention_days,
    )
    endpoint, forward_secret = webhooks.create_endpoint(
        db,
        state.vault,
        principal,
        org,
        spec,
        allow=state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
        default_retention_days=state.settings.webhook_retention_days,
    )
    out = _one(db, endpoint)
    return EndpointCreated(**out.model_dump(), forward_signing_secret=forward_secret)


@endpoints_router.get("", summary="Inbound webhook endpoints, newest first")
def list_endpoints(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[EndpointOut]:
    page = webhooks.list_endpoints(db, principal, org, limit=limit, cursor=cursor)
    secrets = webhooks.secret_versions(db, [e.id for e in page.data])
    return ListOf[EndpointOut](
        data=[_endpoint_out(e, secrets[e.id]) for e in page.data], next_cursor=page.next_cursor
    )


@endpoints_router.get("/{endpoint}", summary="One inbound webhook endpoint (never its secret)")
def get_endpoint(org: str, endpoint: str, principal: Caller, db: DB) -> EndpointOut:
    return _one(db, webhooks.get_endpoint(db, principal, org, endpoint))


@endpoints_router.delete("/{endpoint}", status_code=204, summary="Delete an endpoint")
def delete_endpoint(org: str, endpoint: str, principal: Caller, db: DB) -> Response:
    webhooks.delete_endpoint(db, principal, org, endpoint)
    return Response(status_code=204)


@endpoints_router.post(
    "/{endpoint}/rotate-secret",
    summary="Replace the secret; the previous one verifies until the overlap ends",
)
def rotate_secret(
    org: str, endpoint: str, body: RotateIn, principal: Caller, db: DB, state: State
) -> EndpointOut:
    rotated = webhooks.rotate_secret(
        db,
        state.vault,
        principal,
        org,
        endpoint,
        body.secret.get_secret_value(),
        body.overlap_seconds,
    )
    return _one(db, rotated)


def _event_out(e: WebhookEvent) -> WebhookEventOut:
    try:
        text: str | None = e.body.decode("utf-8")
        raw = None
    except UnicodeDecodeError:
        text, raw = None, base64.b64encode(e.body).decode("ascii")
    return WebhookEventOut(
        id=e.id,
        endpoint_id=e.endpoint_id,
        received_at=e.received_at,
        headers=e.headers,
        body=text,
        body_base64=raw,
        body_sha256=e.body_sha256,
    )


@endpoints_router.get("/{endpoint}/events", summary="Verified events received, newest first")
def list_events(
    org: str,
    endpoint: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[WebhookEventOut]:
    page = webhooks.list_events(db, principal, org, endpoint, limit=limit, cursor=cursor)
    return ListOf[WebhookEventOut](
        data=[_event_out(e) for e in page.data], next_cursor=page.next_cursor
    )


@hooks_router.post(
    "/{endpoint}",
    status_code=202,
    summary="Receive a provider's delivery (its signature is the credential)",
    openapi_extra={"security": []},
)
async def receive(endpoint: str, request: Request, ctx: Ctx, state: State) -> Accepted:
    return await accept_delivery(state, ctx, endpoint, request.headers, await request.body())


async def accept_delivery(
    state: AppState,
    ctx: RequestContext,
    endpoint: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Accepted:
    """The answer of `POST /v1/hooks/{endpoint}` (also served by `bastion.api.fast`):
    verified on the request's reader; stored and audited by the request's unit."""
    db = ctx.reader
    received = await state.read(
        lambda: gateway.receive(db, state.vault, endpoint, headers, body, ctx.actor)
    )
    ctx.unit_order = received.org_id  # its unit locks the organisation's chain head
    return Accepted(event_id=received.event_id)


# --- outbound subscriptions -----------------------------------------------------------


def _subscription_out(s: WebhookSubscription) -> SubscriptionOut:
    return SubscriptionOut.model_validate(s)


@subscriptions_router.post("", status_code=201, summary="Send Bastion's events to a URL")
def create_subscription(
    org: str, body: SubscriptionIn, principal: Caller, db: DB, state: State
) -> SubscriptionCreated:
    sub, secret = webhooks.create_subscription(
        db,
        state.vault,
        principal,
        org,
        url=body.url,
        events=body.events,
        description=body.description,
        allow=state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
    )
    return SubscriptionCreated(**_subscription_out(sub).model_dump(), secret=secret)


@subscriptions_router.get("", summary="Outbound webhook subscriptions, newest first")
def list_subscriptions(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[SubscriptionOut]:
    page = webhooks.list_subscriptions(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[SubscriptionOut](
        data=[_subscription_out(s) for s in page.data], next_cursor=page.next_cursor
    )


@subscriptions_router.get("/{subscription}", summary="One subscription (never its secret)")
def get_subscription(org: str, subscription: str, principal: Caller, db: DB) -> SubscriptionOut:
    return _subscription_out(webhooks.get_subscription(db, principal, org, subscription))


@subscriptions_router.delete("/{subscription}", status_code=204, summary="Delete a subscription")
def delete_subscription(org: str, subscription: str, principal: Caller, db: DB) -> Response:
    webhooks.delete_subscription(db, principal, org, subscription)
    return Response(status_code=204)


@subscriptions_router.post(
    "/{subscription}/enable", summary="Re-enable a subscription (e.g. after auto-disable)"
)
def enable_subscription(org: str, subscription: str, principal: Caller, db: DB) -> SubscriptionOut:
    return _subscription_out(webhooks.enable_subscription(db, principal, org, subscription))


def _delivery_out(d: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event_type=d.event_type,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        attempt_log=[AttemptOut.model_validate(a) for a in attempts],
    )


@subscriptions_router.get(
    "/{subscription}/deliveries", summary="The delivery log, newest first, with each attempt"
)
def list_deliveries(
    org: str,
    subscription: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[DeliveryOut]:
    page, attempts = webhooks.list_deliveries(
        db, principal, org, subscription, limit=limit, cursor=cursor
    )
    return ListOf[DeliveryOut](
        data=[_delivery_out(d, attempts[d.id]) for d in page.data], next_cursor=page.next_cursor
    )


@subscriptions_router.post(
    "/{subscription}/deliveries/{delivery}/replay",
    summary="Queue a failed delivery again (409 unless it failed; audited)",
)
def replay_delivery(
    org: str, subscription: str, delivery: str, principal: Caller, db: DB
) -> DeliveryOut:
    replayed = replay.replay_delivery(db, principal, org, subscription, delivery)
    db.flush()
    stmt = select(WebhookAttempt).where(WebhookAttempt.delivery_id == replayed.id)
    return _delivery_out(replayed, list(db.execute(stmt.order_by(WebhookAttempt.number)).scalars()))
