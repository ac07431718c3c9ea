"""Customer-managed keys: the interface every key provider implements, and its errors.

An organisation may hold its data keys wrapped by a key of its own, in its own system
(Vault/OpenBao Transit, an HSM over PKCS#11, a cloud KMS), instead of the instance's root
key. Bastion then stores only the wrapped data keys and the (sealed) credentials to ask
the customer's system to unwrap them; the customer's key never leaves that system.

Every call names a `KeyContext` (the organisation and the purpose of the wrapped value,
e.g. `org-data-key|3`) that the provider binds to the ciphertext (associated data): a
blob moved to another organisation, or to another purpose, never unwraps.

Providers raise only `KeyUnavailableError` (access refused, unreachable, key disabled:
may come back) or `KeyDestroyedError` (the key is gone for good), never a library
error, and never with a credential in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class KeyContext:
    """What a wrapped value is bound to: its organisation and its purpose."""

    org_id: str
    purpose: str

    def encoded(self) -> bytes:
        return f"bastion|{self.org_id}|{self.purpose}".encode()


class KeyUnavailableError(Exception):
    """The customer's key cannot be used now (access revoked, key disabled, system
    unreachable). `reason` is a short code safe to show and audit."""

    status = "key_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyDestroyedError(KeyUnavailableError):
    """The customer's key no longer exists: what it wrapped is gone for good."""

    status = "destroyed"


class WrappedValueRejected(Exception):
    """A wrapped value does not authenticate under the given context (altered, or moved
    to another organisation or purpose): an integrity failure, not an outage."""


class CustomerKeyProvider(Protocol):
    """A key in the customer's system. `wrap`/`unwrap` are one round trip each;
    `rewrap` moves a blob to the key's newest version without the plaintext leaving
    the provider where the provider can do that (Transit, KMS); `probe` checks that the
    key exists and this credential may use it (one round trip, raises as the others)."""

    name: str

    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes: ...

    def unwrap(self, blob: bytes, context: KeyContext) -> bytes: ...

    def rewrap(self, blob: bytes, context: KeyContext) -> bytes: ...

    def probe(self) -> None: ...

    def close(self) -> None: ...


PROVIDERS = ("vault_transit", "pkcs11", "kmip", "aws_kms", "gcp_kms", "azure_key_vault")
