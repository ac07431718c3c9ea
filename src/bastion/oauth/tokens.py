"""Access tokens: JWTs (RFC 9068 `at+jwt`) signed with the instance signing keys.

Claims: `iss` (BASTION_PUBLIC_URL), `sub` (the service account), `aud` (the API,
`<BASTION_PUBLIC_URL>/v1`), `exp`, `iat`, `jti` (`oat_…`), `client_id`, `org`, and `scope`
when the token carries one (space-separated permission names).

`decode` accepts a token only when all of this holds: the header is exactly `EdDSA`
with a `kid` of the instance keys and type `at+jwt` (never `none`, never HMAC, never a
key the token brings); the signature verifies; `iss` and `aud` are ours; `exp` is in
the future and at most `MAX_LIFETIME` after `iat`; `iat` is not in the future (beyond
`SKEW`); every claim has its type and id prefix. A key replaced by a rotation verifies
only tokens issued before the rotation: so after a rotation the previous key works for
at most one token lifetime more (the overlap), whatever a token claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import Permission
from bastion.core.signing import InstanceSigner, SignatureRefused

TOKEN_TYPE = "at+jwt"  # noqa: S105 - the JWT `typ` of RFC 9068, not a credential
MAX_LIFETIME = 3600  # seconds; the configurable lifetime is at most this
SKEW = 60  # seconds of clock difference tolerated for `iat`


class TokenInvalid(Exception):
    """A token that is not a valid access token of this instance; `reason` is for the
    audit trail only (every refusal answers the same)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Audience:
    """Who issues and who accepts: the instance's public URL and its API."""

    issuer: str

    @property
    def audience(self) -> str:
        return f"{self.issuer}/v1"


@dataclass(frozen=True)
class AccessClaims:
    jti: str
    sub: str  # the service account
    org: str
    client_id: str
    iat: int
    exp: int
    iss: str
    aud: str
    scope: tuple[Permission, ...] | None  # None: the whole role of the service account

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)

    @property
    def scope_text(self) -> str | None:
        return " ".join(self.scope) if self.scope is not None else None


def issue(
    signer: InstanceSigner,
    where: Audience,
    *,
    service_account_id: str,
    org_id: str,
    client_id: str,
    scope: tuple[Permission, ...] | None,
    now: datetime,
    ttl: int,
) -> tuple[str, AccessClaims]:
    iat = int(now.timestamp())
    claims = AccessClaims(
        jti=new_id("oat"),
        sub=service_account_id,
        org=org_id,
        client_id=client_id,
        iat=iat,
        exp=iat + min(ttl, MAX_LIFETIME),
        iss=where.issuer,
        aud=where.audience,
        scope=scope,
    )
    payload: dict[str, Any] = {
        "iss": claims.iss,
        "sub": claims.sub,
        "aud": claims.aud,
        "exp": claims.exp,
        "iat": claims.iat,
        "jti": claims.jti,
        "client_id": claims.client_id,
        "org": claims.org,
    }
    if scope is not None:
        payload["scope"] = claims.scope_text
    token, _kid = signer.sign_jws(payload, TOKEN_TYPE)
    return token, claims


def _text(payload: dict[str, Any], name: str, prefix: str | None = None) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or (prefix and not has_prefix(value, prefix)):
        raise TokenInvalid(f"claim_{name}")
    return value


def _instant(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenInvalid(f"claim_{name}")
    return value


def parse_scope(text: str) -> tuple[Permission, ...] | None:
    """Space-separated permission names, in order, each once; None when any is unknown
    (or the text is not RFC 6749 §3.3 scope syntax)."""
    names = text.split(" ")
    if not text or any(not n for n in names):
        return None
    found: list[Permission] = []
    for name in names:
        try:
            permission = Permission(name)
        except ValueError:
            return None
        if permission not in found:
            found.append(permission)
    return tuple(found)


def decode(
    signer: InstanceSigner, where: Audience, token: str, now: datetime, *, verify_exp: bool = True
) -> AccessClaims:
    """The claims of a valid access token of this instance, or `TokenInvalid`. With
    `verify_exp=False` an expired token's claims are returned (revocation needs them)."""
    try:
        version, payload = signer.verify_jws(token, TOKEN_TYPE)
    except SignatureRefused as exc:
        raise TokenInvalid(exc.reason) from None
    iss = _text(payload, "iss")
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if iss != where.issuer:
        raise TokenInvalid("issuer")
    if where.audience not in audiences:
        raise TokenInvalid("audience")
    iat, exp = _instant(payload, "iat"), _instant(payload, "exp")
    current = int(now.timestamp())
    if iat > current + SKEW or exp <= iat or exp - iat > MAX_LIFETIME:
        raise TokenInvalid("lifetime")
    if verify_exp and exp <= current:
        raise TokenInvalid("expired")
    if "nbf" in payload and (_instant(payload, "nbf") > current + SKEW):
        raise TokenInvalid("not_yet_valid")
    replaced = signer.replaced_at(version)
    if replaced is not None and iat > int(replaced.timestamp()) + SKEW:
        raise TokenInvalid("key_replaced")  # a previous key signs nothing new
    scope: tuple[Permission, ...] | None = None
    if "scope" in payload:
        scope = parse_scope(_text(payload, "scope"))
        if scope is None:
            raise TokenInvalid("claim_scope")
    return AccessClaims(
        jti=_text(payload, "jti", "oat"),
        sub=_text(payload, "sub", "sa"),
        org=_text(payload, "org", "org"),
        client_id=_text(payload, "client_id", "oac"),
        iat=iat,
        exp=exp,
        iss=iss,
        aud=where.audience,
        scope=scope,
    )
