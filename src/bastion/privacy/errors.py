"""Errors of the privacy operations."""

from __future__ import annotations

from bastion.core.errors import BastionError


class KeyUnreadable(BastionError):
    """The organisation's redaction key is sealed in the vault but does not open (its data
    key was destroyed, or the row was altered): tokens made with it cannot come back."""

    status = 409
    code = "privacy_key_unreadable"
    title = "The redaction key cannot be read"
