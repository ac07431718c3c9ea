"""TOTP (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, one step of drift either way.

`pyotp` computes the codes; the comparison is `core.crypto.constant_time_equals`, every
candidate step compared (no early exit), and the caller learns *which* step matched so
it can refuse that step and every earlier one next time (a code is accepted once).
"""

from __future__ import annotations

import base64
from datetime import datetime

import pyotp

from bastion.core.crypto import constant_time_equals, random_bytes

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA-1
ISSUER = "Bastion"


def new_secret() -> str:
    """A random shared secret, base32 without padding (what authenticator apps take)."""
    return base64.b32encode(random_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def otpauth_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The `otpauth://totp/…` URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def normalize(code: str) -> str:
    return "".join(code.split())


def match(secret: str, code: str, now: datetime, after: int | None) -> int | None:
    """The time step whose code `code` is, within one step of `now`, and later than
    `after` (the last step accepted); None when there is none."""
    code = normalize(code)
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = time_step(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        same = constant_time_equals(totp.generate_otp(step), code)
        if same and found is None and (after is None or step > after):
            found = step
    return found
