"""Webhook request and response bodies. Secrets come in as `SecretStr` (hidden from
reprs and logs) and go out only once, at creation, for secrets Bastion generates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, SecretStr, Strict, StringConstraints

from bastion.core.schemas import Description, In, Name, Out

MAX_OVERLAP_SECONDS = 30 * 24 * 60 * 60
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
EventPattern = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=200, pattern=r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$"
    ),
]


class ProviderName(StrEnum):
    GITHUB = "github"
    SLACK = "slack"
    STRIPE = "stripe"
    LINEAR = "linear"
    STANDARD = "standard"
    GENERIC = "generic"  # X-Signature: [sha256=]hex(HMAC-SHA256(secret, body))


class EndpointIn(In):
    name: Name
    provider: Annotated[ProviderName, Strict(False)]  # JSON text, not a Python enum member
    secret: SecretStr = Field(
        min_length=8,
        max_length=1000,
        description="The provider's signing secret (Standard Webhooks: `whsec_…`). Never returned.",
    )
    tolerance_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = Field(
        default=None,
        description="Timestamp window for providers that sign one (default 300; Linear 60).",
    )
    forward_url: Url | None = Field(
        default=None, description="Forward each verified event here, signed per Standard Webhooks."
    )
    retention_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="How long verified events are kept (default: the server's)."
    )


class RotateIn(In):
    secret: SecretStr = Field(min_length=8, max_length=1000)
    overlap_seconds: Annotated[int, Field(ge=0, le=MAX_OVERLAP_SECONDS)] = Field(
        description="How long the previous secret keeps verifying (0: stops at once)."
    )


class SecretVersionOut(Out):
    version: int
    created_at: datetime
    expires_at: datetime | None = Field(description="None for the current secret.")


class EndpointOut(Out):
    id: str
    name: str
    provider: str
    url: str = Field(description="Where the provider sends deliveries: `/v1/hooks/{id}`.")
    tolerance_seconds: int | None
    forward_url: str | None
    retention_days: int
    secret_versions: list[SecretVersionOut]
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    forward_signing_secret: str | None = Field(
        default=None,
        description="Verifies forwarded events (`whsec_…`); shown once, only with forward_url.",
    )


class Accepted(Out):
    event_id: str


class WebhookEventOut(Out):
    id: str
    endpoint_id: str
    received_at: datetime
    headers: dict[str, Any]
    body: str | None = Field(description="The raw body as UTF-8 text (None if it is not UTF-8).")
    body_base64: str | None = Field(description="The raw body in base64 when it is not UTF-8.")
    body_sha256: str


class SubscriptionIn(In):
    url: Url
    events: list[EventPattern] = Field(
        min_length=1, max_length=50, description='Event types or patterns: "approval.*", "*".'
    )
    description: Description | None = None


class SubscriptionOut(Out):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="The `whsec_…` signing secret; shown once.")


class AttemptOut(Out):
    number: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


class DeliveryOut(Out):
    id: str = Field(description="The `webhook-id` header of every attempt.")
    event_type: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut]
