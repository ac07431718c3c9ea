"""Webhook signature verification.

Expected signatures are computed here with `hmac`/`hashlib`/`base64` directly (or taken from
published test vectors), never with the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bastion.webhooks import (
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

NOW = 1_700_000_000
MSG_ID = "msg_2bTq5Tm0r8Xy2oQ4w1d9"


# --------------------------------------------------------------------------- independent signers


def _hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _b64(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def secret_for(provider: Provider, n: int = 1) -> str:
    if provider is Provider.STANDARD:
        return "whsec_" + base64.b64encode(f"standard-test-key-{n}-0123456789".encode()).decode()
    return f"test-secret-{n}-for-{provider}"


def _standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def body_for(provider: Provider, ts: int) -> bytes:
    if provider is Provider.LINEAR:
        return json.dumps({"action": "ping", "webhookTimestamp": ts * 1000}).encode()
    return b'{"action": "ping", "id": 42}'


def sign(provider: Provider, secret: str, body: bytes, ts: int) -> dict[str, str]:
    """Headers a genuine sender would attach, computed without the module under test."""
    key = secret.encode()
    match provider:
        case Provider.GITHUB:
            return {"X-Hub-Signature-256": "sha256=" + _hex(key, body)}
        case Provider.HMAC_SHA256:
            return {"X-Signature": "sha256=" + _hex(key, body)}
        case Provider.SLACK:
            return {
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": "v0=" + _hex(key, f"v0:{ts}:".encode() + body),
            }
        case Provider.STRIPE:
            return {"Stripe-Signature": f"t={ts},v1={_hex(key, f'{ts}.'.encode() + body)}"}
        case Provider.LINEAR:
            return {"Linear-Signature": _hex(key, body)}
        case Provider.STANDARD:
            signed = f"{MSG_ID}.{ts}.".encode() + body
            return {
                "webhook-id": MSG_ID,
                "webhook-timestamp": str(ts),
                "webhook-signature": "v1," + _b64(_standard_key(secret), signed),
            }
    raise AssertionError(provider)


def delivery(provider: Provider, ts: int = NOW, n: int = 1) -> tuple[dict[str, str], bytes]:
    body = body_for(provider, ts)
    return sign(provider, secret_for(provider, n), body, ts), body


ALL = list(Provider)
TIMED = [Provider.SLACK, Provider.STRIPE, Provider.LINEAR, Provider.STANDARD]
WINDOW = {Provider.SLACK: 300, Provider.STRIPE: 300, Provider.LINEAR: 60, Provider.STANDARD: 300}

REQUIRED_HEADERS = [
    (Provider.GITHUB, "X-Hub-Signature-256"),
    (Provider.HMAC_SHA256, "X-Signature"),
    (Provider.SLACK, "X-Slack-Request-Timestamp"),
    (Provider.SLACK, "X-Slack-Signature"),
    (Provider.STRIPE, "Stripe-Signature"),
    (Provider.LINEAR, "Linear-Signature"),
    (Provider.STANDARD, "webhook-id"),
    (Provider.STANDARD, "webhook-timestamp"),
    (Provider.STANDARD, "webhook-signature"),
]

_HEX = "ab" * 32
_B64 = base64.b64encode(b"\x01" * 32).decode()
MALFORMED = [
    (Provider.GITHUB, "X-Hub-Signature-256", _HEX),  # no sha256= prefix
    (Provider.GITHUB, "X-Hub-Signature-256", "sha1=" + "ab" * 20),
    (Provider.GITHUB, "X-Hub-Signature-256", "sha256=" + "zz" * 32),
    (Provider.GITHUB, "X-Hub-Signature-256", "sha256=" + _HEX[:-2]),
    (Provider.HMAC_SHA256, "X-Signature", "not-hex"),
    (Provider.HMAC_SHA256, "X-Signature", "sha512=" + _HEX),
    (Provider.SLACK, "X-Slack-Signature", _HEX),  # no v0= prefix
    (Provider.SLACK, "X-Slack-Signature", "v0=" + "g" * 64),
    (Provider.SLACK, "X-Slack-Request-Timestamp", "yesterday"),
    (Provider.SLACK, "X-Slack-Request-Timestamp", "-1700000000"),
    (Provider.SLACK, "X-Slack-Request-Timestamp", "1700000000.5"),
    (Provider.STRIPE, "Stripe-Signature", "garbage"),
    (Provider.STRIPE, "Stripe-Signature", f"v1={_HEX}"),  # no timestamp
    (Provider.STRIPE, "Stripe-Signature", f"t={NOW}"),  # no v1
    (Provider.STRIPE, "Stripe-Signature", f"t={NOW},v0={_HEX}"),  # only v0
    (Provider.STRIPE, "Stripe-Signature", f"t={NOW},t={NOW},v1={_HEX}"),
    (Provider.STRIPE, "Stripe-Signature", f"t=soon,v1={_HEX}"),
    (Provider.STRIPE, "Stripe-Signature", f"t={NOW},v1=xyz"),
    (Provider.LINEAR, "Linear-Signature", "sha256=" + _HEX),
    (Provider.LINEAR, "Linear-Signature", _HEX + "00"),
    (Provider.STANDARD, "webhook-signature", _B64),  # no version
    (Provider.STANDARD, "webhook-signature", "v1,***not-base64***"),
    (Provider.STANDARD, "webhook-signature", "v1," + base64.b64encode(b"short").decode()),
    (Provider.STANDARD, "webhook-signature", f"v1a,{_B64}"),  # only other versions
    (Provider.STANDARD, "webhook-timestamp", "12:00"),
]


def _replace(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    return {k: (value if k.lower() == name.lower() else v) for k, v in headers.items()}


# --------------------------------------------------------------------------- published vectors


def test_standard_webhooks_reference_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, ts, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    assert sign_standard(secret, msg_id, ts, body) == expected
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": expected}
    verify("standard", secret, headers, body, now=ts)
    with pytest.raises(SignatureMismatch):
        verify("standard", secret, headers, body + b" ", now=ts)


def test_github_documented_example() -> None:
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        )
    }
    verify(Provider.GITHUB, "It's a Secret to Everybody", headers, b"Hello, World!")
    with pytest.raises(SignatureMismatch):
        verify(Provider.GITHUB, "It's a secret to everybody", headers, b"Hello, World!")


# --------------------------------------------------------------------------- every provider


@pytest.mark.parametrize("provider", ALL)
def test_genuine_delivery_passes(provider: Provider) -> None:
    headers, body = delivery(provider)
    verify(provider, secret_for(provider), headers, body, now=NOW)
    verify(str(provider), secret_for(provider), headers, body, now=NOW)
    verify(provider, secret_for(provider).encode(), headers, body, now=float(NOW))


@pytest.mark.parametrize("provider", ALL)
def test_wrong_secret_fails(provider: Provider) -> None:
    headers, body = delivery(provider)
    with pytest.raises(SignatureMismatch) as caught:
        verify(provider, secret_for(provider, n=2), headers, body, now=NOW)
    assert caught.value.reason == "signature_mismatch"


@pytest.mark.parametrize("provider", ALL)
def test_tampered_body_fails(provider: Provider) -> None:
    headers, body = delivery(provider)
    tampered = body.replace(b'"ping"', b'"pong"')
    assert tampered != body
    with pytest.raises(SignatureMismatch):
        verify(provider, secret_for(provider), headers, tampered, now=NOW)


@pytest.mark.parametrize(("provider", "header"), REQUIRED_HEADERS)
def test_missing_header_fails(provider: Provider, header: str) -> None:
    headers, body = delivery(provider)
    assert header in headers
    without = {k: v for k, v in headers.items() if k != header}
    with pytest.raises(MissingHeader) as caught:
        verify(provider, secret_for(provider), without, body, now=NOW)
    assert caught.value.header == header
    assert caught.value.reason == "missing_header"
    assert header in str(caught.value)

    with pytest.raises(MissingHeader):
        verify(provider, secret_for(provider), _replace(headers, header, "  "), body, now=NOW)


@pytest.mark.parametrize(("provider", "header", "value"), MALFORMED)
def test_malformed_header_fails(provider: Provider, header: str, value: str) -> None:
    headers, body = delivery(provider)
    with pytest.raises(MalformedSignature) as caught:
        verify(provider, secret_for(provider), _replace(headers, header, value), body, now=NOW)
    assert caught.value.reason == "malformed_signature"


@pytest.mark.parametrize("provider", TIMED)
def test_stale_timestamp_fails(provider: Provider) -> None:
    window = WINDOW[provider]
    headers, body = delivery(provider, ts=NOW - window)
    verify(provider, secret_for(provider), headers, body, now=NOW)  # edge of the window

    headers, body = delivery(provider, ts=NOW - window - 1)
    with pytest.raises(TimestampOutOfWindow) as caught:
        verify(provider, secret_for(provider), headers, body, now=NOW)
    assert caught.value.reason == "timestamp_out_of_window"
    assert "past" in str(caught.value)


@pytest.mark.parametrize("provider", TIMED)
def test_future_timestamp_beyond_window_fails(provider: Provider) -> None:
    window = WINDOW[provider]
    headers, body = delivery(provider, ts=NOW + window)
    verify(provider, secret_for(provider), headers, body, now=NOW)  # edge of the window

    headers, body = delivery(provider, ts=NOW + window + 1)
    with pytest.raises(TimestampOutOfWindow) as caught:
        verify(provider, secret_for(provider), headers, body, now=NOW)
    assert "future" in str(caught.value)


@pytest.mark.parametrize("provider", TIMED)
def test_tolerance_overrides_the_window(provider: Provider) -> None:
    headers, body = delivery(provider, ts=NOW - 900)
    verify(provider, secret_for(provider), headers, body, now=NOW, tolerance=900)
    with pytest.raises(TimestampOutOfWindow):
        verify(provider, secret_for(provider), headers, body, now=NOW, tolerance=899)


@pytest.mark.parametrize("provider", TIMED)
def test_signature_is_checked_before_timestamp(provider: Provider) -> None:
    headers, body = delivery(provider, ts=NOW - 10_000)
    with pytest.raises(SignatureMismatch):
        verify(provider, secret_for(provider, n=2), headers, body, now=NOW)


@pytest.mark.parametrize("provider", [Provider.GITHUB, Provider.HMAC_SHA256])
def test_providers_without_timestamp_ignore_clock(provider: Provider) -> None:
    headers, body = delivery(provider)
    verify(provider, secret_for(provider), headers, body, now=NOW + 10**6, tolerance=0)


@pytest.mark.parametrize("provider", ALL)
def test_rotation_second_secret_matches(provider: Provider) -> None:
    headers, body = delivery(provider, n=2)
    secrets = [secret_for(provider, n=1), secret_for(provider, n=2)]
    verify(provider, secrets, headers, body, now=NOW)
    verify(provider, tuple(secrets), headers, body, now=NOW)
    with pytest.raises(SignatureMismatch):
        verify(provider, [secret_for(provider, 1), secret_for(provider, 3)], headers, body, now=NOW)


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_headers_are_case_insensitive(provider: Provider, case: Callable[[str], str]) -> None:
    headers, body = delivery(provider)
    verify(provider, secret_for(provider), {case(k): v for k, v in headers.items()}, body, now=NOW)


@pytest.mark.parametrize("provider", ALL)
def test_conflicting_duplicate_headers_fail(provider: Provider) -> None:
    headers, body = delivery(provider)
    (name, value), *_ = headers.items()
    duplicated = {**headers, name.swapcase(): value + "0"}
    with pytest.raises(MalformedSignature):
        verify(provider, secret_for(provider), duplicated, body, now=NOW)


@pytest.mark.parametrize("provider", ALL)
def test_errors_never_reveal_secret_or_expected_signature(provider: Provider) -> None:
    headers, body = delivery(provider)
    expected = sign(provider, secret_for(provider, n=2), body, NOW)
    with pytest.raises(SignatureMismatch) as caught:
        verify(provider, secret_for(provider, n=2), headers, body, now=NOW)
    text = f"{caught.value} {caught.value!r} {caught.value.message}"
    assert secret_for(provider, n=2) not in text
    for value in expected.values():
        signature = value.split("=", 1)[-1].split(",", 1)[-1]
        if len(signature) > 20:
            assert signature not in text


# --------------------------------------------------------------------------- provider specifics


def test_generic_hmac_accepts_bare_hex_and_uppercase() -> None:
    body = b"payload"
    digest = _hex(b"generic", body)
    verify("hmac_sha256", "generic", {"X-Signature": digest}, body)
    verify("hmac_sha256", "generic", {"x-signature": "sha256=" + digest.upper()}, body)


def test_stripe_any_v1_passes_and_v0_is_ignored() -> None:
    secret, body = "whsec_stripe_test", b'{"id": "evt_1"}'
    good = _hex(secret.encode(), f"{NOW}.".encode() + body)
    header = f"t={NOW},v1={'0' * 64},v1={good},v0={'f' * 64}"
    verify("stripe", secret, {"Stripe-Signature": header}, body, now=NOW)

    only_bad = f"t={NOW},v1={'0' * 64},v0={good}"
    with pytest.raises(SignatureMismatch):
        verify("stripe", secret, {"Stripe-Signature": only_bad}, body, now=NOW)


def test_stripe_signed_payload_binds_timestamp() -> None:
    secret, body = "whsec_stripe_test", b"{}"
    sig = _hex(secret.encode(), f"{NOW}.".encode() + body)
    with pytest.raises(SignatureMismatch):
        verify("stripe", secret, {"Stripe-Signature": f"t={NOW + 1},v1={sig}"}, body, now=NOW)


def test_standard_multiple_signatures_one_matches() -> None:
    secret = secret_for(Provider.STANDARD)
    headers, body = delivery(Provider.STANDARD)
    good = headers["webhook-signature"]
    other = "v1," + _b64(b"some-other-key", b"x")
    headers["webhook-signature"] = f"{other} v1a,{_B64}  v2,{_B64} {good}"
    verify("standard", secret, headers, body, now=NOW)

    headers["webhook-signature"] = f"{other} v1a,{_B64}"
    with pytest.raises(SignatureMismatch):
        verify("standard", secret, headers, body, now=NOW)


def test_standard_other_versions_are_not_accepted() -> None:
    headers, body = delivery(Provider.STANDARD)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(MalformedSignature):
        verify("standard", secret_for(Provider.STANDARD), headers, body, now=NOW)


def test_standard_signature_binds_id_and_timestamp() -> None:
    secret = secret_for(Provider.STANDARD)
    headers, body = delivery(Provider.STANDARD)
    with pytest.raises(SignatureMismatch):
        verify("standard", secret, {**headers, "webhook-id": "msg_other"}, body, now=NOW)
    moved = {**headers, "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(SignatureMismatch):
        verify("standard", secret, moved, body, now=NOW)


def test_standard_secret_without_prefix_or_as_bytes() -> None:
    secret = secret_for(Provider.STANDARD)
    headers, body = delivery(Provider.STANDARD)
    verify("standard", secret.removeprefix("whsec_"), headers, body, now=NOW)
    verify("standard", secret.removeprefix("whsec_").encode(), headers, body, now=NOW)
    verify("standard", secret.encode(), headers, body, now=NOW)
    with pytest.raises(InvalidSecret):  # the decoded key itself is not a secret
        verify("standard", _standard_key(secret), headers, body, now=NOW)


def test_sign_standard_matches_independent_computation() -> None:
    secret = secret_for(Provider.STANDARD)
    body = b'{"type": "user.created"}'
    expected = "v1," + _b64(_standard_key(secret), f"{MSG_ID}.{NOW}.".encode() + body)
    assert sign_standard(secret, MSG_ID, NOW, body) == expected
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(NOW), "webhook-signature": expected}
    verify(Provider.STANDARD, secret, headers, body, now=NOW)


def test_standard_invalid_secret_fails_closed() -> None:
    headers, body = delivery(Provider.STANDARD)
    with pytest.raises(InvalidSecret):
        verify("standard", "whsec_***", headers, body, now=NOW)
    with pytest.raises(InvalidSecret):
        sign_standard("", MSG_ID, NOW, body)


def test_slack_signed_content_binds_timestamp() -> None:
    headers, body = delivery(Provider.SLACK)
    moved = {**headers, "X-Slack-Request-Timestamp": str(NOW + 1)}
    with pytest.raises(SignatureMismatch):
        verify("slack", secret_for(Provider.SLACK), moved, body, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"action": "ping"}',
        b'{"webhookTimestamp": "1700000000000"}',
        b'{"webhookTimestamp": true}',
        b'{"webhookTimestamp": 1700000000000.0}',
    ],
)
def test_linear_needs_integer_webhook_timestamp(body: bytes) -> None:
    secret = secret_for(Provider.LINEAR)
    headers = {"Linear-Signature": _hex(secret.encode(), body)}
    with pytest.raises(MalformedSignature):
        verify("linear", secret, headers, body, now=NOW)


def test_linear_window_is_in_milliseconds() -> None:
    secret = secret_for(Provider.LINEAR)
    body = json.dumps({"webhookTimestamp": NOW * 1000 - 60_001}).encode()
    headers = {"Linear-Signature": _hex(secret.encode(), body)}
    with pytest.raises(TimestampOutOfWindow):
        verify("linear", secret, headers, body, now=NOW)
    verify("linear", secret, headers, body, now=NOW - 0.002)


# --------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize("name", ["gitlab", "GitHub", "", "standard-webhooks", "hmac"])
def test_unknown_provider_fails(name: str) -> None:
    headers, body = delivery(Provider.GITHUB)
    with pytest.raises(UnknownProvider) as caught:
        verify(name, secret_for(Provider.GITHUB), headers, body)
    assert caught.value.reason == "unknown_provider"
    assert isinstance(caught.value, WebhookVerificationError)


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("secrets", [[], (), "", b"", ["ok-secret", ""]])
def test_no_usable_secret_fails_closed(provider: Provider, secrets: object) -> None:
    headers, body = delivery(provider)
    with pytest.raises(InvalidSecret) as caught:
        verify(provider, secrets, headers, body, now=NOW)  # type: ignore[arg-type]
    assert caught.value.reason == "invalid_secret"
    assert isinstance(caught.value, WebhookVerificationError)


# --------------------------------------------------------------------------- clock


def test_now_accepts_aware_datetime_and_defaults_to_clock() -> None:
    provider = Provider.STRIPE
    headers, body = delivery(provider)
    when = datetime.fromtimestamp(NOW, tz=UTC)
    verify(provider, secret_for(provider), headers, body, now=when)
    with pytest.raises(TimestampOutOfWindow):
        verify(provider, secret_for(provider), headers, body, now=when + timedelta(minutes=6))
    with pytest.raises(TimestampOutOfWindow):  # real clock: NOW is long past
        verify(provider, secret_for(provider), headers, body)


@pytest.mark.parametrize("now", [datetime(2023, 11, 14, 22, 13, 20), float("nan"), float("inf")])
def test_unusable_now_is_rejected(now: datetime | float) -> None:
    headers, body = delivery(Provider.SLACK)
    with pytest.raises(ValueError, match="now"):
        verify(Provider.SLACK, secret_for(Provider.SLACK), headers, body, now=now)


def test_negative_tolerance_is_rejected() -> None:
    headers, body = delivery(Provider.SLACK)
    with pytest.raises(ValueError, match="tolerance"):
        verify(Provider.SLACK, secret_for(Provider.SLACK), headers, body, now=NOW, tolerance=-1)
