"""Checking a compliance report on its own: its content against its `sha256`, and its
Ed25519 `signature` over that digest against the key of its `kid` in a JSON Web Key
Set (the instance's `/.well-known/jwks.json`). Only `OKP`/`Ed25519` keys are used; an
unknown `kid` is a failure, never a reason to try other keys."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from bastion.core.crypto import constant_time_equals, digest, ed25519_verify


class ReportInvalid(Exception):
    """Why a report does not verify (one sentence, no report content)."""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def content_bytes(report: Mapping[str, Any]) -> bytes:
    content = report.get("content")
    if not isinstance(content, str):
        raise ReportInvalid("the report has no content")
    if report.get("format") == "pdf":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ReportInvalid("the PDF content is not base64") from None
    return content.encode("utf-8")


def verify_report(report: Mapping[str, Any], jwks: Mapping[str, Any]) -> str:
    """The `kid` that signed `report`; ReportInvalid when anything does not hold."""
    hashed = digest("sha256", content_bytes(report))
    if not constant_time_equals(hashed.hex(), str(report.get("sha256", ""))):
        raise ReportInvalid("the content does not match its sha256: it was changed")
    kid = report.get("kid")
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    key = next(
        (k for k in keys or [] if isinstance(k, Mapping) and k.get("kid") == kid and kid),
        None,
    )
    if key is None:
        raise ReportInvalid("no key with the report's kid in the key set")
    if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
        raise ReportInvalid("the report's key is not an Ed25519 key")
    try:
        public = _b64url(str(key.get("x", "")))
        signature = _b64url(str(report.get("signature", "")))
    except (binascii.Error, ValueError):
        raise ReportInvalid("the signature or key is not base64url") from None
    if len(public) != 32 or not ed25519_verify(public, signature, hashed):
        raise ReportInvalid("the signature does not verify with the report's key")
    return str(kid)
