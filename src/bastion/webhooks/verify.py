"""Verify signatures on inbound webhooks: GitHub, Slack, Stripe, Linear, Standard Webhooks, HMAC.

`verify` returns None when a delivery is authentic and fresh, and raises a subclass of
`WebhookVerificationError` otherwise. It fails closed: an unknown provider, no usable secret,
a missing or malformed header all raise. Signatures are always checked before timestamps, so
`TimestampOutOfWindow` is only ever reported for an authentic (replayed or delayed) delivery.
Every comparison is constant-time, and no error message contains a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bastion.core.crypto import constant_time_equals, hmac_sha256, hmac_sha256_hex

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


class Provider(StrEnum):
    """The webhook signature schemes `verify` understands."""

    GITHUB = "github"
    SLACK = "slack"
    STRIPE = "stripe"
    LINEAR = "linear"
    STANDARD = "standard"  # https://www.standardwebhooks.com
    HMAC_SHA256 = "hmac_sha256"  # generic: X-Signature = [sha256=]hex(HMAC-SHA256(body))


# --------------------------------------------------------------------------- errors


class WebhookVerificationError(Exception):
    """A delivery failed verification. `reason` is a short, stable code for logs and metrics."""

    reason: str = "verification_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingHeader(WebhookVerificationError):
    """A required header is absent or empty; `header` names it."""

    reason = "missing_header"

    def __init__(self, header: str) -> None:
        super().__init__(f"missing required header {header}")
        self.header = header


class MalformedSignature(WebhookVerificationError):
    """A signature or timestamp header (or signed timestamp field) cannot be parsed."""

    reason = "malformed_signature"


class TimestampOutOfWindow(WebhookVerificationError):
    """An authentic delivery whose timestamp is too old or too far in the future."""

    reason = "timestamp_out_of_window"


class SignatureMismatch(WebhookVerificationError):
    """No configured secret produces any of the presented signatures."""

    reason = "signature_mismatch"


class UnknownProvider(WebhookVerificationError):
    """The provider name is not one of `Provider`."""

    reason = "unknown_provider"


class InvalidSecret(WebhookVerificationError):
    """No secret was configured, or a configured secret is empty or cannot be decoded."""

    reason = "invalid_secret"


# --------------------------------------------------------------------------- helpers

Secret = str | bytes

_DEFAULT_TOLERANCE = 300
_LINEAR_DEFAULT_TOLERANCE = 60
_STANDARD_PREFIX = "whsec_"
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_SHA256_BYTES = 32


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~2 us to build per delivery
class _Delivery:
    secrets: tuple[Secret, ...]
    headers: Mapping[str, str]
    body: bytes
    now: float
    tolerance: int | None

    def header(self, name: str) -> str:
        """The header's value, looked up case-insensitively; conflicting duplicates fail."""
        wanted = name.lower()
        values = {value.strip() for key, value in self.headers.items() if key.lower() == wanted}
        if len(values) > 1:
            raise MalformedSignature(f"header {name} is present more than once")
        value = values.pop() if values else ""
        if not value:
            raise MissingHeader(name)
        return value

    def check_window(self, timestamp: float, default_tolerance: int) -> None:
        tolerance = default_tolerance if self.tolerance is None else self.tolerance
        age = self.now - timestamp
        if age > tolerance:
            raise TimestampOutOfWindow(f"timestamp is more than {tolerance} s in the past")
        if -age > tolerance:
            raise TimestampOutOfWindow(f"timestamp is more than {tolerance} s in the future")


def _utf8_keys(secrets: Sequence[Secret]) -> list[bytes]:
    return [s.encode() if isinstance(s, str) else s for s in secrets]


def _standard_key(secret: Secret) -> bytes:
    """The HMAC key of a "whsec_<base64>" (or bare base64) secret, given as str or bytes."""
    try:
        text = secret.decode("ascii") if isinstance(secret, bytes) else secret
        key = base64.b64decode(text.removeprefix(_STANDARD_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a Standard Webhooks secret is not valid base64") from None
    if not key:
        raise InvalidSecret("a Standard Webhooks secret decodes to an empty key")
    return key


def _hex_signature(value: str, header: str) -> str:
    if not _HEX_SHA256.fullmatch(value):
        raise MalformedSignature(f"{header} does not carry a hex SHA-256 signature")
    return value.lower()


def _unix_seconds(value: str, header: str) -> int:
    if not _UNIX_SECONDS.fullmatch(value):
        raise MalformedSignature(f"{header} is not a Unix timestamp in seconds")
    return int(value)


def _require_hex_match(keys: Sequence[bytes], message: bytes, candidates: Sequence[str]) -> None:
    """Pass when any key's hex HMAC equals any candidate (lower-case hex)."""
    matched = False
    for key in keys:
        expected = hmac_sha256_hex(key, message)
        for candidate in candidates:
            matched |= constant_time_equals(expected, candidate)
    if not matched:
        raise SignatureMismatch("signature does not match")


# --------------------------------------------------------------------------- providers


def _github(d: _Delivery) -> None:
    header = "X-Hub-Signature-256"
    value = d.header(header)
    if not value.startswith("sha256="):
        raise MalformedSignature(f"{header} must start with 'sha256='")
    signature = _hex_signature(value.removeprefix("sha256="), header)
    _require_hex_match(_utf8_keys(d.secrets), d.body, [signature])


def _hmac_sha256(d: _Delivery) -> None:
    header = "X-Signature"
    signature = _hex_signature(d.header(header).removeprefix("sha256="), header)
    _require_hex_match(_utf8_keys(d.secrets), d.body, [signature])


def _slack(d: _Delivery) -> None:
    ts_header, sig_header = "X-Slack-Request-Timestamp", "X-Slack-Signature"
    raw_ts = d.header(ts_header)
    timestamp = _unix_seconds(raw_ts, ts_header)
    value = d.header(sig_header)
    if not value.startswith("v0="):
        raise MalformedSignature(f"{sig_header} must start with 'v0='")
    signature = _hex_signature(value.removeprefix("v0="), sig_header)
    signed = f"v0:{raw_ts}:".encode() + d.body
    _require_hex_match(_utf8_keys(d.secrets), signed, [signature])
    d.check_window(timestamp, _DEFAULT_TOLERANCE)


def _stripe(d: _Delivery) -> None:
    header = "Stripe-Signature"
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in d.header(header).split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedSignature(f"{header} has an element without '='")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(_hex_signature(value, header))
        # v0 and any future schemes are ignored.
    if len(timestamps) != 1:
        raise MalformedSignature(f"{header} must carry exactly one t= timestamp")
    timestamp = _unix_seconds(timestamps[0], header)
    if not signatures:
        raise MalformedSignature(f"{header} carries no v1 signature")
    signed = f"{timestamps[0]}.".encode() + d.body
    _require_hex_match(_utf8_keys(d.secrets), signed, signatures)
    d.check_window(timestamp, _DEFAULT_TOLERANCE)


def _linear(d: _Delivery) -> None:
    header = "Linear-Signature"
    signature = _hex_signature(d.header(header), header)
    _require_hex_match(_utf8_keys(d.secrets), d.body, [signature])
    # Parsed only after the body is authenticated.
    try:
        document = json.loads(d.body)
    except (ValueError, RecursionError):
        raise MalformedSignature("body is not JSON, so webhookTimestamp is missing") from None
    millis = document.get("webhookTimestamp") if isinstance(document, dict) else None
    if isinstance(millis, bool) or not isinstance(millis, int):
        raise MalformedSignature("body has no integer webhookTimestamp")
    d.check_window(millis / 1000, _LINEAR_DEFAULT_TOLERANCE)


def _standard(d: _Delivery) -> None:
    id_header, ts_header, sig_header = "webhook-id", "webhook-timestamp", "webhook-signature"
    msg_id = d.header(id_header)
    raw_ts = d.header(ts_header)
    timestamp = _unix_seconds(raw_ts, ts_header)
    signatures: list[bytes] = []
    for entry in d.header(sig_header).split():
        version, sep, encoded = entry.partition(",")
        if not sep:
            raise MalformedSignature(f"{sig_header} has an entry without a version")
        if version != "v1":
            continue  # other schemes (e.g. v1a, asymmetric) are not ours to check
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedSignature(f"{sig_header} has a v1 entry that is not base64") from None
        if len(decoded) != _SHA256_BYTES:
            raise MalformedSignature(f"{sig_header} has a v1 entry of the wrong length")
        signatures.append(decoded)
    if not signatures:
        raise MalformedSignature(f"{sig_header} carries no v1 signature")
    signed = f"{msg_id}.{raw_ts}.".encode() + d.body
    matched = False
    for key in [_standard_key(s) for s in d.secrets]:
        expected = hmac_sha256(key, signed)
        for candidate in signatures:
            matched |= constant_time_equals(expected, candidate)
    if not matched:
        raise SignatureMismatch("signature does not match")
    d.check_window(timestamp, _DEFAULT_TOLERANCE)


_VERIFIERS: dict[Provider, Callable[[_Delivery], None]] = {
    Provider.GITHUB: _github,
    Provider.SLACK: _slack,
    Provider.STRIPE: _stripe,
    Provider.LINEAR: _linear,
    Provider.STANDARD: _standard,
    Provider.HMAC_SHA256: _hmac_sha256,
}
_BY_NAME: dict[str, Callable[[_Delivery], None]] = {p.value: f for p, f in _VERIFIERS.items()}


# --------------------------------------------------------------------------- public API


def _provider(provider: Provider | str) -> Provider:
    try:
        return Provider(provider)
    except ValueError:
        shown = repr(provider)[:40]
        raise UnknownProvider(f"unknown webhook provider {shown}") from None


def _secrets(secret: Secret | Sequence[Secret]) -> tuple[Secret, ...]:
    secrets: tuple[Secret, ...] = (secret,) if isinstance(secret, str | bytes) else tuple(secret)
    if not secrets:
        raise InvalidSecret("no webhook secret is configured")
    for s in secrets:
        if not isinstance(s, str | bytes):
            raise InvalidSecret("webhook secrets must be str or bytes")
        if not s:
            raise InvalidSecret("a configured webhook secret is empty")
    return secrets


def _now(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        return now.timestamp()
    value = float(now)
    if not math.isfinite(value):
        raise ValueError("now must be a finite Unix timestamp")
    return value


def verify(
    provider: Provider | str,
    secret: Secret | Sequence[Secret],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | float | None = None,
    tolerance: int | None = None,
) -> None:
    """Verify one webhook delivery; return None if authentic and fresh, raise otherwise.

    `secret` may be a list of secrets during rotation: any one verifying is success. `headers`
    are looked up case-insensitively. `body` must be the raw request body, byte for byte.
    `now` (default: the current time) is a Unix timestamp or an aware datetime; `tolerance`
    overrides the provider's window in seconds (300, or 60 for Linear) and is ignored by
    providers without a timestamp (github, hmac_sha256).

    Raises a `WebhookVerificationError` subclass: `UnknownProvider`, `InvalidSecret`,
    `MissingHeader`, `MalformedSignature`, `SignatureMismatch` or `TimestampOutOfWindow`.
    Raises `ValueError` for a naive or non-finite `now` or a negative `tolerance`.
    """
    verifier = _BY_NAME.get(provider) if isinstance(provider, str) else None  # fast path
    if verifier is None:
        verifier = _VERIFIERS[_provider(provider)]
    secrets = _secrets(secret)
    if tolerance is not None and tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if not isinstance(body, (bytes, bytearray, memoryview)):  # a tuple: faster than a union
        raise TypeError("body must be the raw request bytes")
    verifier(_Delivery(secrets, headers, bytes(body), _now(now), tolerance))


def sign_standard(secret: Secret, msg_id: str, timestamp: int, body: bytes) -> str:
    """Sign an outbound Standard Webhooks message; return the "v1,<base64>" signature entry.

    `secret` is "whsec_<base64>" or bare base64, as str or bytes. The result goes
    in the `webhook-signature` header, next to `webhook-id: msg_id` and
    `webhook-timestamp: timestamp`.
    """
    if not isinstance(secret, str | bytes) or not secret:
        raise InvalidSecret("a Standard Webhooks secret must be a non-empty str or bytes")
    key = _standard_key(secret)
    digest = hmac_sha256(key, f"{msg_id}.{int(timestamp)}.".encode() + bytes(body))
    return "v1," + base64.b64encode(digest).decode("ascii")
