"""Versioned key files in the data directory (mode 0600), created by `bastion init`.

A keyring file is JSON: `{"active": 2, "versions": {"1": "<base64>", "2": "<base64>"}}`.
Old versions stay readable so rows hashed or wrapped under them keep working; new work
uses the active version.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from bastion.core.config import ConfigError, Settings, check_secret
from bastion.core.crypto import aead_decrypt, aead_encrypt, derive_key, random_bytes

PEPPER_FILE = "pepper.key"
ROOT_KEY_FILE = "root.key"
AUDIT_SIGNING_KEY_FILE = "audit-signing.key"  # Ed25519 seeds
KEY_BYTES = 32


@dataclass(frozen=True)
class Keyring:
    active: int
    versions: dict[int, bytes] = field(repr=False)

    def key(self, version: int | None = None) -> bytes:
        return self.versions[self.active if version is None else version]

    def __repr__(self) -> str:
        return f"Keyring(active={self.active}, versions={sorted(self.versions)})"


def _write_private(path: Path, payload: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(payload)


def create_keyring(path: Path) -> bool:
    """Create a keyring file with one random key. Returns False if it already exists."""
    if path.exists():
        return False
    key = base64.b64encode(random_bytes(KEY_BYTES)).decode()
    _write_private(path, json.dumps({"active": 1, "versions": {"1": key}}))
    return True


def rotate_keyring(path: Path) -> int:
    """Add a new random key version and make it active (atomically, mode 0600).
    Older versions stay, so what they protect still opens; returns the new version."""
    current = read_keyring(path)
    version = max(current.versions) + 1
    versions = {str(v): base64.b64encode(k).decode() for v, k in current.versions.items()}
    versions[str(version)] = base64.b64encode(random_bytes(KEY_BYTES)).decode()
    staging = path.with_suffix(".rotating")
    staging.unlink(missing_ok=True)
    _write_private(staging, json.dumps({"active": version, "versions": versions}))
    os.replace(staging, path)
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
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a valid keyring file") from None
    if active not in versions or any(len(k) < KEY_BYTES for k in versions.values()):
        raise ConfigError(f"{path} has no usable active key of {KEY_BYTES} bytes")
    return Keyring(active=active, versions=versions)


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
