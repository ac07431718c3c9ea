"""The SDK's privacy surface against the app: scan, redact, a prompt redacted before it
goes to a model and the model's answer detokenized, data policies, retention and an
access package (sync and async)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.client import AsyncClient, Client, ValidationError
from tests.factories import Factory

EMAIL = "sentinel.prompt@example.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_sync_privacy(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client, token=org.admin_key)
    found = sdk.privacy.scan(org.id, texts=[f"mail {EMAIL}"], types=["EMAIL"])
    assert found.results[0].findings[0].type == "EMAIL"
    redacted = sdk.privacy.redact(org.id, texts=[f"mail {EMAIL}"], mode="replace")
    assert redacted.results[0].text == "mail <EMAIL>"
    prompt = sdk.privacy.redact_prompt(org.id, f"Write to {EMAIL} about the refund.")
    assert EMAIL not in prompt
    assert prompt.startswith("Write to <EMAIL_")
    answer = f"Sure: I will write to {prompt.split()[2]} today."  # what a model might say
    restored = sdk.privacy.detokenize(org.id, texts=[answer])
    assert [r.text for r in restored.results] == [f"Sure: I will write to {EMAIL} today."]
    assert restored.restored == 1
    policy = sdk.privacy.policies.create(
        org.id, name="p", applies_to="tool_arguments", types=["EMAIL"], action="deny"
    )
    assert [p["id"] for p in sdk.privacy.policies.list(org.id).data] == [policy["id"]]
    assert sdk.privacy.policies.update(org.id, policy["id"], action="redact")["action"] == "redact"
    sdk.privacy.policies.delete(org.id, policy["id"])
    with pytest.raises(ValidationError):
        sdk.privacy.policies.create(org.id, name="p", applies_to="nowhere", types=[], action="x")
    assert sdk.privacy.retention(org.id).tool_calls_days == 90
    assert sdk.privacy.set_retention(org.id, tool_calls_days=30).tool_calls_days == 30
    assert "EMAIL" in {t.name for t in sdk.privacy.types().data}
    made = sdk.privacy.access_request(org.id, user_id=org.admin.user_id)
    assert sdk.privacy.subject_requests.get(org.id, made["id"])["kind"] == "access"
    package = sdk.privacy.package(org.id, made["id"])
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        assert "profile.json" in archive.namelist()


@pytest.mark.anyio
async def test_async_privacy(app: Any, factory: Factory) -> None:
    org = factory.org()
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://bastion.test", token=org.admin_key, transport=transport) as sdk:
        prompt = await sdk.privacy.redact_prompt(org.id, f"mail {EMAIL}", mode="replace")
        assert prompt == "mail <EMAIL>"
        assert (await sdk.privacy.retention(org.id)).run_artifacts_hours == 24
        found = await sdk.privacy.scan(org.id, texts=[f"mail {EMAIL}"])
        assert [f.type for f in found.results[0].findings] == ["EMAIL"]
        token = (await sdk.privacy.redact_prompt(org.id, EMAIL)).strip()
        assert token.startswith("<EMAIL_")
        restored = await sdk.privacy.detokenize(org.id, texts=[token])
        assert restored.results[0].text == EMAIL
        made = await sdk.privacy.access_request(org.id, email=org.admin.email)
        package = await sdk.privacy.package(org.id, made["id"])
        assert package[:2] == b"PK"
