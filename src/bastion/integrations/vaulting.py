"""An integration's secrets in the vault (`bastion.secrets.sealed`, scope type
`integration`): its client secret, and its tokens as one sealed JSON value (access and
refresh token together, so a rotated refresh token is stored in the same version, in
the same transaction, as the access token that came with it). A new token version
destroys the one before it: an old token's ciphertext does not outlive its use. The
secrets API never lists, reveals or deletes them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bastion.integrations.models import Integration
from bastion.integrations.provider import TokenSet
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

SCOPE = "integration"


def seal_client_secret(
    db: Session, vault: Vault, org_id: str, integration_id: str, value: str
) -> str:
    return sealed.create(
        db,
        vault,
        org_id,
        name=f"integration/{integration_id}/client-secret",
        scope_type=SCOPE,
        scope_id=integration_id,
        description="managed by Bastion integrations",
        value=value.encode(),
    )


def client_secret(db: Session, vault: Vault, integration: Integration) -> str:
    """Raises `sealed.Unreadable`."""
    return sealed.read_current(db, vault, integration.client_secret_id).decode()


def store_tokens(db: Session, vault: Vault, integration: Integration, tokens: TokenSet) -> None:
    """Seal `tokens` as the integration's tokens, replacing (and destroying) the previous
    version; bumps `token_version` and sets the expiry. In the caller's transaction."""
    if integration.tokens_secret_id is None:
        integration.tokens_secret_id = sealed.create(
            db,
            vault,
            integration.org_id,
            name=f"integration/{integration.id}/tokens",
            scope_type=SCOPE,
            scope_id=integration.id,
            description="managed by Bastion integrations",
            value=tokens.sealed_form(),
        )
    else:
        version = sealed.add_version(db, vault, integration.tokens_secret_id, tokens.sealed_form())
        if version > 1:
            sealed.destroy_versions(db, [(integration.tokens_secret_id, version - 1)])
    integration.token_version += 1
    integration.access_expires_at = tokens.expires_at
    integration.refreshable = tokens.refresh_token is not None


def read_tokens(db: Session, vault: Vault, integration: Integration) -> TokenSet:
    """Raises `sealed.Unreadable`."""
    if integration.tokens_secret_id is None:
        raise sealed.Unreadable("no tokens")
    value = sealed.read_current(db, vault, integration.tokens_secret_id)
    return TokenSet.from_sealed(value, integration.access_expires_at)


def destroy(db: Session, integration: Integration) -> None:
    sealed.destroy(db, integration.client_secret_id, integration.tokens_secret_id)
