"""argon2id password hashing with rehash-on-verify; the one place passwords are touched."""

from __future__ import annotations

import contextlib

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.core.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 1024

_DUMMY_PASSWORD = "bastion-dummy-password-for-constant-time"  # noqa: S105 - not a credential

# RFC 9106 "second recommended" profile, sized for an interactive login; the settings
# (BASTION_ARGON2_*) may change it, and stored hashes are upgraded at the next sign-in.
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=2, type=Type.ID)
# Verified against when the email is unknown, so both failures cost the same time.
_dummy_hash = _hasher.hash(_DUMMY_PASSWORD)


def configure(time_cost: int, memory_kib: int, parallelism: int) -> None:
    global _hasher, _dummy_hash  # noqa: PLW0603 - process-wide hashing parameters
    params = (time_cost, memory_kib, parallelism)
    if params != (_hasher.time_cost, _hasher.memory_cost, _hasher.parallelism):
        _hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        _dummy_hash = _hasher.hash(_DUMMY_PASSWORD)


def check_policy(password: str, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput.field(field, f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput.field(field, f"must be at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, new_hash) — new_hash is set when the stored hash used old parameters."""
    if stored_hash is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash, password)
        return False, None
    try:
        _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _hasher.check_needs_rehash(stored_hash):
        return True, _hasher.hash(password)
    return True, None
