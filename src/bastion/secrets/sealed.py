"""Values another feature seals in the vault (a webhook endpoint's signing secrets).

Each is an ordinary secret (`secrets` row at a scope of the feature's own, one
`secret_versions` row per version), AES-256-GCM under the organisation's data key with
associated data binding org, secret and version. So a data-key rotation re-encrypts
them with every other secret, and crypto-shredding an organisation destroys them too.
The secrets API never lists, describes, reveals or deletes them (it reads
`service.USER_SCOPES` only). The owning feature keeps only ids and version numbers;
plaintext exists only in memory, only while used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bastion.core.errors import BastionError
from bastion.core.ids import new_id
from bastion.secrets.errors import KeyUnavailable
from bastion.secrets.models import Secret, SecretVersion
from bastion.secrets.service import decrypt_stored, decrypt_version
from bastion.secrets.vault import Vault
from bastion.secrets.vault import add_version as store_version


class Unreadable(Exception):
    """A sealed value is missing or cannot be decrypted (altered, or its key is gone).
    Not raised while the organisation's customer-managed key refuses or cannot be
    reached: that is `KeyUnavailable` (503), passed on as it is, so no feature takes a
    temporary refusal for a value gone for good (marks a delivery undeliverable, an
    integration disconnected)."""


@dataclass(frozen=True)
class Opened:
    """One version's plaintext, or None when it cannot be decrypted."""

    version: int
    value: bytes | None = field(repr=False)


def create(
    db: Session,
    vault: Vault,
    org_id: str,
    *,
    name: str,
    scope_type: str,
    scope_id: str,
    description: str,
    value: bytes,
) -> str:
    """A new sealed secret holding `value` as version 1; returns its id."""
    secret = Secret(
        id=new_id("sec"),
        org_id=org_id,
        name=name,
        scope_type=scope_type,
        scope_id=scope_id,
        description=description,
        current_version=0,
    )
    db.add(secret)
    _add(db, vault, secret, value)
    return secret.id


def _add(db: Session, vault: Vault, secret: Secret, value: bytes) -> int:
    version = secret.current_version + 1
    store_version(db, vault, secret.org_id, secret.id, version, value)
    secret.current_version = version
    return version


def add_version(db: Session, vault: Vault, secret_id: str, value: bytes) -> int:
    """Seal `value` as the secret's next version (the secret row is locked, so two
    rotations take turns); returns the version. Raises `Unreadable` when it is gone."""
    secret = db.get(Secret, secret_id, with_for_update=True)
    if secret is None:
        raise Unreadable("the sealed secret is gone")
    return _add(db, vault, secret, value)


def _open(db: Session, vault: Vault, row: SecretVersion) -> bytes:
    try:
        return decrypt_version(db, vault, row)
    except KeyUnavailable:
        raise  # the customer's key refuses for now: nothing is unreadable for good
    except (BastionError, LookupError, ValueError):  # the vault's "cannot decrypt" errors
        raise Unreadable("the sealed secret cannot be decrypted") from None


def open_stored(
    db: Session, vault: Vault, org_id: str, secret_id: str, rows: Iterable[tuple[int, int, bytes]]
) -> list[Opened]:
    """Decrypt versions of a secret its caller read itself, as plain values: (version,
    key version, ciphertext) each; the plaintexts in the order given, None for one that
    cannot be decrypted (altered, or its key is gone)."""
    opened = []
    for version, key_version, ciphertext in rows:
        try:
            value = decrypt_stored(db, vault, org_id, secret_id, version, (key_version, ciphertext))
        except KeyUnavailable:
            raise
        except (BastionError, LookupError, ValueError):  # as `_open`
            opened.append(Opened(version, None))
        else:
            opened.append(Opened(version, value))
    return opened


def read(db: Session, vault: Vault, secret_id: str, version: int) -> bytes:
    """One version's plaintext. Raises `Unreadable`."""
    row = db.get(SecretVersion, (secret_id, version))
    if row is None:
        raise Unreadable("the sealed secret is gone")
    return _open(db, vault, row)


def read_current(db: Session, vault: Vault, secret_id: str) -> bytes:
    """The newest version's plaintext. Raises `Unreadable`."""
    secret = db.get(Secret, secret_id)
    if secret is None or secret.current_version < 1:
        raise Unreadable("the sealed secret is gone")
    return read(db, vault, secret_id, secret.current_version)


def destroy(db: Session, *secret_ids: str | None) -> None:
    """Delete sealed secrets (their versions go with them)."""
    ids = [s for s in secret_ids if s]
    if ids:
        db.execute(delete(SecretVersion).where(SecretVersion.secret_id.in_(ids)))
        db.execute(delete(Secret).where(Secret.id.in_(ids)))


def destroy_versions(db: Session, versions: Iterable[tuple[str, int]]) -> None:
    """Delete single versions (secret id, version), e.g. rotated-out ones past their
    overlap: the old value's ciphertext does not outlive its use."""
    for secret_id, version in versions:
        db.execute(
            delete(SecretVersion).where(
                SecretVersion.secret_id == secret_id, SecretVersion.version == version
            )
        )
