"""Secrets written straight through the vault: fast seeding for tests that need many
(the API path is covered by the tests that exercise it)."""

from __future__ import annotations

import uuid
from typing import Any

from bastion.core.db import begin_write
from bastion.secrets.models import Secret, SecretVersion


def seed_secrets(state: Any, org_id: str, count: int, prefix: str = "s") -> None:
    """`count` org-scope secrets named `<prefix><i>` with value `value-<org>-<i>`."""
    with state.sessions() as db:
        begin_write(db)
        for i in range(count):
            secret = Secret(
                id=f"sec_{uuid.uuid4().hex[:26].upper()}",
                org_id=org_id,
                name=f"{prefix}{i}",
                scope_type="org",
                scope_id="",
                current_version=1,
            )
            db.add(secret)
            key_version, blob = state.vault.encrypt(
                db, org_id, secret.id, 1, f"value-{org_id}-{i}".encode()
            )
            db.add(
                SecretVersion(
                    secret_id=secret.id,
                    version=1,
                    org_id=org_id,
                    ciphertext=blob,
                    key_version=key_version,
                )
            )
        db.commit()
