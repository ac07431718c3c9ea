"""The instance's root key behind the customer-key interface: the default provider.

Data keys of an organisation without a key of its own stay wrapped exactly as before
(the `org_keys` row names the root-key version, the vault unwraps it directly: no extra
layer, no extra cost). This adapter puts that same root keyring behind
`CustomerKeyProvider`, for code that handles every provider alike (switching an
organisation back to the instance key, the provider conformance tests): its blob is the
root-key version (4 bytes, big-endian) followed by the AES-256-GCM ciphertext, bound to
the context as associated data.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag

from bastion.secrets.keys import KeyContext, KeyUnavailableError, WrappedValueRejected


class RootKeys(Protocol):
    """The vault's root-key provider (`bastion.secrets.vault.KeyProvider`)."""

    def active_version(self) -> int: ...

    def wrap(self, plaintext: bytes, associated: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, version: int, blob: bytes, associated: bytes) -> bytes: ...


class InstanceKeyProvider:
    name = "local"

    def __init__(self, root: RootKeys) -> None:
        self._root = root

    def __repr__(self) -> str:
        return "InstanceKeyProvider()"

    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        version, blob = self._root.wrap(plaintext, context.encoded())
        return version.to_bytes(4, "big") + blob

    def unwrap(self, blob: bytes, context: KeyContext) -> bytes:
        if len(blob) < 4:
            raise WrappedValueRejected("not a wrapped value")
        try:
            return self._root.unwrap(int.from_bytes(blob[:4], "big"), blob[4:], context.encoded())
        except KeyError:
            raise KeyUnavailableError("root_key_version_missing") from None
        except (InvalidTag, ValueError):
            raise WrappedValueRejected("the wrapped value does not authenticate") from None

    def rewrap(self, blob: bytes, context: KeyContext) -> bytes:
        if int.from_bytes(blob[:4], "big") == self._root.active_version():
            return blob
        return self.wrap(self.unwrap(blob, context), context)

    def probe(self) -> None:
        self._root.active_version()

    def close(self) -> None:
        return None
