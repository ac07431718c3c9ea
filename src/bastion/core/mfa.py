"""MFA vocabulary several domains share: what an organisation's MFA policy asks of
whom, the factor kinds it may allow, and the `amr` values (RFC 8176) sessions carry.

    optional  nobody must; a person with a confirmed factor is still asked for it
    admins    holders of the built-in `admin` role must
    all       everyone must
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

POLICIES = ("optional", "admins", "all")
METHODS = ("totp", "webauthn")  # what an organisation may allow
DEFAULT_METHODS = METHODS
# What a person can enrol: an organisation's allowed methods must include one, or
# nobody could satisfy its policy (every method can be enrolled now that passkeys exist).
AVAILABLE = ("totp", "webauthn")

# RFC 8176 values: a password; a one-time password (TOTP); more than one factor; a
# hardware-bound key (a WebAuthn credential that cannot leave its device) or a
# software-held one (a synced passkey: backup eligible).
PASSWORD = "pwd"  # noqa: S105 - the amr value naming the method, not a password
OTP = "otp"
MULTI = "mfa"
HARDWARE_KEY = "hwk"
SOFTWARE_KEY = "swk"
# A sign-in through the organisation's identity provider (SSO): RFC 8176 has no value
# for federation; "ext" (external) is Bastion's, with "mfa" added when the provider
# reports it verified more than one factor.
FEDERATED = "ext"


def required(policy: str | None, role: str) -> bool:
    return policy == "all" or (policy == "admins" and role == "admin")


def has_second_factor(amr: Iterable[str] | None) -> bool:
    return MULTI in (amr or ())


def allowed(methods: Sequence[str] | None) -> tuple[str, ...]:
    """An organisation's allowed factor kinds (NULL: all of them)."""
    return tuple(methods) if methods is not None else DEFAULT_METHODS


def merged(*amrs: Iterable[str] | None) -> list[str]:
    """The union of `amr` lists, in a stable order."""
    seen: dict[str, None] = {}
    for amr in amrs:
        for value in amr or ():
            seen.setdefault(value, None)
    return list(seen)


class Settings(Protocol):
    """An organisation's MFA settings (its row satisfies this)."""

    @property
    def mfa_policy(self) -> str: ...

    @property
    def mfa_methods(self) -> list[str] | None: ...

    @property
    def step_up_max_age(self) -> int: ...
