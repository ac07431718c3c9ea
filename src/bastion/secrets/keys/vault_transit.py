"""Vault / OpenBao Transit: the customer's key is a Transit key (`aes256-gcm96`, the
default); Bastion holds a token allowed `encrypt`, `decrypt` and `rewrap` on it.

Every call is one HTTPS request (plain http:// only to destinations the operator lists
in `BASTION_OUTBOUND_PLAINTEXT_ALLOW`), through the SSRF guard (`BASTION_OUTBOUND_ALLOW`
for a Vault on an internal address). The context is bound to every blob, so a
ciphertext moved to another organisation does not unwrap: the plaintext Transit
encrypts is a binding tag (16 bytes of SHA-256 over the context) followed by the data
key, checked on every unwrap. (Transit's `associated_data` would bind it inside Vault,
but Transit's `rewrap` does not accept it: the tag keeps `rewrap` working, with the
plaintext never leaving Vault.) Transit's own answers map to:
403 (token revoked or expired, policy removed) → unavailable; "encryption key not
found" → destroyed; a disallowed ciphertext version (`min_decryption_version` raised) →
unavailable; network errors, 5xx, a sealed Vault → unavailable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import httpx

from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.secrets.keys import (
    KeyContext,
    KeyDestroyedError,
    KeyUnavailableError,
    WrappedValueRejected,
)

TIMEOUT_SECONDS = 5.0
_TAG = b"bkc1"


def _bound(context: KeyContext) -> bytes:
    return _TAG + hashlib.sha256(context.encoded()).digest()[:16]


class VaultTransitProvider:
    name = "vault_transit"

    def __init__(
        self,
        *,
        address: str,
        token: str,
        key_name: str,
        mount: str = "transit",
        namespace: str | None = None,
        allow: Sequence[str] = (),
        plaintext: Sequence[str] = (),
    ) -> None:
        self._base = f"{address.rstrip('/')}/v1/{mount.strip('/')}"
        self._key = key_name
        headers = {"X-Vault-Token": token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self._http = httpx.Client(
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            transport=GuardedTransport(allow, plaintext=plaintext),
        )

    def __repr__(self) -> str:  # never the token
        return f"VaultTransitProvider(key={self._key!r})"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            answer = self._http.request(method, f"{self._base}/{path}", json=body)
        except OutboundRefused:
            raise KeyUnavailableError("destination_refused") from None
        except httpx.HTTPError:
            raise KeyUnavailableError("unreachable") from None
        if answer.status_code < 300:
            try:
                data: dict[str, Any] = answer.json()["data"]
            except (ValueError, KeyError, TypeError):
                raise KeyUnavailableError("bad_answer") from None
            return data
        errors = ""
        with contextlib.suppress(ValueError, AttributeError):
            errors = " ".join(str(e) for e in answer.json().get("errors", [])).lower()
        if answer.status_code == 403:
            raise KeyUnavailableError("access_denied")
        if "encryption key not found" in errors or answer.status_code == 404:
            raise KeyDestroyedError("key_not_found")
        if "message authentication failed" in errors or "invalid ciphertext" in errors:
            raise WrappedValueRejected("the wrapped value does not authenticate")
        if "disallowed by policy" in errors or "too old" in errors:
            raise KeyUnavailableError("key_version_disabled")
        if answer.status_code == 503:
            raise KeyUnavailableError("sealed")
        raise KeyUnavailableError(f"provider_error_{answer.status_code}")

    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        data = self._call(
            "POST",
            f"encrypt/{self._key}",
            {"plaintext": base64.b64encode(_bound(context) + plaintext).decode()},
        )
        return str(data["ciphertext"]).encode()

    def unwrap(self, blob: bytes, context: KeyContext) -> bytes:
        data = self._call(
            "POST",
            f"decrypt/{self._key}",
            {"ciphertext": blob.decode("ascii", "replace")},
        )
        try:
            opened = base64.b64decode(str(data["plaintext"]))
        except (KeyError, ValueError):
            raise KeyUnavailableError("bad_answer") from None
        expected = _bound(context)
        if not hmac.compare_digest(opened[: len(expected)], expected):
            raise WrappedValueRejected("the wrapped value belongs to another context")
        return opened[len(expected) :]

    def rewrap(self, blob: bytes, context: KeyContext) -> bytes:
        """Onto the key's newest version, inside Vault (the plaintext never leaves it)."""
        data = self._call(
            "POST",
            f"rewrap/{self._key}",
            {"ciphertext": blob.decode("ascii", "replace")},
        )
        return str(data["ciphertext"]).encode()

    def probe(self) -> None:
        """The key's metadata (needs `read` on `keys/<name>`; a token allowed only to
        encrypt and decrypt is probed by unwrapping a canary instead, see the service)."""
        self._call("GET", f"keys/{self._key}")
