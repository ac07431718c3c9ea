"""Rotating the audit-signing key (`bastion keys rotate-signing`) with a server running:
new checkpoints are signed with the new key, older ones still verify under the key
they name, and every public key stays published (`GET /v1/audit/signing-keys`,
`bastion keys signing-keys`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bastion.audit import checkpoints
from bastion.audit.models import AuditCheckpoint
from bastion.core.crypto import ed25519_public_key
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, read_keyring
from tests.factories import Org
from tests.instance import Instance, fresh_instance


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    with fresh_instance(tmp_path, monkeypatch) as made:
        yield made


def _checkpoint(inst: Instance, org: Org) -> dict[str, Any]:
    inst.factory.member(org, "viewer")  # something new to sign
    response = inst.client.post(f"/v1/orgs/{org.id}/audit-checkpoints", headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _verify(inst: Instance, org: Org) -> dict[str, Any]:
    response = inst.client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _published(inst: Instance, org: Org) -> list[dict[str, Any]]:
    response = inst.client.get("/v1/audit/signing-keys", headers=org.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_old_checkpoints_verify_under_the_key_they_name(instance: Instance) -> None:
    org = instance.factory.org()
    first = _checkpoint(instance, org)
    assert first["key_version"] == 1
    assert [k["key_version"] for k in _published(instance, org)] == [1]

    rotated = instance.cli("keys", "rotate-signing", "--json")
    assert rotated["active_version"] == 2
    keys = read_keyring(instance.data_dir / AUDIT_SIGNING_KEY_FILE)
    assert (keys.active, sorted(keys.versions)) == (2, [1, 2])

    second = _checkpoint(instance, org)  # the running server signs with the new key
    assert second["key_version"] == 2
    result = _verify(instance, org)
    assert (result["valid"], result["checkpoints"]) == (True, 2)
    assert "2 checkpoints checked" in instance.cli("audit", "verify", "--org", org.id).output

    published = _published(instance, org)
    assert [k["key_version"] for k in published] == [1, 2]
    assert [k["status"] for k in published] == ["previous", "active"]
    assert {k["algorithm"] for k in published} == {"Ed25519"}
    expected = {v: ed25519_public_key(seed).hex() for v, seed in keys.versions.items()}
    assert {k["key_version"]: k["public_key"] for k in published} == expected
    v1, v2 = published
    assert v1["valid_until"] == v2["valid_from"] is not None
    assert v2["valid_until"] is None
    assert datetime.fromisoformat(v1["valid_until"]) <= datetime.fromisoformat(second["created_at"])
    listed = instance.cli("keys", "signing-keys", "--json")
    assert listed["data"] == published

    # Anyone holding only the published keys can check every checkpoint.
    public = {k["key_version"]: bytes.fromhex(k["public_key"]) for k in published}
    with instance.state.sessions() as db:
        for cp in checkpoints.for_chain(db, org.id):
            assert checkpoints.checkpoint_valid(cp, public)


@pytest.mark.parametrize("named", [1, 99])
def test_a_checkpoint_naming_another_or_an_unknown_key_fails(
    instance: Instance, named: int
) -> None:
    org = instance.factory.org()
    _checkpoint(instance, org)
    instance.cli("keys", "rotate-signing")
    second = _checkpoint(instance, org)
    assert _verify(instance, org)["valid"] is True
    with instance.state.write_sessions() as db:
        db.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.id == second["id"])
            .values(key_version=named)
        )
        db.commit()
    result = _verify(instance, org)
    assert result["valid"] is False
    assert second["id"] in str(result["problem"])
    assert "BROKEN" in instance.cli("audit", "verify", "--org", org.id, code=1).output
