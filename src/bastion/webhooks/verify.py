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
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum

from bastion.core.crypto import constant_time_equals, hmac_sha256

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
#
# Each verifier takes (secrets, headers, body, now, tolerance) as plain arguments: a
# delivery object, header-name lower-casing, regexes and exceptions cost more than the
# HMAC on a small body, so the success path builds none of them.

Secret = str | bytes
Verifier = Callable[[tuple[Secret, ...], Mapping[str, str], bytes, float, "int | None"], None]

_DEFAULT_TOLERANCE = 300
_LINEAR_DEFAULT_TOLERANCE = 60
_STANDARD_PREFIX = "whsec_"
_SHA256_BYTES = 32
_SHA256_HEX = 2 * _SHA256_BYTES
_UNIX_SECONDS_DIGITS = 12
_DECODED_SECRETS = 256  # Standard Webhooks secrets kept decoded (a bounded LRU)


def _header(headers: Mapping[str, str], name: str, lower: str) -> str:
    """The value of header `name` (`lower`: the same in lower case), looked up
    case-insensitively; conflicting duplicates fail, and so does an empty value."""
    found: str | None = None
    for key, raw in headers.items():
        if key.lower() == lower:
            value = raw.strip()
            if found is None:
                found = value
            elif value != found:
                raise MalformedSignature(f"header {name} is present more than once")
    if not found:
        raise MissingHeader(name)
    return found


def _headers(headers: Mapping[str, str], names: Mapping[str, str]) -> list[str]:
    """`_header` for several names (`names`: lower case -> as shown) in one pass over the
    headers; values in the order of `names`."""
    found: dict[str, str] = {}
    for key, raw in headers.items():
        lower = key.lower()
        if lower in names:
            value = raw.strip()
            if found.setdefault(lower, value) != value:
                raise MalformedSignature(f"header {names[lower]} is present more than once")
    values = []
    for lower, name in names.items():
        got = found.get(lower)
        if not got:
            raise MissingHeader(name)
        values.append(got)
    return values


def _utf8_keys(secrets: Sequence[Secret]) -> list[bytes]:
    return [s.encode() if isinstance(s, str) else s for s in secrets]


@functools.lru_cache(maxsize=_DECODED_SECRETS)
def _standard_key(secret: Secret) -> bytes:
    """The HMAC key of a "whsec_<base64>" (or bare base64) secret, given as str or bytes;
    decoded once per secret (a bounded cache: a few endpoints' secrets, not a store)."""
    try:
        text = secret.decode("ascii") if isinstance(secret, bytes) else secret
        key = base64.b64decode(text.removeprefix(_STANDARD_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a Standard Webhooks secret is not valid base64") from None
    if not key:
        raise InvalidSecret("a Standard Webhooks secret decodes to an empty key")
    return key


def _hex_signature(value: str, header: str) -> bytes:
    """Exactly 64 hex digits (either case), as the 32 bytes they spell. (`fromhex` skips
    whitespace, so the decoded length is checked too.)"""
    if len(value) == _SHA256_HEX:
        try:
            decoded = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if len(decoded) == _SHA256_BYTES:
                return decoded
    raise MalformedSignature(f"{header} does not carry a hex SHA-256 signature")


def _unix_seconds(value: str, header: str) -> int:
    """1 to 12 ASCII digits (`isdigit` alone also takes other scripts' digits)."""
    if len(value) <= _UNIX_SECONDS_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    raise MalformedSignature(f"{header} is not a Unix timestamp in seconds")


def _require_match(keys: Sequence[bytes], message: bytes, candidates: Sequence[bytes]) -> None:
    """Pass when any key's HMAC-SHA256 of `message` equals any candidate. Every pair is
    compared (constant-time), whichever matches first."""
    matched = False
    for key in keys:
        expected = hmac_sha256(key, message)
        for candidate in candidates:
            matched |= constant_time_equals(expected, candidate)
    if not matched:
        raise SignatureMismatch("signature does not match")


def _require_utf8_match(
    secrets: Sequence[Secret], message: bytes, candidates: Sequence[bytes]
) -> None:
    """`_require_match` with the secrets used as UTF-8 keys (every provider but Standard
    Webhooks). One secret and one signature, the usual case, skip the lists and loops."""
    if len(secrets) == 1 and len(candidates) == 1:
        secret = secrets[0]
        key = secret.encode() if isinstance(secret, str) else secret
        if not constant_time_equals(hmac_sha256(key, message), candidates[0]):
            raise SignatureMismatch("signature does not match")
        return
    _require_match(_utf8_keys(secrets), message, candidates)


def _check_window(now: float, timestamp: float, tolerance: int) -> None:
    age = now - timestamp
    if age > tolerance:
        raise TimestampOutOfWindow(f"timestamp is more than {tolerance} s in the past")
    if -age > tolerance:
        raise TimestampOutOfWindow(f"timestamp is more than {tolerance} s in the future")


# --------------------------------------------------------------------------- providers

_GITHUB = ("X-Hub-Signature-256", "x-hub-signature-256")
_HMAC = ("X-Signature", "x-signature")
_SLACK = {
    "x-slack-request-timestamp": "X-Slack-Request-Timestamp",
    "x-slack-signature": "X-Slack-Signature",
}
_STRIPE = ("Stripe-Signature", "stripe-signature")
_LINEAR = ("Linear-Signature", "linear-signature")
_STANDARD = {
    "webhook-id": "webhook-id",
    "webhook-timestamp": "webhook-timestamp",
    "webhook-signature": "webhook-signature",
}
# Svix's spelling of the same three headers: its libraries accept either set, and so do we
# (the `webhook-*` set when its signature header is present, else the `svix-*` set).
_SVIX = {
    "svix-id": "svix-id",
    "svix-timestamp": "svix-timestamp",
    "svix-signature": "svix-signature",
}
_SLACK_SHOWN = tuple(_SLACK.values())


def _github(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    header = _GITHUB[0]
    value = _header(headers, *_GITHUB)
    if not value.startswith("sha256="):
        raise MalformedSignature(f"{header} must start with 'sha256='")
    signature = _hex_signature(value[7:], header)
    if len(secrets) == 1:  # the usual case, inlined: GitHub is the busiest provider
        secret = secrets[0]
        key = secret.encode() if isinstance(secret, str) else secret
        if not constant_time_equals(hmac_sha256(key, body), signature):
            raise SignatureMismatch("signature does not match")
    else:
        _require_match(_utf8_keys(secrets), body, [signature])


def _hmac_sha256(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    header = _HMAC[0]
    signature = _hex_signature(_header(headers, *_HMAC).removeprefix("sha256="), header)
    _require_utf8_match(secrets, body, [signature])


def _slack(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    ts_header, sig_header = _SLACK_SHOWN
    raw_ts, value = _headers(headers, _SLACK)
    timestamp = _unix_seconds(raw_ts, ts_header)
    if not value.startswith("v0="):
        raise MalformedSignature(f"{sig_header} must start with 'v0='")
    signature = _hex_signature(value[3:], sig_header)
    signed = f"v0:{raw_ts}:".encode() + body
    _require_utf8_match(secrets, signed, [signature])
    _check_window(now, timestamp, _DEFAULT_TOLERANCE if tolerance is None else tolerance)


def _stripe(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    header = _STRIPE[0]
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in _header(headers, *_STRIPE).split(","):
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
    signed = f"{timestamps[0]}.".encode() + body
    _require_utf8_match(secrets, signed, signatures)
    _check_window(now, timestamp, _DEFAULT_TOLERANCE if tolerance is None else tolerance)


def _linear(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    header = _LINEAR[0]
    signature = _hex_signature(_header(headers, *_LINEAR), header)
    _require_utf8_match(secrets, body, [signature])
    # Parsed only after the body is authenticated.
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedSignature("body is not JSON, so webhookTimestamp is missing") from None
    millis = document.get("webhookTimestamp") if isinstance(document, dict) else None
    if isinstance(millis, bool) or not isinstance(millis, int) or not 0 <= millis < 10**15:
        raise MalformedSignature("body has no webhookTimestamp in milliseconds")
    window = _LINEAR_DEFAULT_TOLERANCE if tolerance is None else tolerance
    _check_window(now, millis / 1000, window)


def _standard(
    secrets: tuple[Secret, ...],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int | None,
) -> None:
    names = _STANDARD
    if not any(k.lower() == "webhook-signature" for k in headers) and any(
        k.lower() == "svix-signature" for k in headers
    ):
        names = _SVIX
    _, ts_header, sig_header = names.values()
    msg_id, raw_ts, value = _headers(headers, names)
    timestamp = _unix_seconds(raw_ts, ts_header)
    signatures: list[bytes] = []
    for entry in value.split():
        version, sep, encoded = entry.partition(",")
        if not sep:
            raise MalformedSignature(f"{sig_header} has an entry without a version")
        if version != "v1":
            continue  # other schemes (e.g. v1a, asymmetric) are not ours to check
        try:
            decoded = binascii.a2b_base64(encoded, strict_mode=True)
        except ValueError:  # binascii.Error is one; so is non-ASCII text
            raise MalformedSignature(f"{sig_header} has a v1 entry that is not base64") from None
        if len(decoded) != _SHA256_BYTES:
            raise MalformedSignature(f"{sig_header} has a v1 entry of the wrong length")
        signatures.append(decoded)
    if not signatures:
        raise MalformedSignature(f"{sig_header} carries no v1 signature")
    signed = f"{msg_id}.{raw_ts}.".encode() + body
    if len(secrets) == 1 and len(signatures) == 1:  # the usual case, without the loops
        if not constant_time_equals(hmac_sha256(_standard_key(secrets[0]), signed), signatures[0]):
            raise SignatureMismatch("signature does not match")
    else:
        _require_match([_standard_key(s) for s in secrets], signed, signatures)
    _check_window(now, timestamp, _DEFAULT_TOLERANCE if tolerance is None else tolerance)


_VERIFIERS: dict[Provider, Verifier] = {
    Provider.GITHUB: _github,
    Provider.SLACK: _slack,
    Provider.STRIPE: _stripe,
    Provider.LINEAR: _linear,
    Provider.STANDARD: _standard,
    Provider.HMAC_SHA256: _hmac_sha256,
}
_BY_NAME: dict[str, Verifier] = {p.value: f for p, f in _VERIFIERS.items()}


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
    # The common case first: one secret, as text.
    secrets = (secret,) if type(secret) is str and secret else _secrets(secret)
    if tolerance is not None and tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if type(body) is not bytes:
        if not isinstance(body, (bytes, bytearray, memoryview)):  # a tuple: faster
            raise TypeError("body must be the raw request bytes")
        body = bytes(body)
    verifier(secrets, headers, body, time.time() if now is None else _now(now), tolerance)


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
