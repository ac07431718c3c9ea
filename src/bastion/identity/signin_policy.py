"""Who may sign in by password: a registration hook for a domain above identity.

An organisation that enforces SSO (`sso_enforced`, owned by tenancy) signs the users of
its verified domains in through its identity provider. Which domains those are, and
where a sign-in starts, only `bastion.sso` knows: it registers a `PasswordGate` at
import. identity asks it after a right password and before any session or mfa token:

- the gate answers `None`: the password sign-in goes on;
- it answers `SsoEnforced`: the sign-in is refused with 401 `sso_required` naming the start URL,
  unless the user is an admin of an organisation with `sso_break_glass`, who goes on
  only with a second factor (never by password alone).

Fails closed: with SSO enforced and no gate registered, every password sign-in of the
organisation is refused (there is nothing to tell which emails are exempt).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class SsoEnforced:
    org_id: str  # the organisation whose verified domain the email is in
    break_glass: bool  # its admins may still sign in by password and a second factor


# (db, normalized email) -> SsoEnforced when the email's domain is verified by an
# organisation that enforces SSO, else None
PasswordGate = Callable[[Session, str], SsoEnforced | None]

_GATES: list[PasswordGate] = []
_lock = threading.Lock()
START_PATH = "/v1/auth/sso/start"


def register_password_gate(gate: PasswordGate) -> None:
    """Called by `bastion.sso` at import; registering the same gate twice is harmless."""
    with _lock:
        if gate not in _GATES:
            _GATES.append(gate)


def enforced_for(
    db: Session,
    email: str,
    user_org: str | None,
    org_enforces: bool,
    org_break_glass: bool,
) -> SsoEnforced | None:
    """Whether a password sign-in for `email` (of a user of `user_org`, if known, whose
    organisation has those settings) is refused for SSO. The email's domain decides,
    so an unknown email of an enforced domain gets the same answer as a known one."""
    if not _GATES:
        if user_org is not None and org_enforces:  # fail closed: no gate to ask
            return SsoEnforced(user_org, org_break_glass)
        return None
    for gate in tuple(_GATES):
        found = gate(db, email)
        if found is not None and (user_org is None or found.org_id == user_org):
            return found
    return None


def start_url(public_url: str, email: str) -> str:
    """Where a browser starts signing `email` in with SSO."""
    return f"{public_url}{START_PATH}?" + urlencode({"email": email})
