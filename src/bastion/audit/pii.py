"""Personal values in audit metadata that erasure can take out without breaking the
chain: the hash covers a hiding commitment, not the value.

An event about a person (its resource is a user) that names their email in its metadata
keeps the email readable in `metadata["email"]` and, beside it, under `metadata["_pii"]`,
the commitment `c = HMAC-SHA256(s, value)` with `s` 16 random bytes of its own (hex):

    {"email": "jane@example.com", "_pii": {"email": {"c": "<64 hex>", "s": "<32 hex>"}}}

The chain hashes the metadata *without* the values `_pii` lists and without their `s`
(`hashed`): `{"_pii": {"email": {"c": "…"}}}`. So the value is bound to its event by the
commitment (verification recomputes it while `s` is there: a value altered is found), and
erasure replaces the value by its pseudonym `pii_<first 16 hex digits of c>` and deletes
`s` (`erased`): the hashed bytes do not change, the chain still verifies, and nothing
left can bring the value back (without `s`, `c` cannot be tested against guesses).

Standard library only: the verification and export worker processes import it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

KEY = "_pii"
FIELDS = ("email",)  # metadata keys protected on events about a user
PSEUDONYM_PREFIX = "pii_"


def _commit(salt: bytes, value: str) -> str:
    return hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()


def pseudonym(commitment: str) -> str:
    return PSEUDONYM_PREFIX + commitment[:16]


def protect(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with each personal value of `FIELDS` (text) committed to (a new
    dict; the input as it is when it names none)."""
    found = {k: metadata[k] for k in FIELDS if type(metadata.get(k)) is str}
    if not found or KEY in metadata:
        return metadata
    entries: dict[str, Any] = {}
    for name, value in found.items():
        salt = os.urandom(16)
        entries[name] = {"c": _commit(salt, value), "s": salt.hex()}
    return {**metadata, KEY: entries}


def hashed(metadata: Any) -> Any:
    """What the chain hashes of `metadata`: itself, or without the values its `_pii`
    lists and their salts."""
    if type(metadata) is not dict:
        return metadata
    entries = metadata.get(KEY)
    if type(entries) is not dict:
        return metadata
    out = {k: v for k, v in metadata.items() if k not in entries}
    out[KEY] = {
        name: ({"c": entry.get("c")} if type(entry) is dict else entry)
        for name, entry in entries.items()
    }
    return out


def problem(metadata: Any) -> str | None:
    """Why the personal values of `metadata` do not match their commitments (None: they
    do, or it has none): a value kept with its salt must give its commitment, an erased
    one (no salt) must be its pseudonym."""
    if type(metadata) is not dict or KEY not in metadata:
        return None
    entries = metadata[KEY]
    if type(entries) is not dict:
        return "personal values malformed"
    for name, entry in entries.items():
        if type(entry) is not dict or type(entry.get("c")) is not str:
            return "personal values malformed"
        value, commitment, salt = metadata.get(name), entry["c"], entry.get("s")
        if salt is None:
            if value != pseudonym(commitment):
                return f"personal value {name!r} altered"
            continue
        try:
            key = bytes.fromhex(salt)
        except (TypeError, ValueError):
            return "personal values malformed"
        if type(value) is not str or not hmac.compare_digest(_commit(key, value), commitment):
            return f"personal value {name!r} altered"
    return None


def erased(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metadata with its personal values replaced by their pseudonyms and their
    salts deleted, or None when there is nothing (left) to erase."""
    entries = metadata.get(KEY)
    if type(entries) is not dict or not any(type(e) is dict and "s" in e for e in entries.values()):
        return None
    out = dict(metadata)
    kept: dict[str, Any] = {}
    for name, entry in entries.items():
        if type(entry) is dict and type(entry.get("c")) is str:
            out[name] = pseudonym(entry["c"])
            kept[name] = {"c": entry["c"]}
        else:
            kept[name] = entry
    out[KEY] = kept
    return out
