"""Envelope encryption: root key → per-organisation data key → secret values.

- The root key is versioned and held by a `KeyProvider`. Built in: the local keyring
  file (`root.key` in the data dir, mode 0600); the interface is what a KMS or Vault
  Transit provider (or a customer-managed key per organisation) implements.
- Each organisation has its own 256-bit data key, stored only wrapped (AES-256-GCM under
  a key derived from the root key version that wrapped it, bound to org and version).
- Each secret version is AES-256-GCM under the org's data key with a random 96-bit nonce
  and associated data binding org, secret and version: a ciphertext copied to another
  row or organisation does not decrypt.
- Unwrapped data keys are cached in memory for a short time, and each organisation's
  active data-key version for a few seconds; nothing decrypted is written to disk or
  logs. A secret version holds the data key it names by foreign key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from sqlalchemy import Select, bindparam, delete, event, func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.core.clock import utcnow
from bastion.core.crypto import (
    Aead,
    aead_decrypt,
    aead_encrypt,
    aes256_gcm,
    derive_key,
    random_bytes,
)
from bastion.core.keyring import Keyring, read_keyring
from bastion.secrets.cmk import CUSTOMER_WRAPPED, CustomerKeyring, ProviderPolicy, root_key_aad
from bastion.secrets.errors import DataKeyChanged, SecretUnreadable
from bastion.secrets.models import OrgEncryptionKey, OrgKey, SecretVersion

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

Opener = Callable[[bytes, bytes, bytes], bytes]  # AESGCM.decrypt(nonce, ct_and_tag, aad)
_monotonic = time.monotonic

DATA_KEY_TTL_SECONDS = 60.0
# How long a worker writes under the active data-key version it last read, and how old
# a rotation must be before its older keys are destroyed: longer than any cached copy
# lives, with room for a slow rotation commit and modest clock skew between replicas.
ACTIVE_VERSION_TTL_SECONDS = 5.0
DESTROY_AFTER_SECONDS = 3 * ACTIVE_VERSION_TTL_SECONDS
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


# The newest data-key version, read when the cached one is missing or too old.
_NEWEST_KEY = (
    select(OrgKey.version)
    .where(OrgKey.org_id == bindparam("org_id"))
    .order_by(OrgKey.version.desc())
    .limit(1)
)
# Keys created by a transaction not yet committed, per session (`Session.info`): used
# by that transaction only, cached for everyone once it commits, dropped if it rolls back.
_PENDING = "bastion.vault.pending_keys"
_LISTENING = "bastion.vault.listening"


_key_aad = root_key_aad  # the associated data of a root-wrapped data key


def value_aad(org_id: str, secret_id: str, version: int) -> bytes:
    return f"secret|{org_id}|{secret_id}|{version}".encode()


class Vault:
    """Data keys per organisation, created on first use and cached briefly as ready
    AES-GCM ciphers (a reveal that hits the cache does no database read for the key),
    and each organisation's active data-key version, cached for `active_ttl` seconds
    (a write that hits it does no database read at all).

    A write under a cached active version that a rotation elsewhere has since replaced
    is still sound: the older key stays until re-encryption has moved every row off it,
    and the database refuses to delete a key a row still names (foreign key), so the
    row either keeps its key or the write fails (`DataKeyChanged`, retryable). Older keys
    are destroyed only once the rotation is older than `DESTROY_AFTER_SECONDS`, longer
    than any worker keeps the old version cached, so that failure needs a clock skew."""

    def __init__(
        self,
        provider: KeyProvider,
        ttl: float = DATA_KEY_TTL_SECONDS,
        active_ttl: float = ACTIVE_VERSION_TTL_SECONDS,
        policy: ProviderPolicy | None = None,
    ) -> None:
        self.provider = provider
        self._ttl = ttl
        self.active_ttl = active_ttl
        # Organisations' own keys (`bastion.secrets.cmk`): their data keys are cached
        # here too, but each entry lives only `customer.recheck` seconds before the
        # organisation's generation is read again (the key itself is held up to `ttl`).
        self.customer = CustomerKeyring(provider, policy or ProviderPolicy(), ttl)
        self._customer_orgs: set[str] = set()
        # (org, version) -> (expires, key, AESGCM): every cached data key;
        # org -> (expires, version, AESGCM.decrypt): the org's last cached data key, so a
        # reveal finds it with one lookup on the org id (no tuple key to build and hash);
        # org -> (expires, version, AESGCM): the org's active version, for writes.
        self._cache: dict[tuple[str, int], tuple[float, bytes, AESGCM]] = {}
        self._recent: dict[str, tuple[float, int, Opener]] = {}
        self._active: dict[str, tuple[float, int, AESGCM]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vault({self.provider!r})"

    def _cached(self, org_id: str, version: int) -> tuple[bytes, AESGCM] | None:
        hit = self._cache.get((org_id, version))  # a dict read is atomic under the GIL
        if hit is not None and hit[0] >= _monotonic():
            return hit[1], hit[2]
        if hit is not None:
            with self._lock:
                self._cache.pop((org_id, version), None)
        return None

    def _remember(self, org_id: str, version: int, key: bytes) -> AESGCM:
        cipher = aes256_gcm(key)
        customer = org_id in self._customer_orgs
        expires = _monotonic() + (self.customer.recheck if customer else self._ttl)
        with self._lock:
            self._cache[(org_id, version)] = (expires, key, cipher)
            self._recent[org_id] = (expires, version, cipher.decrypt)
        return cipher

    def forget(self, org_id: str | None = None) -> None:
        """Drop cached data keys and active versions (all, or one organisation's)."""
        with self._lock:
            for cached in [k for k in self._cache if org_id is None or k[0] == org_id]:
                del self._cache[cached]
            if org_id is None:
                self._recent.clear()
                self._active.clear()
            else:
                self._recent.pop(org_id, None)
                self._active.pop(org_id, None)
        self.customer.forget(org_id)

    def forget_version(self, org_id: str, version: int) -> None:
        with self._lock:
            self._cache.pop((org_id, version), None)
            for by_org in (self._recent, self._active):
                entry = by_org.get(org_id)
                if entry is not None and entry[1] == version:
                    del by_org[org_id]

    def forget_active(self, org_id: str) -> None:
        """Drop the cached active version: the next write reads the newest one."""
        with self._lock:
            self._active.pop(org_id, None)

    def _load(self, db: Session, org_id: str, version: int) -> tuple[bytes, AESGCM]:
        cached = self._cached(org_id, version)
        if cached is not None:
            return cached
        pending = db.info.get(_PENDING)
        if pending and (org_id, version) in pending:
            key = pending[(org_id, version)]
            return key, aes256_gcm(key)
        row = db.get(OrgKey, (org_id, version))
        if row is None:
            raise SecretUnreadable("data_key_destroyed")
        if row.root_version == CUSTOMER_WRAPPED:
            key = self.customer.unwrap(db, org_id, version, row.wrapped)
            self._customer_orgs.add(org_id)
        else:
            key = self.provider.unwrap(row.root_version, row.wrapped, _key_aad(org_id, version))
        return key, self._remember(org_id, version, key)

    def data_key(self, db: Session, org_id: str, version: int) -> bytes:
        """The unwrapped data key; `SecretUnreadable("data_key_destroyed")` when gone."""
        return self._load(db, org_id, version)[0]

    def cipher(self, db: Session, org_id: str, version: int) -> Aead:
        return Aead(self._load(db, org_id, version)[0])

    def _create(self, db: Session, org_id: str, version: int) -> AESGCM:
        """Add data-key version `version` in the caller's transaction. It is shared with
        other transactions (cached) only once this one commits: a rolled-back key must
        never be used, nor confused with the same version created by someone else."""
        key = random_bytes(32)
        by_customer = self.customer.wrap(db, org_id, version, key)
        if by_customer is not None:
            self._customer_orgs.add(org_id)
            root_version, wrapped = CUSTOMER_WRAPPED, by_customer
        else:
            root_version, wrapped = self.provider.wrap(key, _key_aad(org_id, version))
        db.add(OrgKey(org_id=org_id, version=version, wrapped=wrapped, root_version=root_version))
        db.flush()
        if _LISTENING not in db.info:
            db.info[_LISTENING] = True
            event.listen(db, "after_commit", self._on_commit)
            event.listen(db, "after_soft_rollback", _on_rollback)
        db.info.setdefault(_PENDING, {})[(org_id, version)] = key
        return aes256_gcm(key)

    def _on_commit(self, db: Session) -> None:
        pending: dict[tuple[str, int], bytes] | None = db.info.pop(_PENDING, None)
        if not pending:
            return
        newest: dict[str, int] = {}
        for (org_id, version), key in pending.items():
            if org_id in self._customer_orgs:
                self.customer.hold(org_id, version, key)
            self._remember(org_id, version, key)
            newest[org_id] = max(version, newest.get(org_id, 0))
        for org_id, version in newest.items():
            self._set_active(org_id, version, self._cache[(org_id, version)][2])

    def _set_active(self, org_id: str, version: int, cipher: AESGCM) -> None:
        ttl = self.active_ttl
        if org_id in self._customer_orgs:
            ttl = min(ttl, self.customer.recheck)
        with self._lock:
            self._active[org_id] = (_monotonic() + ttl, version, cipher)

    def _newest(self, db: Session, org_id: str) -> tuple[int, AESGCM]:
        """The org's newest data key, read from the database (created on first use)."""
        version = db.execute(_NEWEST_KEY, {"org_id": org_id}).scalar()
        if version is None:
            try:
                with db.begin_nested():
                    cipher = self._create(db, org_id, 1)
                return 1, cipher
            except IntegrityError:
                # Another transaction created the organisation's first key meanwhile
                # (PostgreSQL: this insert waited for it to commit): use that one.
                version = db.execute(_NEWEST_KEY, {"org_id": org_id}).scalar()
                if version is None:
                    raise
        version = int(version)
        pending = db.info.get(_PENDING)
        if pending and (org_id, version) in pending:  # created by this transaction
            return version, aes256_gcm(pending[(org_id, version)])
        cipher = self._load(db, org_id, version)[1]
        self._set_active(org_id, version, cipher)
        return version, cipher

    def active_version(self, db: Session, org_id: str) -> int:
        """The version new writes use (cached for up to `active_ttl` seconds)."""
        hit = self._active.get(org_id)
        if hit is not None and hit[0] >= _monotonic():
            return hit[1]
        return self._newest(db, org_id)[0]

    def active_key(self, db: Session, org_id: str) -> tuple[int, bytes]:
        version = self.active_version(db, org_id)
        return version, self.data_key(db, org_id, version)

    def rotate(self, db: Session, org_id: str) -> int:
        """Add data-key version N+1 (wrapped by the active root-key version). New writes
        in this process use it as soon as the transaction commits, in other processes
        within `active_ttl` seconds; older secret versions keep reading under the key
        they name until `reencrypt_batch` moves them. Two concurrent rotations conflict
        on the primary key (one of them fails), never both win."""
        current = db.execute(
            select(func.max(OrgKey.version)).where(OrgKey.org_id == org_id)
        ).scalar()
        version = int(current or 0) + 1
        self._create(db, org_id, version)
        return version

    def encrypt(
        self, db: Session, org_id: str, secret_id: str, version: int, value: bytes
    ) -> tuple[int, bytes]:
        """AES-256-GCM under the org's active data key: (key version, nonce || ct+tag).
        Store it with `add_version`, which turns a key destroyed meanwhile into
        `DataKeyChanged`."""
        hit = self._active.get(org_id)
        if hit is not None and hit[0] >= _monotonic():
            key_version, cipher = hit[1], hit[2]
        else:
            key_version, cipher = self._newest(db, org_id)
        nonce = random_bytes(12)
        aad = f"secret|{org_id}|{secret_id}|{version}".encode()  # value_aad, inlined
        return key_version, nonce + cipher.encrypt(nonce, value, aad)

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
        hit = self._recent.get(org_id)
        if hit is not None and hit[1] == key_version and hit[0] >= _monotonic():
            open_ = hit[2]
        else:
            open_ = self._load(db, org_id, key_version)[1].decrypt
        try:  # value_aad, inlined
            return open_(blob[:12], blob[12:], f"secret|{org_id}|{secret_id}|{version}".encode())
        except (InvalidTag, ValueError):
            raise SecretUnreadable("authentication_failed") from None


def _on_rollback(db: Session, _previous: object) -> None:
    """Keys created by a transaction that rolled back never existed. (A savepoint's
    rollback drops them all too: a key the outer transaction keeps is then read back
    from the database, and cached, when next needed, which is early only if that outer
    transaction later rolls back as well.)"""
    db.info.pop(_PENDING, None)


def add_version(
    db: Session, vault: Vault, org_id: str, secret_id: str, version: int, value: bytes
) -> SecretVersion:
    """Encrypt `value` as version `version` of the secret and store it (flushed now).
    If the data key it was encrypted under has been destroyed meanwhile (this worker's
    cached active version was stale past a finished re-encryption), the database refuses
    the row: the cached version is dropped and `DataKeyChanged` (503, retry) raised, so
    the caller's transaction rolls back and the retry uses the newest key."""
    key_version, blob = vault.encrypt(db, org_id, secret_id, version, value)
    row = SecretVersion(
        secret_id=secret_id,
        version=version,
        org_id=org_id,
        ciphertext=blob,
        key_version=key_version,
    )
    db.add(row)
    try:
        db.flush()
    except IntegrityError as exc:
        if not _key_missing(exc):
            raise
        vault.forget_active(org_id)
        raise DataKeyChanged() from None
    return row


def _key_missing(exc: IntegrityError) -> bool:
    """Whether a flush failed on the secret version's data-key foreign key. PostgreSQL
    names the constraint; SQLite only says a foreign key failed, and there the others a
    version insert could break (its secret, the secret's organisation) cannot: writers
    are serialised and organisations are never deleted, only marked deleted."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == _KEY_FK
    return "FOREIGN KEY constraint failed" in str(exc.orig)


_KEY_FK = "fk_secret_versions_org_id_org_keys"


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
    """Secret versions of `org_id` encrypted under a data key older than `active` (the
    versions' (org_id, key_version) index)."""
    return select(SecretVersion.secret_id, SecretVersion.version, SecretVersion.key_version).where(
        SecretVersion.org_id == org_id, SecretVersion.key_version < active
    )


def key_state(db: Session, org_id: str) -> KeyState:
    versions = sorted(db.execute(select(OrgKey.version).where(OrgKey.org_id == org_id)).scalars())
    total = db.execute(
        select(func.count()).select_from(SecretVersion).where(SecretVersion.org_id == org_id)
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


def settling_seconds(db: Session, org_id: str, active: int) -> float:
    """How long until the rotation to data-key version `active` is old enough for the
    older keys to be destroyed (0 when it is; `DESTROY_AFTER_SECONDS` is read at each
    call). Measured on the `created_at` of the key, from this process's clock."""
    rotated = db.execute(
        select(OrgKey.created_at).where(OrgKey.org_id == org_id, OrgKey.version == active)
    ).scalar()
    if rotated is None:
        return 0.0
    age = (utcnow() - rotated).total_seconds()
    return max(0.0, DESTROY_AFTER_SECONDS - age)


def destroy_older_keys(db: Session, vault: Vault, org_id: str, active: int) -> list[int]:
    """Destroy the org's data keys older than `active`, in the caller's transaction;
    returns the versions destroyed. [] while the rotation to `active` is younger than
    `DESTROY_AFTER_SECONDS` (a worker may still write under its cached older version: a
    later pass does it), or when another worker destroyed them first.

    The database decides whether a key is still used: a secret version names its key
    by foreign key, so the DELETE fails while any row needs an older key, and
    `KeysStillInUse` tells the caller to roll back and try on a later pass. On
    PostgreSQL a concurrent write holds the key row it inserts under (the foreign-key
    check's share lock) until it commits, so the DELETE waits for it and then fails,
    and a write arriving after the DELETE waits and then fails (`DataKeyChanged`).
    SQLite serialises writers and overwrites the deleted bytes (secure_delete)."""
    if settling_seconds(db, org_id, active) > 0:
        return []
    older = list(
        db.execute(
            select(OrgKey.version).where(OrgKey.org_id == org_id, OrgKey.version < active)
        ).scalars()
    )
    if not older:
        return []
    try:
        with _secure_delete(db):
            gone = db.execute(
                delete(OrgKey).where(OrgKey.org_id == org_id, OrgKey.version.in_(older))
            )
    except IntegrityError:
        raise KeysStillInUse() from None
    if not getattr(gone, "rowcount", 0):
        return []
    for version in older:
        vault.forget_version(org_id, version)
    return sorted(older)


class KeysStillInUse(Exception):
    """Raised by `destroy_older_keys` when a secret version still uses an older key;
    the caller rolls its transaction back."""

    def __init__(self) -> None:
        super().__init__("a secret version still uses an older data key")


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
                select(OrgKey.org_id, OrgKey.version).where(
                    OrgKey.root_version != active, OrgKey.root_version != CUSTOMER_WRAPPED
                )
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
    # The sealed configurations of customer-managed keys are under the root key too.
    with sessions() as db:
        configs = list(
            db.execute(
                select(OrgEncryptionKey.org_id).where(
                    OrgEncryptionKey.config_root_version != active
                )
            ).scalars()
        )
    for org_id in configs:
        with sessions() as db:
            found = db.get(OrgEncryptionKey, org_id)
            if found is not None and found.config_root_version != active:
                aad = f"org-encryption-key-config|{org_id}".encode()
                plain = provider.unwrap(found.config_root_version, found.config_sealed, aad)
                found.config_root_version, found.config_sealed = provider.wrap(plain, aad)
                db.commit()
    return done


def shred_org(db: Session, org_id: str, vault: Vault | None = None) -> int:
    """Crypto-shredding (in the caller's transaction): delete every secret version of an
    organisation, then every data key (the versions hold their keys by foreign key).
    Nothing of its secrets can be decrypted from this database again, nor from a backup
    taken afterwards (an older backup still needs the root key, which is not in the
    database). On SQLite the deleted bytes are overwritten. Returns keys destroyed."""
    with _secure_delete(db):
        db.execute(delete(SecretVersion).where(SecretVersion.org_id == org_id))
        gone = db.execute(delete(OrgKey).where(OrgKey.org_id == org_id))
    if vault is not None:
        vault.forget(org_id)
    return int(getattr(gone, "rowcount", 0) or 0)
