"""Talking to the provider: the authorization-code exchange (with the PKCE verifier),
refresh, and revocation. Every request goes through the SSRF guard (`GuardedTransport`:
internal addresses only when in `BASTION_OUTBOUND_ALLOW`, plain http:// only to
`BASTION_OUTBOUND_PLAINTEXT_ALLOW`), with a timeout and no redirects. Tokens and the
client secret are never logged, never put in an error: a failure carries the provider's
RFC 6749 `error` word at most."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bastion.core.clock import utcnow
from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.integrations.errors import ProviderError
from bastion.integrations.presets import PRESETS

MAX_BODY_BYTES = 256 * 1024
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Outbound:
    """The operator's outbound policy (from the settings)."""

    allow: Sequence[str]
    plaintext: Sequence[str]
    proxy: str | None = None
    timeout: float = TIMEOUT_SECONDS

    def client(self) -> httpx.Client:
        transport = GuardedTransport(self.allow, proxy=self.proxy, plaintext=self.plaintext)
        return httpx.Client(transport=transport, timeout=self.timeout, follow_redirects=False)


@dataclass(frozen=True)
class Client:
    """An integration's OAuth client at its provider."""

    provider: str
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str
    revoke_url: str | None


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None

    def sealed_form(self) -> bytes:
        return json.dumps({"a": self.access_token, "r": self.refresh_token}).encode()

    @staticmethod
    def from_sealed(value: bytes, expires_at: datetime | None) -> TokenSet:
        data = json.loads(value)
        return TokenSet(str(data["a"]), data.get("r"), expires_at)


def _basic(client_id: str, secret: str) -> str:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _authenticated(client: Client, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    headers = {"Accept": "application/json"}
    if PRESETS[client.provider].client_auth == "client_secret_post":
        form = {**form, "client_id": client.client_id, "client_secret": client.client_secret}
    else:
        headers["Authorization"] = _basic(client.client_id, client.client_secret)
    return form, headers


def _error_word(response: httpx.Response) -> str:
    """The provider's `error` code only (RFC 6749 §5.2), never its description."""
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error.replace("_", "").isalnum() and len(error) < 50:
        return error
    return f"http_{response.status_code}"


def _post(
    outbound: Outbound, url: str, form: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    try:
        with outbound.client() as http:
            return http.post(url, data=form, headers=headers)
    except OutboundRefused:
        raise ProviderError("provider_refused_by_policy", definitive=False) from None
    except httpx.HTTPError:
        raise ProviderError("provider_unreachable", definitive=False) from None


def _token_response(response: httpx.Response, previous_refresh: str | None) -> TokenSet:
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderError(f"provider_http_{response.status_code}", definitive=False)
    if response.status_code != 200:
        raise ProviderError(_error_word(response), definitive=True)
    if len(response.content) > MAX_BODY_BYTES:
        raise ProviderError("token_response_too_large", definitive=True)
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        raise ProviderError("token_response_not_json", definitive=True) from None
    if not isinstance(body, dict):
        raise ProviderError("token_response_not_json", definitive=True)
    if body.get("ok") is False or "error" in body:  # Slack and GitHub answer errors with 200
        raise ProviderError(_error_word(response), definitive=True)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError("token_response_incomplete", definitive=True)
    refresh = body.get("refresh_token")
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = utcnow() + timedelta(seconds=min(expires_in, 10 * 365 * 86400))
    # No new refresh token in the answer: the old one stays valid (no rotation).
    return TokenSet(access, refresh if isinstance(refresh, str) and refresh else previous_refresh,
                    expires_at)  # fmt: skip


def exchange_code(
    outbound: Outbound, client: Client, *, code: str, verifier: str, redirect_uri: str
) -> TokenSet:
    form, headers = _authenticated(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )
    return _token_response(_post(outbound, client.token_url, form, headers), None)


def refresh(outbound: Outbound, client: Client, refresh_token: str) -> TokenSet:
    form, headers = _authenticated(
        client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    return _token_response(_post(outbound, client.token_url, form, headers), refresh_token)


def revoke(outbound: Outbound, client: Client, tokens: TokenSet) -> bool:
    """Revoke the grant at the provider (the refresh token, which ends the grant, and the
    access token). True when the provider confirmed; False when it could not be asked
    or refused (the caller records that in the audit event and deletes anyway)."""
    if client.revoke_url is None:
        return False
    dialect = PRESETS[client.provider].revoke
    try:
        if dialect == "github":
            url = client.revoke_url.replace("{client_id}", quote(client.client_id, safe=""))
            with outbound.client() as http:
                response = http.request(
                    "DELETE",
                    url,
                    json={"access_token": tokens.access_token},
                    headers={
                        "Accept": "application/vnd.github+json",
                        "Authorization": _basic(client.client_id, client.client_secret),
                    },
                )
            return response.status_code in (200, 204)
        if dialect == "slack":
            with outbound.client() as http:
                response = http.post(client.revoke_url, data={"token": tokens.access_token})
            return response.status_code == 200
        ok = True
        pairs = [("refresh_token", tokens.refresh_token), ("access_token", tokens.access_token)]
        for hint, token in pairs:
            if token:
                form, headers = _authenticated(client, {"token": token, "token_type_hint": hint})
                ok = _post(outbound, client.revoke_url, form, headers).status_code == 200 and ok
        return ok
    except (OutboundRefused, httpx.HTTPError, ProviderError):
        return False
