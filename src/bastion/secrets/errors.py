"""Errors of the secrets vault (rendered by the one problem-document handler).

    BastionError
    ├── SecretUnreadable   500  secret_unreadable   a stored value fails to decrypt
    ├── DataKeyChanged     503  data_key_changed    a write raced a data-key destruction
    │                                               (Retry-After: 1; nothing was written)
    └── KeyUnavailable     503  key_unavailable     the organisation's customer-managed key
                                                    refused, is unreachable or destroyed

A value that fails to decrypt has been tampered with, moved to another row, or its
data key has been destroyed. It is a server-side integrity failure the caller cannot
fix, hence 500; the problem document names no key, row or library internals.
"""

from __future__ import annotations

from bastion.core.errors import BastionError

UNREADABLE_DETAIL = (
    "the stored value cannot be decrypted (altered, or its data key is gone); "
    "write a new version from the value's source"
)


class SecretUnreadable(BastionError):
    status = 500
    code = "secret_unreadable"
    title = "Secret unreadable"

    def __init__(self, reason: str = "authentication_failed") -> None:
        super().__init__(UNREADABLE_DETAIL)
        # "authentication_failed" (the AEAD tag does not verify) or "data_key_destroyed"
        self.reason = reason


class DataKeyChanged(BastionError):
    """A write encrypted under a data-key version that a finishing rotation destroyed
    meanwhile (this worker's cached active version was stale). The database refused the
    row, nothing was written, and the worker now reads the newest version: retrying the
    request succeeds. The SDK retries 503 with Retry-After on its own."""

    status = 503
    code = "data_key_changed"
    title = "Try again"

    def __init__(self) -> None:
        super().__init__(
            "the organisation's data key changed while this value was written; nothing"
            " was stored, retry the request"
        )
        self.retry_after = 1


class KeyUnavailable(BastionError):
    """The organisation's customer-managed key cannot be used: its owner revoked
    Bastion's access, disabled or destroyed the key, or their key service is
    unreachable. Nothing was revealed or written. `status` is `key_unavailable` or
    `destroyed`; `reason` a short code (`access_denied`, `key_not_found`,
    `unreachable`, …) that names no credential."""

    status = 503
    code = "key_unavailable"
    title = "Encryption key unavailable"

    def __init__(self, key_status: str, reason: str) -> None:
        what = (
            "has been destroyed: its secrets cannot be recovered"
            if key_status == "destroyed"
            else "cannot be used now (access revoked, key disabled or unreachable)"
        )
        super().__init__(f"the organisation's customer-managed key {what} ({reason})")
        self.key_status = key_status
        self.reason = reason
