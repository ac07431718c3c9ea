"""Webhook secrets live in the vault: each is a vault secret (`secrets` row, scope type
`webhook`, one `secret_versions` row per version), AES-256-GCM under the organisation's
data key with associated data binding org, secret and version. So a data-key rotation
re-encrypts them with every other secret, and crypto-shredding an organisation destroys
them too. Reveal never reaches them (it reads org, workflow and run scopes only);
plaintext exists only in memory, only while used."""

from __future__ import annotations

import base64

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bastion.core.crypto import random_bytes
from bastion.core.errors import BastionError
from bastion.core.ids import new_id
from bastion.secrets.models import Secret, SecretVersion
from bastion.secrets.vault import Vault
from bastion.secrets.vault import add_version as add_secret_version

STANDARD_PREFIX = "whsec_"
SCOPE = "webhook"


class Unreadable(Exception):
    """A webhook secret is missing or cannot be decrypted (altered, or its key is gone)."""


def create(db: Session, vault: Vault, org_id: str, owner: str, value: str) -> str:
    """A new vault secret holding `value` as version 1, for the row `owner` names
    (e.g. "endpoint/whe_…"); returns its id."""
    secret = Secret(
        id=new_id("sec"),
        org_id=org_id,
        name=f"webhook/{owner}",
        scope_type=SCOPE,
        scope_id=owner.rsplit("/", 1)[-1],
        description="managed by Bastion webhooks",
        current_version=0,
    )
    db.add(secret)
    add_version(db, vault, secret, value)
    return secret.id


def add_version(db: Session, vault: Vault, secret: Secret, value: str) -> int:
    version = secret.current_version + 1
    add_secret_version(db, vault, secret.org_id, secret.id, version, value.encode())
    secret.current_version = version
    return version


def new_version(db: Session, vault: Vault, secret_id: str, value: str) -> int:
    secret = db.get(Secret, secret_id, with_for_update=True)
    if secret is None:
        raise Unreadable("the webhook secret is gone")
    return add_version(db, vault, secret, value)


def reveal(db: Session, vault: Vault, row: SecretVersion) -> str:
    """The plaintext of one version. If its data key was destroyed after the row was
    read (a finished re-encryption), the row was re-encrypted meanwhile: read it again
    once. Raises `Unreadable`."""
    try:
        return _decrypt(db, vault, row)
    except Unreadable:
        before = row.key_version
        db.refresh(row)
        if row.key_version == before:
            raise
        return _decrypt(db, vault, row)


def _decrypt(db: Session, vault: Vault, row: SecretVersion) -> str:
    try:
        value = vault.decrypt(
            db, row.org_id, row.secret_id, row.version, row.key_version, row.ciphertext
        )
    except (BastionError, LookupError, ValueError):  # the vault's "cannot decrypt" errors
        raise Unreadable("the webhook secret cannot be decrypted") from None
    return value.decode()


def read(db: Session, vault: Vault, secret_id: str, version: int) -> str:
    row = db.get(SecretVersion, (secret_id, version))
    if row is None:
        raise Unreadable("the webhook secret is gone")
    return reveal(db, vault, row)


def destroy(db: Session, *secret_ids: str | None) -> None:
    """Delete vault secrets (their versions go with them)."""
    ids = [s for s in secret_ids if s]
    if ids:
        db.execute(delete(SecretVersion).where(SecretVersion.secret_id.in_(ids)))
        db.execute(delete(Secret).where(Secret.id.in_(ids)))


def destroy_versions(db: Session, versions: list[tuple[str, int]]) -> None:
    """Delete single versions (secret id, version), e.g. rotated-out ones past their
    overlap: the old secret's ciphertext does not outlive its use."""
    for secret_id, version in versions:
        db.execute(
            delete(SecretVersion).where(
                SecretVersion.secret_id == secret_id, SecretVersion.version == version
            )
        )


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return STANDARD_PREFIX + base64.b64encode(random_bytes(32)).decode("ascii")
