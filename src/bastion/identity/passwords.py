"""argon2id password hashing with rehash-on-verify, and the policy new passwords obey;
the one place passwords are touched.

Policy (`check_policy`), for every new password (user creation, setup, change, reset):
at least the organisation's `min_length` characters (default 12) and at most 1024; no
context word in it (the organisation's name, the user's email local part and name, and
"bastion", compared case-insensitively; words shorter than 4 characters are ignored);
and, unless the organisation turned it off, not in the bundled breached list
(`bastion.identity.breached`). 422 `password_too_weak` / `password_breached`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.identity import breached
from bastion.identity.errors import PasswordBreached, PasswordTooWeak

MIN_LENGTH = 12  # the default; an organisation may ask for more, or down to FLOOR
FLOOR = 8
MAX_LENGTH = 1024
_ALWAYS_CONTEXT = ("bastion",)
_MIN_CONTEXT_WORD = 4
_WORDS = re.compile(r"[^\W_]+")

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


@dataclass(frozen=True)
class Policy:
    """An organisation's password policy (`password_policy` on the organisation)."""

    min_length: int = MIN_LENGTH
    breached_check: bool = True


def context_words(
    *, whole: Iterable[str | None] = (), split: Iterable[str | None] = ()
) -> tuple[str, ...]:
    """The words a password must not contain, lower-cased, 4 characters or longer:
    each of `whole` as it is (an email's local part), each of `split` as it is and word
    by word (split on anything but letters and digits: an organisation's or a person's
    name), and "bastion"."""
    found: dict[str, None] = dict.fromkeys(_ALWAYS_CONTEXT)
    candidates: list[str] = []
    for text in whole:
        if text:
            candidates.append(text.strip().lower())
    for text in split:
        if text:
            lowered = text.strip().lower()
            candidates.extend((lowered, *_WORDS.findall(lowered)))
    for word in candidates:
        if len(word) >= _MIN_CONTEXT_WORD:
            found.setdefault(word, None)
    return tuple(found)


def check_policy(
    password: str,
    field: str = "password",
    *,
    policy: Policy | None = None,
    context: Iterable[str] = _ALWAYS_CONTEXT,
) -> None:
    policy = policy or Policy()
    minimum = max(policy.min_length, FLOOR)
    if len(password) < minimum:
        raise PasswordTooWeak(field, f"must be at least {minimum} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordTooWeak(field, f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if any(word in lowered for word in context):
        raise PasswordTooWeak(
            field, "must not contain the organisation's name, your name or email, or 'bastion'"
        )
    if policy.breached_check and breached.is_breached(password):
        raise PasswordBreached(field)


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
