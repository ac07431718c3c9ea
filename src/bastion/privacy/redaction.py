"""Redaction modes: mask, replace, hash (keyed) and tokenize (reversible).

- mask: each character of the value becomes `*` (length kept, so layouts survive);
- replace: the value becomes `<TYPE>`;
- hash: `<TYPE:hex>`, HMAC-SHA256 of the value under the organisation's hash key, cut
  to 16 hex digits: equal values give equal hashes within an org, never across orgs;
- tokenize: `<TYPE_hex>`, AES-SIV (deterministic authenticated encryption) of the value
  under the organisation's token key with the type as associated data. Equal values
  give equal tokens; only a holder of the key (the vault) turns a token back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bastion.core import crypto
from bastion.privacy.types import EntityType, Finding


class Mode(StrEnum):
    HASH = "hash"
    MASK = "mask"
    REPLACE = "replace"
    TOKENIZE = "tokenize"


TOKEN = re.compile(r"<(" + "|".join(sorted(EntityType)) + r")_([0-9a-f]{34,})>")


class KeyRequired(ValueError):
    """`hash` and `tokenize` need the organisation's keys."""


class BadToken(ValueError):
    """A token this key did not make (another org's, or altered)."""


@dataclass(frozen=True)
class Redactor:
    """An organisation's redaction keys (from the vault; never logged)."""

    hash_key: bytes = field(repr=False)
    token_key: bytes = field(repr=False)  # 64 bytes: AES-256-SIV

    @classmethod
    def from_master(cls, master: bytes) -> Redactor:
        return cls(
            hash_key=crypto.derive_key(master, "privacy.hash"),
            token_key=crypto.derive_key(master, "privacy.tokenize", 64),
        )

    def hash(self, kind: EntityType, value: str) -> str:
        return f"<{kind}:{crypto.hmac_sha256_hex(self.hash_key, value)[:16]}>"

    def tokenize(self, kind: EntityType, value: str) -> str:
        blob = crypto.siv_encrypt(self.token_key, value.encode(), kind.encode())
        return f"<{kind}_{blob.hex()}>"

    def detokenize(self, kind: EntityType, hexdata: str) -> str:
        try:
            return crypto.siv_decrypt(
                self.token_key, bytes.fromhex(hexdata), kind.encode()
            ).decode()
        except (ValueError, crypto.InvalidTag) as exc:
            raise BadToken("not a token of this organisation") from exc


@dataclass(frozen=True)
class Redacted:
    text: str = field(repr=False)
    findings: list[Finding]


def redact_text(
    text: str, findings: Sequence[Finding], mode: Mode, redactor: Redactor | None = None
) -> Redacted:
    keyed: Callable[[EntityType, str], str] | None = None
    if mode in (Mode.HASH, Mode.TOKENIZE) and findings:  # nothing found: no key needed
        if redactor is None:
            raise KeyRequired(f"mode {mode} needs the organisation's keys")
        keyed = redactor.hash if mode is Mode.HASH else redactor.tokenize
    parts: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        value = text[f.start : f.end]
        parts.append(text[pos : f.start])
        if mode is Mode.MASK:
            parts.append("*" * len(value))
        elif mode is Mode.REPLACE:
            parts.append(f"<{f.type}>")
        elif keyed is not None:
            parts.append(keyed(f.type, value))
        pos = f.end
    parts.append(text[pos:])
    return Redacted("".join(parts), list(findings))


@dataclass(frozen=True)
class Restored:
    text: str = field(repr=False)
    restored: int
    types: dict[str, int]


def detokenize_text(text: str, redactor: Redactor) -> Restored:
    """Every token of this organisation turned back; others (and altered ones) left as
    they are, and counted out."""
    counts: dict[str, int] = {}

    def back(m: re.Match[str]) -> str:
        kind = EntityType(m.group(1))
        try:
            value = redactor.detokenize(kind, m.group(2))
        except BadToken:
            return m.group(0)
        counts[kind] = counts.get(kind, 0) + 1
        return value

    out = TOKEN.sub(back, text)
    return Restored(out, sum(counts.values()), counts)
