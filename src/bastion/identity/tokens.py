"""Credential formats and their keyed hashes.

Every bearer credential is `<kind>_<row id>_<secret>`: the row id finds the row, the
secret is compared as HMAC-SHA256 under a pepper-derived key of its own purpose, in
constant time. A wrong secret and an unknown id give the same answer.

    bsk_key_01J…_<secret>   API key         (purpose "api_key")
    bss_ses_01J…_<secret>   session token   (purpose "session")
    bsu_inv_01J…_<secret>   setup token     (purpose "setup", single use)
    bsm_mfc_01J…_<secret>   mfa token       (purpose "bsm", single use, 5 minutes)
    bsr_pwr_01J…_<secret>   password reset  (purpose "bsr", single use, 30 minutes)
    bat_run_01J…_<secret>   agent run token (purpose "bat", one run, short-lived)
    bsp_sct_01J…_<secret>   SCIM token      (purpose "bsp", its org's `/scim/v2` only)
    boc_oac_01J…_<secret>   OAuth client secret (purpose "boc"; never a bearer credential:
                            it is exchanged at `/v1/oauth/token`, owned by `bastion.oauth`)

A bearer credential may also be a signed JWT (an OAuth access token, `looks_like_jwt`):
no row id, no pepper; the domain that issues them verifies them (see `credentials`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bastion.core.crypto import constant_time_equals, derive_key, hmac_sha256_hex, random_token
from bastion.core.ids import has_prefix
from bastion.core.keyring import Keyring, LiveKeyring


class TokenKind(StrEnum):
    API_KEY = "bsk"
    SESSION = "bss"
    SETUP = "bsu"
    PASSWORD_RESET = "bsr"  # noqa: S105 - a token prefix, not a credential
    AGENT_RUN = "bat"
    MFA = "bsm"
    SCIM = "bsp"
    OAUTH_CLIENT = "boc"


ROW_PREFIX = {
    TokenKind.API_KEY: "key",
    TokenKind.SESSION: "ses",
    TokenKind.SETUP: "inv",
    TokenKind.PASSWORD_RESET: "pwr",
    TokenKind.AGENT_RUN: "run",
    TokenKind.MFA: "mfc",
    TokenKind.SCIM: "sct",
    TokenKind.OAUTH_CLIENT: "oac",
}
_ID_LEN = 26


@dataclass(frozen=True)
class ParsedToken:
    kind: TokenKind
    row_id: str
    secret: str = ""

    def __repr__(self) -> str:
        return f"ParsedToken(kind={self.kind}, row_id={self.row_id})"


def parse(token: str) -> ParsedToken | None:
    """Split a bearer credential, or None when it is not one of ours."""
    kind_text, sep, rest = token.partition("_")
    if not sep:
        return None
    try:
        kind = TokenKind(kind_text)
    except ValueError:
        return None
    row_prefix = ROW_PREFIX.get(kind)
    if row_prefix is None:
        return None
    id_len = len(row_prefix) + 1 + _ID_LEN
    row_id, secret = rest[:id_len], rest[id_len + 1 :]
    if rest[id_len : id_len + 1] != "_" or not secret or not has_prefix(row_id, row_prefix):
        return None
    return ParsedToken(kind, row_id, secret)


_JWT_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MAX_JWT_LENGTH = 8192


def looks_like_jwt(token: str) -> bool:
    """A compact JWS shape: three base64url parts, the first a JSON object (`eyJ`). Only
    the shape: nothing is trusted until its signature and claims are verified."""
    if len(token) > MAX_JWT_LENGTH or not token.startswith("eyJ"):
        return False
    parts = token.split(".")
    return len(parts) == 3 and all(p and _JWT_ALPHABET.issuperset(p) for p in parts)


class TokenHasher:
    """Keyed hashes of credential secrets under the versioned pepper.

    A pepper read from its file is followed (`LiveKeyring`): after `bastion keys
    rotate-pepper` this process issues under the new version within a second, and
    verifies under any version still in the file; after `retire-pepper` the removed
    version verifies nothing, cached answers included."""

    def __init__(self, pepper: Keyring) -> None:
        self._live = LiveKeyring(pepper)
        self._derived_from = pepper
        self._keys: dict[tuple[str, int], bytes] = {}

    def __repr__(self) -> str:
        return "TokenHasher(<pepper hidden>)"

    def _pepper(self, *, recheck: bool = False) -> Keyring:
        pepper = self._live.current(recheck=recheck)
        if pepper is not self._derived_from:  # the file changed: derive afresh
            self._keys, self._derived_from = {}, pepper
        return pepper

    @property
    def active_version(self) -> int:
        return self._pepper().active

    def _key(self, pepper: Keyring, purpose: str, version: int) -> bytes:
        key = self._keys.get((purpose, version))
        if key is None:
            key = derive_key(pepper.key(version), f"token:{purpose}")
            self._keys[(purpose, version)] = key
        return key

    def digest(self, kind: TokenKind, secret: str, version: int | None = None) -> str:
        pepper = self._pepper()
        return hmac_sha256_hex(self._key(pepper, kind.value, version or pepper.active), secret)

    def matches(self, kind: TokenKind, secret: str, version: int, stored: str) -> bool:
        pepper = self._pepper()
        if version not in pepper.versions:  # perhaps added by another process just now
            pepper = self._pepper(recheck=True)
            if version not in pepper.versions:
                return False
        return constant_time_equals(
            hmac_sha256_hex(self._key(pepper, kind.value, version), secret), stored
        )

    def upgrade(self, kind: TokenKind, secret: str, version: int) -> tuple[str, int] | None:
        """For a secret that just matched under `version`: its digest under the active
        version, when that is another one (rehash on use), else None."""
        pepper = self._pepper()
        if version == pepper.active:
            return None
        return hmac_sha256_hex(self._key(pepper, kind.value, pepper.active), secret), pepper.active

    def keyed(self, purpose: str, value: str) -> tuple[str, int]:
        """A keyed hash of a value that is not a bearer credential (a recovery code),
        under the active version and a key of its own purpose: (digest, version)."""
        pepper = self._pepper()
        return hmac_sha256_hex(self._key(pepper, purpose, pepper.active), value), pepper.active

    def keyed_matches(self, purpose: str, value: str, version: int, stored: str) -> bool:
        pepper = self._pepper()
        if version not in pepper.versions:  # perhaps added by another process just now
            pepper = self._pepper(recheck=True)
            if version not in pepper.versions:
                return False
        return constant_time_equals(
            hmac_sha256_hex(self._key(pepper, purpose, version), value), stored
        )

    def issue(self, kind: TokenKind, row_id: str) -> tuple[str, str, int]:
        """A new credential for `row_id`: (token shown once, digest to store, pepper version)."""
        secret = random_token(32)
        pepper = self._pepper()
        version = pepper.active
        digest = hmac_sha256_hex(self._key(pepper, kind.value, version), secret)
        return f"{kind.value}_{row_id}_{secret}", digest, version
