"""Inbound Standard Webhooks deliveries signed by Svix's and Standard Webhooks' own
libraries, under either header spelling (`svix-*` or `webhook-*`), as those libraries
accept both (issue 20)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from bastion.core.clock import utcnow
from bastion.webhooks import MissingHeader, SignatureMismatch, verify
from tests.factories import Factory
from tests.webhooks.test_gateway import create_endpoint

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = json.dumps({"type": "invoice.paid", "id": "in_1"})


def _svix_headers(prefix: str, at: datetime, body: str = BODY) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    signature = SvixWebhook(SECRET).sign(msg_id, at, body)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": signature,
    }


@pytest.mark.parametrize("prefix", ["svix", "webhook", "Svix"])
def test_both_spellings_verify(prefix: str) -> None:
    at = datetime.now(UTC)
    headers = _svix_headers(prefix, at)
    verify("standard", SECRET, headers, BODY.encode(), now=at.timestamp())
    SvixWebhook(SECRET).verify(BODY, {k.lower(): v for k, v in headers.items()})  # the peer agrees


def test_standardwebhooks_library_signature_under_svix_names() -> None:
    at = datetime.now(UTC)
    msg_id = "msg_2bTq5Tm0r8Xy2oQ4w1d9"
    signature = StandardWebhook(SECRET).sign(msg_id, at, BODY)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }
    verify("standard", SECRET, headers, BODY.encode(), now=at.timestamp())
    with pytest.raises(SignatureMismatch):
        verify("standard", SECRET, headers, BODY.encode() + b" ", now=at.timestamp())


def test_a_mixed_or_partial_svix_set_fails_closed() -> None:
    at = datetime.now(UTC)
    headers = _svix_headers("svix", at)
    del headers["svix-id"]
    with pytest.raises(MissingHeader) as missing:
        verify("standard", SECRET, headers, BODY.encode(), now=at.timestamp())
    assert missing.value.header == "svix-id"
    # No signature header at all: the standard spelling is the one named as missing.
    with pytest.raises(MissingHeader) as none:
        verify("standard", SECRET, {}, BODY.encode(), now=at.timestamp())
    assert none.value.header == "webhook-id"


def test_the_gateway_accepts_a_svix_delivery(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    endpoint = create_endpoint(client, org, "standard", SECRET)
    at = utcnow()
    headers = {"content-type": "application/json", **_svix_headers("svix", at)}
    accepted = client.post(endpoint["url"], content=BODY.encode(), headers=headers)
    assert accepted.status_code in (200, 202), accepted.text
    forged = {**headers, "svix-signature": _svix_headers("svix", at, BODY + "x")["svix-signature"]}
    forged["svix-id"] = f"msg_{uuid.uuid4().hex}"
    refused = client.post(endpoint["url"], content=BODY.encode(), headers=forged)
    assert refused.status_code == 401
