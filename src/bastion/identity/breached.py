"""The offline breached-password check: a bundled list of common and breached passwords,
as sorted 64-bit SHA-1 prefixes (`data/breached-passwords.bin`, built by
`scripts/build_breached_list.py`; source and licence in docs/passwords.md).

Loaded once, on first use, into a set; no network at run time. The comparison is case
insensitive, and a password is also refused when what is left of it without the digits
and symbols around it is a listed password ("Password123!" is "password"), so the
usual decorations of a listed password do not get it through.
"""

from __future__ import annotations

import threading
from importlib import resources

from bastion.core.crypto import sha1_digest

PREFIX_BYTES = 8
_FILE = "breached-passwords.bin"
# A core shorter than this is not looked up on its own ("ab12345678" is not "ab").
_MIN_CORE = 6

_lock = threading.Lock()
_entries: frozenset[bytes] | None = None


def _load() -> frozenset[bytes]:
    global _entries  # noqa: PLW0603 - loaded once per process, on first use
    with _lock:
        if _entries is None:
            data = resources.files("bastion.identity").joinpath("data", _FILE).read_bytes()
            if not data or len(data) % PREFIX_BYTES:
                raise RuntimeError(f"{_FILE} is damaged: reinstall Bastion")
            _entries = frozenset(
                data[i : i + PREFIX_BYTES] for i in range(0, len(data), PREFIX_BYTES)
            )
        return _entries


def size() -> int:
    return len(_load())


def _listed(candidate: str) -> bool:
    return sha1_digest(candidate)[:PREFIX_BYTES] in _load()


def _core(password: str) -> str:
    """The password without the digits, spaces and symbols at either end."""
    start, end = 0, len(password)
    while start < end and not password[start].isalpha():
        start += 1
    while end > start and not password[end - 1].isalpha():
        end -= 1
    return password[start:end]


def is_breached(password: str) -> bool:
    lowered = password.lower()
    if _listed(lowered):
        return True
    core = _core(lowered)
    return len(core) >= _MIN_CORE and core != lowered and _listed(core)
