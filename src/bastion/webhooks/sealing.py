"""Webhook secrets live in the vault, sealed there by `bastion.secrets.sealed` (scope
type `webhook`, one version per rotation): a data-key rotation re-encrypts them with
every other secret, and crypto-shredding an organisation destroys them too. Reveal
never reaches them (it reads org, workflow and run scopes only); plaintext exists only
in memory, only while used. This module names them and turns text into bytes and back."""

from __future__ import annotations

import base64

from sqlalchemy.orm import Session

from bastion.core.crypto import random_bytes
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

STANDARD_PREFIX = "whsec_"
SCOPE = "webhook"


def create(db: Session, vault: Vault, org_id: str, owner: str, value: str) -> str:
    """A new vault secret holding `value` as version 1, for the row `owner` names
    (e.g. "endpoint/whe_…"); returns its id."""
    return sealed.create(
        db,
        vault,
        org_id,
        name=f"webhook/{owner}",
        scope_type=SCOPE,
        scope_id=owner.rsplit("/", 1)[-1],
        description="managed by Bastion webhooks",
        value=value.encode(),
    )


def new_version(db: Session, vault: Vault, secret_id: str, value: str) -> int:
    """Raises `sealed.Unreadable` when the secret is gone."""
    return sealed.add_version(db, vault, secret_id, value.encode())


def read(db: Session, vault: Vault, secret_id: str, version: int) -> str:
    """Raises `sealed.Unreadable`."""
    return sealed.read(db, vault, secret_id, version).decode()


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return STANDARD_PREFIX + base64.b64encode(random_bytes(32)).decode("ascii")
