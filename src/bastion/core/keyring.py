"""Versioned key files in the data directory (mode 0600), created by `bastion init`.

A keyring file is JSON: `{"active": 2, "versions": {"1": "<base64>", "2": "<base64>"},
"created": {"1": "<RFC 3339>", "2": "<RFC 3339>"}}` (`created` is absent from files
written before it was recorded). Old versions stay readable so rows hashed or wrapped
under them keep working; new work uses the active version. A running server follows
its key files (`LiveKeyring`): a version added or removed by `bastion keys …` in
another process is seen within `RECHECK_SECONDS`, without a restart.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.core.clock import rfc3339, utcnow
from bastion.core.config import ConfigError, Settings, check_secret
from bastion.core.crypto import aead_decrypt, aead_encrypt, derive_key, random_bytes

PEPPER_FILE = "pepper.key"
ROOT_KEY_FILE = "root.key"
AUDIT_SIGNING_KEY_FILE = "audit-signing.key"  # Ed25519 seeds
KEY_BYTES = 32
# How often a running process looks at a key file it follows (one stat; the file is
# read again only when it changed).
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Keyring:
    active: int
    versions: dict[int, bytes] = field(repr=False)
    created: dict[int, str] = field(default_factory=dict, compare=False)  # RFC 3339
    source: Path | None = field(default=None, compare=False)  # None: not from a file

    def key(self, version: int | None = None) -> bytes:
        return self.versions[self.active if version is None else version]

    def __repr__(self) -> str:
        return f"Keyring(active={self.active}, versions={sorted(self.versions)})"


def _write_private(path: Path, payload: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(payload)


def _payload(active: int, versions: dict[int, bytes], created: dict[int, str]) -> str:
    return json.dumps(
        {
            "active": active,
            "versions": {str(v): base64.b64encode(k).decode() for v, k in sorted(versions.items())},
            "created": {str(v): t for v, t in sorted(created.items()) if v in versions},
        }
    )


def create_keyring(path: Path) -> bool:
    """Create a keyring file with one random key. Returns False if it already exists."""
    if path.exists():
        return False
    _write_private(path, _payload(1, {1: random_bytes(KEY_BYTES)}, {1: rfc3339(utcnow()) or ""}))
    return True


def replace_keyring(
    path: Path, active: int, versions: dict[int, bytes], created: dict[int, str]
) -> None:
    """Write the keyring atomically (a reader sees the old file or the new one), mode
    0600 from the start."""
    staging = path.with_suffix(".staging")
    staging.unlink(missing_ok=True)
    _write_private(staging, _payload(active, versions, created))
    os.replace(staging, path)


def rotate_keyring(path: Path) -> int:
    """Add a new random key version and make it active (atomically, mode 0600).
    Older versions stay, so what they protect still opens; returns the new version."""
    current = read_keyring(path)
    version = max(current.versions) + 1
    versions = {**current.versions, version: random_bytes(KEY_BYTES)}
    created = {**current.created, version: rfc3339(utcnow()) or ""}
    replace_keyring(path, version, versions, created)
    return version


def read_keyring(path: Path) -> Keyring:
    if not path.exists():
        raise ConfigError(f"{path} is missing: run `bastion init` first")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} must not be readable by group or others (chmod 600)")
    try:
        raw = json.loads(path.read_text())
        versions = {int(v): base64.b64decode(k) for v, k in raw["versions"].items()}
        active = int(raw["active"])
        created = {int(v): str(t) for v, t in raw.get("created", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path} is not a valid keyring file") from None
    if active not in versions or any(len(k) < KEY_BYTES for k in versions.values()):
        raise ConfigError(f"{path} has no usable active key of {KEY_BYTES} bytes")
    return Keyring(active=active, versions=versions, created=created, source=path)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


class LiveKeyring:
    """A keyring that follows its file: another process may add a version (rotation)
    or remove one (retirement) while this one runs. The file is looked at (one stat)
    at most every `RECHECK_SECONDS`, or at once when asked, and read again only when it
    changed. A file that has gone missing or cannot be read keeps the keys last read."""

    def __init__(self, keys: Keyring) -> None:
        self._keys = keys
        self._stamp = _stamp(keys.source) if keys.source is not None else None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LiveKeyring({self._keys!r})"

    def current(self, *, recheck: bool = False) -> Keyring:
        source = self._keys.source
        if source is None:
            return self._keys
        now = time.monotonic()
        if not recheck and now - self._checked < RECHECK_SECONDS:
            return self._keys
        with self._lock:
            self._checked = now
            stamp = _stamp(source)
            if stamp is not None and stamp != self._stamp:
                try:
                    self._keys = read_keyring(source)
                    self._stamp = stamp
                except ConfigError:
                    pass  # keep serving with what was read last; looked at again later
        return self._keys


def load_pepper(settings: Settings) -> Keyring:
    """The API-key/session pepper: the env override if set, else the data-dir keyring."""
    if settings.pepper is not None:
        value = settings.pepper.get_secret_value()
        check_secret("BASTION_PEPPER", value)
        return Keyring(active=1, versions={1: value.encode()})
    return read_keyring(settings.data_dir / PEPPER_FILE)


def seal(keys: Keyring, purpose: str, plaintext: bytes, associated: bytes) -> tuple[int, bytes]:
    """Encrypt a small configuration secret (a destination's token, a signing secret)
    under a key derived from the active root key for `purpose`, bound to `associated`
    (e.g. org and row id) so it cannot be moved. Returns (key version, ciphertext)."""
    key = derive_key(keys.key(), purpose)
    return keys.active, aead_encrypt(key, plaintext, associated)


def unseal(
    keys: Keyring, purpose: str, version: int | None, blob: bytes, associated: bytes
) -> bytes:
    return aead_decrypt(derive_key(keys.key(version), purpose), blob, associated)
