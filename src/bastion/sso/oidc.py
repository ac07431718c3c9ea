"""The OpenID Connect relying party: discovery, the provider's keys, the token request
and ID token validation (OpenID Connect Core 1.0 §3.1.3.7).

- Discovery from `{issuer}/.well-known/openid-configuration`; the document's `issuer`
  must equal the configured one exactly (no trailing-slash leniency).
- Keys (JWKS) are kept `sso_metadata_ttl` seconds; a token whose `kid` is unknown
  fetches them again (rotation), at most once per `sso_jwks_refetch_interval` seconds
  per provider, so forged kids cannot make Bastion hammer the provider.
- Accepted signature algorithms are named: RS256, ES256, EdDSA. Never `none`, never
  HMAC (an HS256 token "signed" with the provider's public key is refused by name).
- `iss` exact, `aud` contains the client id (`azp` equal to it when there are several
  audiences or `azp` is present), `exp`/`iat`/`nbf` with 2 minutes of skew, `nonce`
  equal (constant time), `at_hash` checked when present.
- Every request goes through the SSRF guard (`GuardedTransport`) with a timeout and no
  redirects; tokens are never logged nor put in errors.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.crypto import constant_time_equals, digest
from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.sso.errors import SsoFailure

ALGORITHMS = ("RS256", "ES256", "EdDSA")
_KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
_AT_HASH = {"RS256": "sha256", "ES256": "sha256", "EdDSA": "sha512"}
SKEW_SECONDS = 120
MAX_DOCUMENT_BYTES = 512 * 1024


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    code_challenge_methods: tuple[str, ...]


@dataclass(frozen=True)
class Claims:
    """What a valid ID token says about the person."""

    subject: str
    email: str | None
    email_verified: bool | None
    name: str | None
    groups: tuple[str, ...]
    amr: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False)


@dataclass
class _Keys:
    keys: KeySet
    fetched_at: float
    last_refetch: float


class RelyingParty:
    """One per process: caches discovery documents and key sets by URL."""

    def __init__(self, settings: Settings) -> None:
        self._allow = tuple(settings.outbound_allow)
        self._plaintext = tuple(settings.outbound_plaintext_allow)
        self._proxy = settings.proxy_url
        self._timeout = settings.sso_http_timeout
        self._ttl = settings.sso_metadata_ttl
        self._refetch = settings.sso_jwks_refetch_interval
        self._lock = threading.Lock()
        self._metadata: dict[str, tuple[ProviderMetadata, float]] = {}
        self._keys: dict[str, _Keys] = {}

    def __repr__(self) -> str:
        return "RelyingParty()"

    def _client(self) -> httpx.Client:
        return httpx.Client(
            transport=GuardedTransport(self._allow, proxy=self._proxy, plaintext=self._plaintext),
            timeout=self._timeout,
            follow_redirects=False,
        )

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._client() as client:
                response = client.get(url, headers={"Accept": "application/json"})
        except OutboundRefused as exc:
            raise SsoFailure("provider_unreachable", f"{what}: {exc.reason}") from None
        except httpx.HTTPError as exc:
            raise SsoFailure("provider_unreachable", f"{what}: {type(exc).__name__}") from None
        return _json_body(response, what)

    # --- discovery and keys -----------------------------------------------------------

    def metadata(self, issuer: str) -> ProviderMetadata:
        now = time.monotonic()
        with self._lock:
            cached = self._metadata.get(issuer)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = self._get_json(url, "discovery")
        if doc.get("issuer") != issuer:
            raise SsoFailure("issuer_mismatch", "the discovery document names another issuer")
        try:
            found = ProviderMetadata(
                issuer=issuer,
                authorization_endpoint=_url(doc["authorization_endpoint"]),
                token_endpoint=_url(doc["token_endpoint"]),
                jwks_uri=_url(doc["jwks_uri"]),
                userinfo_endpoint=_url(doc["userinfo_endpoint"])
                if doc.get("userinfo_endpoint")
                else None,
                token_auth_methods=tuple(
                    doc.get("token_endpoint_auth_methods_supported") or ("client_secret_basic",)
                ),
                code_challenge_methods=tuple(doc.get("code_challenge_methods_supported") or ()),
            )
        except (KeyError, TypeError, ValueError):
            raise SsoFailure("provider_invalid", "discovery document incomplete") from None
        with self._lock:
            self._metadata[issuer] = (found, now)
        return found

    def _key_set(self, jwks_uri: str, *, refresh: bool) -> KeySet:
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(jwks_uri)
            if cached is not None:
                fresh = now - cached.fetched_at < self._ttl
                if not refresh and fresh:
                    return cached.keys
                if refresh and now - cached.last_refetch < self._refetch:
                    return cached.keys  # rate-limited: an unknown kid stays unknown
        doc = self._get_json(jwks_uri, "jwks")
        usable = [
            k
            for k in doc.get("keys", [])
            if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP") and "d" not in k
            and k.get("use", "sig") == "sig"
        ]  # fmt: skip
        try:
            keys = KeySet.import_key_set({"keys": usable})
        except (JoseError, ValueError, TypeError):
            raise SsoFailure("provider_invalid", "jwks could not be read") from None
        with self._lock:
            self._keys[jwks_uri] = _Keys(keys, now, now)
        return keys

    # --- the code flow ------------------------------------------------------------------

    def exchange_code(
        self,
        provider: ProviderMetadata,
        *,
        code: str,
        redirect_uri: str,
        client_id: str,
        client_secret: str | None,
        code_verifier: str,
    ) -> dict[str, Any]:
        """The token response (`id_token`, `access_token` …). Client authentication:
        client_secret_basic unless the provider supports only client_secret_post."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        methods = provider.token_auth_methods
        if client_secret is None:
            form["client_id"] = client_id
        elif "client_secret_basic" in methods or "client_secret_post" not in methods:
            headers["Authorization"] = _basic(client_id, client_secret)
        else:
            form["client_id"], form["client_secret"] = client_id, client_secret
        try:
            with self._client() as client:
                response = client.post(provider.token_endpoint, data=form, headers=headers)
        except OutboundRefused as exc:
            raise SsoFailure("provider_unreachable", f"token: {exc.reason}") from None
        except httpx.HTTPError as exc:
            raise SsoFailure("provider_unreachable", f"token: {type(exc).__name__}") from None
        if response.status_code != 200:
            error = _error_word(response)
            raise SsoFailure("token_request_failed", f"token endpoint: {error}")
        return _json_body(response, "token")

    def userinfo(self, provider: ProviderMetadata, access_token: str) -> dict[str, Any]:
        if provider.userinfo_endpoint is None:
            return {}
        try:
            with self._client() as client:
                response = client.get(
                    provider.userinfo_endpoint,
                    headers={
                        "Authorization": f"Bearer {access_token}",
                        "Accept": "application/json",
                    },
                )
        except (OutboundRefused, httpx.HTTPError):
            raise SsoFailure("provider_unreachable", "userinfo unreachable") from None
        if response.status_code != 200:
            raise SsoFailure("provider_invalid", f"userinfo: HTTP {response.status_code}")
        return _json_body(response, "userinfo")

    # --- the ID token ---------------------------------------------------------------------

    def validate_id_token(
        self,
        provider: ProviderMetadata,
        id_token: str,
        *,
        client_id: str,
        nonce: str,
        access_token: str | None,
        groups_attribute: str | None,
        now: float | None = None,
    ) -> Claims:
        try:
            compact = jws.extract_compact(id_token.encode())
        except (JoseError, ValueError, UnicodeError):
            raise SsoFailure("token_invalid", "id_token is not a compact JWS") from None
        header = compact.protected
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise SsoFailure("token_invalid", f"id_token algorithm not accepted: {str(alg)[:20]}")
        kid = header.get("kid")
        candidates = self._candidates(provider.jwks_uri, alg, kid, refresh=False)
        if not candidates and kid is not None:
            candidates = self._candidates(provider.jwks_uri, alg, kid, refresh=True)
        if not candidates:
            raise SsoFailure("token_invalid", "no provider key for the id_token")
        claims = None
        for key in candidates:
            try:
                claims = jwt.decode(id_token, key, algorithms=[alg]).claims
                break
            except (JoseError, ValueError):
                continue
        if claims is None:
            raise SsoFailure("token_invalid", "id_token signature does not verify")
        _check_claims(claims, provider.issuer, client_id, nonce, now or utcnow().timestamp())
        if "at_hash" in claims and access_token is not None:
            expected = _half_hash(_AT_HASH[alg], access_token)
            if not constant_time_equals(str(claims["at_hash"]), expected):
                raise SsoFailure("token_invalid", "at_hash does not match the access token")
        return _claims_of(claims, groups_attribute)

    def _candidates(
        self, jwks_uri: str, alg: str, kid: Any, *, refresh: bool
    ) -> list[RSAKey | ECKey | OKPKey]:
        keys = self._key_set(jwks_uri, refresh=refresh)
        found: list[RSAKey | ECKey | OKPKey] = []
        for key in keys.keys:
            if key.key_type != _KEY_TYPES[alg]:
                continue
            if kid is not None and key.kid != kid:
                continue
            key_alg = key.get("alg")
            if key_alg is not None and key_alg != alg:
                continue
            if isinstance(key, RSAKey | ECKey | OKPKey):
                found.append(key)
        return found


def _check_claims(
    claims: dict[str, Any], issuer: str, client_id: str, nonce: str, now: float
) -> None:
    if claims.get("iss") != issuer:
        raise SsoFailure("issuer_mismatch", "id_token issuer differs from the connection's")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise SsoFailure("audience_mismatch", "id_token is not for this client")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise SsoFailure("audience_mismatch", "id_token azp is not this client")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise SsoFailure("token_invalid", "id_token lacks exp or iat")
    if isinstance(exp, bool) or isinstance(iat, bool):
        raise SsoFailure("token_invalid", "id_token exp or iat is not a number")
    if now > float(exp) + SKEW_SECONDS:
        raise SsoFailure("token_expired", "id_token expired")
    if float(iat) > now + SKEW_SECONDS:
        raise SsoFailure("token_invalid", "id_token issued in the future")
    if nbf is not None and (not _number(nbf) or float(nbf) > now + SKEW_SECONDS):
        raise SsoFailure("token_invalid", "id_token not valid yet")
    got = claims.get("nonce")
    if not isinstance(got, str) or not constant_time_equals(got, nonce):
        raise SsoFailure("nonce_mismatch", "id_token nonce differs from the sign-in's")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise SsoFailure("token_invalid", "id_token lacks sub")


def _claims_of(claims: dict[str, Any], groups_attribute: str | None) -> Claims:
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(verified, str):  # some providers send "true"/"false"
        verified = {"true": True, "false": False}.get(verified.lower())
    groups = _groups(claims.get(groups_attribute)) if groups_attribute else ()
    amr = claims.get("amr")
    name = claims.get("name")
    return Claims(
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) else None,
        email_verified=verified if isinstance(verified, bool) else None,
        name=name[:200] if isinstance(name, str) else None,
        groups=groups,
        amr=tuple(a for a in amr if isinstance(a, str)) if isinstance(amr, list) else (),
        raw=claims,
    )


def merge_userinfo(claims: Claims, info: dict[str, Any], groups_attribute: str | None) -> Claims:
    """Fill in what the ID token left out from userinfo, whose `sub` must be the same."""
    if info.get("sub") != claims.subject:
        raise SsoFailure("token_invalid", "userinfo sub differs from the id_token's")
    merged = {**info, **claims.raw}
    return _claims_of(merged, groups_attribute)


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))[:1000]
    return ()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _half_hash(name: str, value: str) -> str:
    full = digest(name, value.encode("ascii", "replace"))
    return base64.urlsafe_b64encode(full[: len(full) // 2]).rstrip(b"=").decode()


def _basic(client_id: str, secret: str) -> str:
    from urllib.parse import quote

    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError("not a URL")
    return value


def _json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise SsoFailure("provider_invalid", f"{what}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise SsoFailure("provider_invalid", f"{what}: response too large")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise SsoFailure("provider_invalid", f"{what}: not JSON") from None
    if not isinstance(body, dict):
        raise SsoFailure("provider_invalid", f"{what}: not a JSON object")
    return body


def _error_word(response: httpx.Response) -> str:
    """The provider's `error` code only (RFC 6749 §5.2), never its description."""
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error.replace("_", "").isalnum() and len(error) < 50:
        return error
    return f"HTTP {response.status_code}"
