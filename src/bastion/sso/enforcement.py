"""Enforced SSO for password sign-in: the gate `bastion.identity.signin_policy` asks,
registered at import (identity cannot import sso: it sits below it).

An email whose domain an organisation verified, of an organisation that enforces SSO,
may not sign in by password: the answer names where to start instead."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bastion.identity import signin_policy
from bastion.sso import domains
from bastion.tenancy import service as tenancy


def password_gate(db: Session, email: str) -> signin_policy.SsoEnforced | None:
    if "@" not in email:
        return None
    owner = domains.verified_owner(db, email.rsplit("@", 1)[1])
    if owner is None:
        return None
    enforced, break_glass = tenancy.sso_policy(db, owner)
    if not enforced:
        return None
    return signin_policy.SsoEnforced(owner, break_glass)


signin_policy.register_password_gate(password_gate)
