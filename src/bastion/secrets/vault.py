"""Envelope encryption: root key → per-organisation data key → secret values.

- The root key is versioned and held by a `KeyProvider`. Built in: the local keyring
  file (`root.key` in the data dir, mode 0600); the interface is what a KMS or Vault
  Transit provider (or a customer-managed key per organisation) implements.
- Each organisation has its own 256-bit data key, stored only wrapped (AES-256-GCM under
  a key derived from the root key version that wrapped it, bound to org and version).
- Each secret version is AES-256-GCM under the org's data key with a random 96-bit nonce
  and associated data binding org, secret and version: a ciphertext copied to another
  row or organisation does not decrypt.
- Unwrapped data keys are cached in memory for a short time; nothing decrypted is
  written to disk or logs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.core.crypto import aead_decrypt, aead_encrypt, derive_key, random_bytes
from bastion.core.keyring import Keyring, read_keyring
from bastion.secrets.models import OrgKey

DATA_KEY_TTL_SECONDS = 60.0
_WRAP_PURPOSE = "org-data-key-wrap:v1"


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a versioned root key."""

    def active_version(self) -> int: ...

    def wrap(self, plaintext: bytes, associated: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, version: int, blob: bytes, associated: bytes) -> bytes: ...


class LocalKeyProvider:
    """The keyring file in the data dir. A version it does not know yet (another
    process ran `bastion keys rotate`) makes it re-read the file once."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: Keyring = read_keyring(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalKeyProvider({self._path.name}, active={self._keys.active})"

    def reload(self) -> None:
        with self._lock:
            self._keys = read_keyring(self._path)

    def active_version(self) -> int:
        return self._keys.active

    def _key(self, version: int) -> bytes:
        if version not in self._keys.versions:
            self.reload()
        return derive_key(self._keys.key(version), _WRAP_PURPOSE)

    def wrap(self, plaintext: bytes, associated: bytes) -> tuple[int, bytes]:
        version = self._keys.active
        return version, aead_encrypt(self._key(version), plaintext, associated)

    def unwrap(self, version: int, blob: bytes, associated: bytes) -> bytes:
        return aead_decrypt(self._key(version), blob, associated)


def _key_aad(org_id: str, version: int) -> bytes:
    return f"org-data-key|{org_id}|{version}".encode()


def value_aad(org_id: str, secret_id: str, version: int) -> bytes:
    return f"secret|{org_id}|{secret_id}|{version}".encode()


class Vault:
    """Data keys per organisation, created on first use and cached briefly."""

    def __init__(self, provider: KeyProvider, ttl: float = DATA_KEY_TTL_SECONDS) -> None:
        self.provider = provider
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vault({self.provider!r})"

    def _cached(self, org_id: str, version: int) -> bytes | None:
        with self._lock:
            hit = self._cache.get((org_id, version))
            if hit is None or hit[0] < time.monotonic():
                self._cache.pop((org_id, version), None)
                return None
            return hit[1]

    def _remember(self, org_id: str, version: int, key: bytes) -> None:
        with self._lock:
            self._cache[(org_id, version)] = (time.monotonic() + self._ttl, key)

    def forget(self, org_id: str | None = None) -> None:
        with self._lock:
            for cached in [k for k in self._cache if org_id is None or k[0] == org_id]:
                del self._cache[cached]

    def data_key(self, db: Session, org_id: str, version: int) -> bytes:
        cached = self._cached(org_id, version)
        if cached is not None:
            return cached
        row = db.get(OrgKey, (org_id, version))
        if row is None:
            raise LookupError("the organisation's data key is gone (crypto-shredded)")
        key = self.provider.unwrap(row.root_version, row.wrapped, _key_aad(org_id, version))
        self._remember(org_id, version, key)
        return key

    def active_key(self, db: Session, org_id: str) -> tuple[int, bytes]:
        """The org's newest data key, created (wrapped) on first use."""
        version = db.execute(
            select(func.max(OrgKey.version)).where(OrgKey.org_id == org_id)
        ).scalar()
        if version is None:
            key = random_bytes(32)
            root_version, wrapped = self.provider.wrap(key, _key_aad(org_id, 1))
            db.add(OrgKey(org_id=org_id, version=1, wrapped=wrapped, root_version=root_version))
            db.flush()
            self._remember(org_id, 1, key)
            return 1, key
        return int(version), self.data_key(db, org_id, int(version))

    def encrypt(
        self, db: Session, org_id: str, secret_id: str, version: int, value: bytes
    ) -> tuple[int, bytes]:
        key_version, key = self.active_key(db, org_id)
        return key_version, aead_encrypt(key, value, value_aad(org_id, secret_id, version))

    def decrypt(
        self,
        db: Session,
        org_id: str,
        secret_id: str,
        version: int,
        key_version: int,
        blob: bytes,
    ) -> bytes:
        key = self.data_key(db, org_id, key_version)
        return aead_decrypt(key, blob, value_aad(org_id, secret_id, version))


def rewrap(
    sessions: Callable[[], Session],
    provider: KeyProvider,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-wrap every organisation data key not wrapped by the active root version, one
    org per transaction (work grows with organisations, not secrets). Readers keep
    working throughout: each row is either wrapped by the old version or the new one.
    Returns how many keys were re-wrapped."""
    active = provider.active_version()
    with sessions() as db:
        pending = list(
            db.execute(
                select(OrgKey.org_id, OrgKey.version).where(OrgKey.root_version != active)
            ).all()
        )
    done = 0
    for org_id, version in pending:
        with sessions() as db:
            row = db.get(OrgKey, (org_id, version))
            if row is not None and row.root_version != active:
                aad = _key_aad(org_id, version)
                key = provider.unwrap(row.root_version, row.wrapped, aad)
                row.root_version, row.wrapped = provider.wrap(key, aad)
                db.commit()
                done += 1
        if progress is not None:
            progress(1)
    return done


def shred_org(db: Session, org_id: str) -> int:
    """Destroy every data key of an organisation: its secrets can never be decrypted
    again from this database, nor from a backup taken afterwards (an older backup still
    needs the root key, which is not in the database). Returns keys destroyed."""
    rows = list(db.execute(select(OrgKey).where(OrgKey.org_id == org_id)).scalars())
    for row in rows:
        db.delete(row)
    return len(rows)
