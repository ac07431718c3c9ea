"""A service account's OAuth client as the SDK's credential (client credentials grant,
RFC 6749 §4.4): the client fetches an access token when it first needs one, keeps it,
and fetches a new one shortly before it expires (or once after a 401: revoked)."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bastion.client._errors import AuthenticationError, from_response

TOKEN_PATH = "/v1/oauth/token"  # noqa: S105 - a path, not a credential


@dataclass
class ClientCredentials:
    """`ClientCredentials(client_id, client_secret, scope=None)`: pass as a client's
    `token`; every request then carries a current access token of the client's service
    account. `scope`: space-separated permission names (None: the client's default)."""

    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    renew_before: float = 60.0  # seconds before expiry a new token is fetched
    _token: str | None = field(default=None, repr=False, compare=False)
    _expires: float = field(default=0.0, repr=False, compare=False)  # time.monotonic()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def current(self) -> str | None:
        """The token held, while it is good for more than `renew_before` seconds."""
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires - self.renew_before:
                return self._token
            return None

    def forget(self) -> None:
        with self._lock:
            self._token = None

    def token_request(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(path, form, headers) of the token request, with `client_secret_basic`."""
        pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        headers = {
            "authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
            "accept": "application/json",
        }
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return TOKEN_PATH, form, headers

    def accept(self, status: int, body: Any, retry_after: str | None) -> str:
        """Keep the token of a token response, or raise its error (an `APIError` whose
        `code` is the OAuth error, e.g. `invalid_client`)."""
        if status != 200:
            raise from_response(status, body, retry_after)
        token = body.get("access_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        if not isinstance(token, str) or not isinstance(expires_in, int):
            raise AuthenticationError(status, "invalid_token_response", "", "", None, [], None)
        with self._lock:
            self._token = token
            self._expires = time.monotonic() + expires_in
        return token
