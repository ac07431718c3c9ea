"""Webhook signature verification (inbound) and Standard Webhooks signing (outbound)."""

from bastion.webhooks.verify import (
    InvalidSecret,
    MalformedSignature,
    MissingHeader,
    Provider,
    SignatureMismatch,
    TimestampOutOfWindow,
    UnknownProvider,
    WebhookVerificationError,
    sign_standard,
    verify,
)

__all__ = [
    "InvalidSecret",
    "MalformedSignature",
    "MissingHeader",
    "Provider",
    "SignatureMismatch",
    "TimestampOutOfWindow",
    "UnknownProvider",
    "WebhookVerificationError",
    "sign_standard",
    "verify",
]
