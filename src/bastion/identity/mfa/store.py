"""Factor rows and their sealed TOTP secrets (vault scope `mfa`): created, read and
destroyed together, so no secret outlives its factor (nor its user)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.identity.models import MfaChallenge, MfaFactor, RecoveryCode, WebAuthnChallenge
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

SCOPE = "mfa"


def seal(db: Session, vault: Vault, org_id: str, factor_id: str, secret: str) -> str:
    """Seal a factor's secret in the vault; returns the sealed secret's id."""
    return sealed.create(
        db,
        vault,
        org_id,
        name=f"mfa/{factor_id}",
        scope_type=SCOPE,
        scope_id=factor_id,
        description="managed by Bastion MFA",
        value=secret.encode(),
    )


def open_secret(db: Session, vault: Vault, secret_id: str | None) -> str | None:
    """A factor's secret in memory, or None when it is gone or cannot be decrypted
    (the factor then verifies nothing: fail closed)."""
    if secret_id is None:
        return None
    try:
        return sealed.read(db, vault, secret_id, 1).decode()
    except sealed.Unreadable:
        return None


def destroy(db: Session, factors: list[MfaFactor]) -> None:
    """Delete factors and their sealed secrets."""
    if not factors:
        return
    sealed.destroy(db, *(f.secret_id for f in factors))
    db.execute(delete(MfaFactor).where(MfaFactor.id.in_([f.id for f in factors])))


def destroy_user(db: Session, org_id: str, user_id: str) -> int:
    """Everything MFA of one user: factors (and secrets), recovery codes, open mfa
    tokens and WebAuthn challenges. Returns the number of factors removed."""
    factors = list(
        db.execute(
            select(MfaFactor).where(MfaFactor.org_id == org_id, MfaFactor.user_id == user_id)
        ).scalars()
    )
    destroy(db, factors)
    for model in (RecoveryCode, MfaChallenge, WebAuthnChallenge):
        db.execute(delete(model).where(model.org_id == org_id, model.user_id == user_id))
    return len(factors)
