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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from sqlalchemy import Select, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from bastion.core.crypto import Aead, aead_decrypt, aead_encrypt, derive_key, random_bytes
from bastion.core.keyring import Keyring, read_keyring
from bastion.secrets.errors import SecretUnreadable
from bastion.secrets.models import OrgKey, Secret, SecretVersion

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


# Built once: it runs on every write (the statement, not the read, was most of its cost).
_NEWEST_KEY = (
    select(OrgKey.version)
    .where(OrgKey.org_id == bindparam("org_id"))
    .order_by(OrgKey.version.desc())
    .limit(1)
    .with_for_update(read=True, key_share=True)
)


def _key_aad(org_id: str, version: int) -> bytes:
    return f"org-data-key|{org_id}|{version}".encode()


def value_aad(org_id: str, secret_id: str, version: int) -> bytes:
    return f"secret|{org_id}|{secret_id}|{version}".encode()


class Vault:
    """Data keys per organisation, created on first use and cached briefly (as ready
    AEAD ciphers: a reveal that hits the cache does no database read for the key)."""

    def __init__(self, provider: KeyProvider, ttl: float = DATA_KEY_TTL_SECONDS) -> None:
        self.provider = provider
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, bytes, Aead]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vault({self.provider!r})"

    def _cached(self, org_id: str, version: int) -> tuple[bytes, Aead] | None:
        hit = self._cache.get((org_id, version))  # a dict read is atomic under the GIL
        if hit is not None and hit[0] >= time.monotonic():
            return hit[1], hit[2]
        if hit is not None:
            with self._lock:
                self._cache.pop((org_id, version), None)
        return None

    def _remember(self, org_id: str, version: int, key: bytes) -> Aead:
        cipher = Aead(key)
        with self._lock:
            self._cache[(org_id, version)] = (time.monotonic() + self._ttl, key, cipher)
        return cipher

    def forget(self, org_id: str | None = None) -> None:
        with self._lock:
            for cached in [k for k in self._cache if org_id is None or k[0] == org_id]:
                del self._cache[cached]

    def forget_version(self, org_id: str, version: int) -> None:
        with self._lock:
            self._cache.pop((org_id, version), None)

    def _load(self, db: Session, org_id: str, version: int) -> tuple[bytes, Aead]:
        cached = self._cached(org_id, version)
        if cached is not None:
            return cached
        row = db.get(OrgKey, (org_id, version))
        if row is None:
            raise SecretUnreadable("data_key_destroyed")
        key = self.provider.unwrap(row.root_version, row.wrapped, _key_aad(org_id, version))
        return key, self._remember(org_id, version, key)

    def data_key(self, db: Session, org_id: str, version: int) -> bytes:
        """The unwrapped data key; `SecretUnreadable("data_key_destroyed")` when gone."""
        return self._load(db, org_id, version)[0]

    def cipher(self, db: Session, org_id: str, version: int) -> Aead:
        return self._load(db, org_id, version)[1]

    def _active(self, db: Session, org_id: str) -> tuple[int, Aead]:
        """The org's newest data key, created (wrapped) on first use. The row is held
        (PostgreSQL: FOR KEY SHARE) until the caller's transaction ends, so background
        re-encryption cannot destroy a key a concurrent write is still using; SQLite
        serialises writers anyway."""
        version = db.execute(_NEWEST_KEY, {"org_id": org_id}).scalar()
        if version is None:
            key = random_bytes(32)
            root_version, wrapped = self.provider.wrap(key, _key_aad(org_id, 1))
            db.add(OrgKey(org_id=org_id, version=1, wrapped=wrapped, root_version=root_version))
            db.flush()
            return 1, self._remember(org_id, 1, key)
        return int(version), self._load(db, org_id, int(version))[1]

    def active_key(self, db: Session, org_id: str) -> tuple[int, bytes]:
        version, _ = self._active(db, org_id)
        return version, self.data_key(db, org_id, version)

    def rotate(self, db: Session, org_id: str) -> int:
        """Add data-key version N+1 (wrapped by the active root-key version). New writes
        use it at once; older secret versions keep reading under the key they name until
        `reencrypt_batch` moves them. Two concurrent rotations conflict on the primary
        key (one of them fails), never both win."""
        current = db.execute(
            select(func.max(OrgKey.version)).where(OrgKey.org_id == org_id)
        ).scalar()
        version = int(current or 0) + 1
        key = random_bytes(32)
        root_version, wrapped = self.provider.wrap(key, _key_aad(org_id, version))
        db.add(OrgKey(org_id=org_id, version=version, wrapped=wrapped, root_version=root_version))
        db.flush()
        self._remember(org_id, version, key)
        return version

    def encrypt(
        self, db: Session, org_id: str, secret_id: str, version: int, value: bytes
    ) -> tuple[int, bytes]:
        key_version, cipher = self._active(db, org_id)
        return key_version, cipher.encrypt(value, value_aad(org_id, secret_id, version))

    def decrypt(
        self,
        db: Session,
        org_id: str,
        secret_id: str,
        version: int,
        key_version: int,
        blob: bytes,
    ) -> bytes:
        """The plaintext, or `SecretUnreadable` (never a library error) when the blob was
        altered or moved, or its data key is gone."""
        cached = self._cache.get((org_id, key_version))
        if cached is not None and cached[0] >= time.monotonic():
            cipher = cached[2]
        else:
            cipher = self._load(db, org_id, key_version)[1]
        try:
            return cipher.decrypt(blob, value_aad(org_id, secret_id, version))
        except (InvalidTag, ValueError):
            raise SecretUnreadable("authentication_failed") from None


# --- org data-key rotation ---------------------------------------------------------


@dataclass(frozen=True)
class KeyState:
    """An organisation's data keys: the active version, the older ones still kept, and
    how many secret versions still need re-encrypting under the active one."""

    active_version: int | None
    older_versions: tuple[int, ...]
    pending: int
    total: int


def _under_older(org_id: str, active: int) -> Select[str, int, int]:
    """Secret versions of `org_id` encrypted under a data key older than `active` (reached
    through the secrets' org index, then the versions' primary key)."""
    return (
        select(SecretVersion.secret_id, SecretVersion.version, SecretVersion.key_version)
        .join(Secret, Secret.id == SecretVersion.secret_id)
        .where(Secret.org_id == org_id, SecretVersion.key_version < active)
    )


def key_state(db: Session, org_id: str) -> KeyState:
    versions = sorted(db.execute(select(OrgKey.version).where(OrgKey.org_id == org_id)).scalars())
    total = db.execute(
        select(func.count())
        .select_from(SecretVersion)
        .join(Secret, Secret.id == SecretVersion.secret_id)
        .where(Secret.org_id == org_id)
    ).scalar_one()
    if not versions:
        return KeyState(None, (), 0, int(total))
    active = versions[-1]
    pending = db.execute(
        select(func.count()).select_from(_under_older(org_id, active).subquery())
    ).scalar_one()
    return KeyState(active, tuple(versions[:-1]), int(pending), int(total))


def orgs_rotating(db: Session) -> list[str]:
    """Organisations holding more than one data key (a rotation not yet finished)."""
    stmt = (
        select(OrgKey.org_id)
        .group_by(OrgKey.org_id)
        .having(func.count() > 1)
        .order_by(OrgKey.org_id)
    )
    return list(db.execute(stmt).scalars())


@dataclass(frozen=True)
class Batch:
    moved: int  # re-encrypted by this call
    unreadable: int  # could not be decrypted under their recorded key: left as they are
    cursor: tuple[str, int] | None  # where the next batch starts; None: this pass is done


def reencrypt_batch(
    db: Session,
    vault: Vault,
    org_id: str,
    active: int,
    *,
    after: tuple[str, int] = ("", 0),
    limit: int = 200,
) -> Batch:
    """Re-encrypt up to `limit` secret versions still under an older data key, in the
    caller's transaction. Each row is updated only if it still names the key it was read
    under (compare-and-set on `key_version`), so two workers doing the same batch are
    harmless: the second update matches nothing."""
    rows = db.execute(
        _under_older(org_id, active)
        .add_columns(SecretVersion.ciphertext)
        .where(tuple_(SecretVersion.secret_id, SecretVersion.version) > tuple_(*after))
        .order_by(SecretVersion.secret_id, SecretVersion.version)
        .limit(limit)
    ).all()
    cipher = vault.cipher(db, org_id, active)
    moved = unreadable = 0
    for secret_id, version, old_version, blob in rows:
        try:
            plain = vault.decrypt(db, org_id, secret_id, version, old_version, blob)
        except SecretUnreadable:
            unreadable += 1
            continue
        fresh = cipher.encrypt(plain, value_aad(org_id, secret_id, version))
        del plain
        done = db.execute(
            update(SecretVersion)
            .where(
                SecretVersion.secret_id == secret_id,
                SecretVersion.version == version,
                SecretVersion.key_version == old_version,
            )
            .values(ciphertext=fresh, key_version=active)
        )
        moved += int(getattr(done, "rowcount", 0) or 0)
    cursor = (rows[-1][0], int(rows[-1][1])) if len(rows) == limit else None
    return Batch(moved, unreadable, cursor)


def destroy_older_keys(db: Session, vault: Vault, org_id: str, active: int) -> list[int]:
    """Destroy the org's data keys older than `active` if no secret version uses them any
    more, in the caller's transaction; returns the versions destroyed ([] when some row
    still needs one, or another worker destroyed them first). The DELETE comes first: on
    PostgreSQL it waits for any writer still holding an old key, and the count after it
    then sees that writer's row. SQLite overwrites the deleted bytes (secure_delete)."""
    older = list(
        db.execute(
            select(OrgKey.version).where(OrgKey.org_id == org_id, OrgKey.version < active)
        ).scalars()
    )
    if not older:
        return []
    with _secure_delete(db):
        gone = db.execute(delete(OrgKey).where(OrgKey.org_id == org_id, OrgKey.version.in_(older)))
    if not getattr(gone, "rowcount", 0):
        return []
    still = db.execute(
        select(func.count()).select_from(_under_older(org_id, active).subquery())
    ).scalar_one()
    if still:
        raise KeysStillInUse(int(still))
    for version in older:
        vault.forget_version(org_id, version)
    return sorted(older)


class KeysStillInUse(Exception):
    """Raised inside `destroy_older_keys` so the caller rolls the deletion back."""

    def __init__(self, rows: int) -> None:
        super().__init__(f"{rows} secret versions still use an older data key")
        self.rows = rows


class _secure_delete:  # noqa: N801 - used as a context manager
    """SQLite: zero deleted content for the statements inside (the pragma is per
    connection, so it is switched off again). Other databases: nothing to do."""

    def __init__(self, db: Session) -> None:
        self._db = db
        self._sqlite = db.get_bind().dialect.name == "sqlite"

    def __enter__(self) -> None:
        if self._sqlite:
            self._db.execute(text("PRAGMA secure_delete = ON"))

    def __exit__(self, *_: object) -> None:
        if self._sqlite:
            self._db.execute(text("PRAGMA secure_delete = OFF"))


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


def shred_org(db: Session, org_id: str, vault: Vault | None = None) -> int:
    """Destroy every data key of an organisation (in the caller's transaction): its
    secrets can never be decrypted again from this database, nor from a backup taken
    afterwards (an older backup still needs the root key, which is not in the
    database). On SQLite the deleted bytes are overwritten. Returns keys destroyed."""
    with _secure_delete(db):
        gone = db.execute(delete(OrgKey).where(OrgKey.org_id == org_id))
    if vault is not None:
        vault.forget(org_id)
    return int(getattr(gone, "rowcount", 0) or 0)
