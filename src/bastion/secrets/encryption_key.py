"""An organisation's customer-managed key: set or change it (the data keys are re-wrapped
under it in the same transaction), see its status, "lock now", or go back to the
instance root key. See `bastion.secrets.cmk` for the mechanics and
docs/customer-managed-keys.md for the semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.crypto import random_bytes
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import cmk
from bastion.secrets.keys import CustomerKeyProvider, KeyUnavailableError, WrappedValueRejected
from bastion.secrets.models import OrgEncryptionKey, OrgKey
from bastion.secrets.vault import Vault, _key_aad


@dataclass(frozen=True)
class KeyView:
    provider: str
    status: str  # active | key_unavailable | destroyed
    reason: str | None
    last_checked_at: datetime | None
    generation: int


LOCAL = KeyView("local", "active", None, None, 0)


def _view(row: OrgEncryptionKey) -> KeyView:
    return KeyView(row.provider, row.status, row.reason, row.last_checked_at, row.generation)


def describe(db: Session, principal: Principal, org_id: str) -> KeyView:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    row = db.get(OrgEncryptionKey, org_id)
    return LOCAL if row is None else _view(row)


def _try_new(provider: CustomerKeyProvider, org_id: str) -> bytes:
    """Wrap a canary under the new key and unwrap it again (two round trips): a
    configuration that cannot do both is refused before anything is re-wrapped."""
    canary = random_bytes(32)
    context = cmk.canary_context(org_id)
    try:
        blob = provider.wrap(canary, context)
        if provider.unwrap(blob, context) != canary:
            raise InvalidInput.field("config", "the key did not give back what it wrapped")
    except KeyUnavailableError as exc:
        raise InvalidInput.field(
            "config", f"the key cannot be used with these settings ({exc.reason})"
        ) from None
    except WrappedValueRejected:
        raise InvalidInput.field("config", "the key did not give back what it wrapped") from None
    return blob


def _unwrap_current(vault: Vault, db: Session, row: OrgKey) -> bytes:
    if row.root_version == cmk.CUSTOMER_WRAPPED:
        return vault.customer.unwrap(db, row.org_id, row.version, row.wrapped)
    return vault.provider.unwrap(row.root_version, row.wrapped, _key_aad(row.org_id, row.version))


def configure(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    provider_name: str,
    config: Mapping[str, Any],
) -> KeyView:
    """Wrap the organisation's data keys under the customer's key (step-up required).
    Every data key is unwrapped under the current wrapping (root key or the previous
    customer key, which must still answer) and wrapped under the new key, in the
    caller's transaction: nothing changes if any step fails. The configuration,
    credentials included, is sealed under the root key and never shown again."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth("org.encryption_key")
    provider = cmk.build_provider(provider_name, config, vault.customer.policy)
    try:
        canary = _try_new(provider, org_id)
        audit.lock_chain(db, org_id)
        row = db.get(OrgEncryptionKey, org_id, with_for_update=True)
        previous = row.provider if row is not None else "local"
        keys = list(db.execute(select(OrgKey).where(OrgKey.org_id == org_id)).scalars())
        for key_row in keys:
            plain = _unwrap_current(vault, db, key_row)
            try:
                key_row.wrapped = provider.wrap(
                    plain, cmk.data_key_context(org_id, key_row.version)
                )
            except KeyUnavailableError as exc:
                raise InvalidInput.field(
                    "config", f"the key cannot be used with these settings ({exc.reason})"
                ) from None
            key_row.root_version = cmk.CUSTOMER_WRAPPED
            del plain
    finally:
        provider.close()
    sealed_version, sealed = cmk.seal_config(vault.provider, org_id, config)
    if row is None:
        row = OrgEncryptionKey(
            org_id=org_id,
            provider=provider_name,
            config_sealed=sealed,
            config_root_version=sealed_version,
            canary=canary,
            status="active",
            generation=1,
        )
        db.add(row)
    else:
        row.provider, row.config_sealed, row.config_root_version = (
            provider_name,
            sealed,
            sealed_version,
        )
        row.canary, row.status, row.reason = canary, "active", None
        row.generation = row.generation + 1
    row.last_checked_at = utcnow()
    audit.record(
        db,
        type=EventType.ORG_ENCRYPTION_KEY_CONFIGURED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"provider": provider_name, "previous_provider": previous, "rewrapped": len(keys)},
    )
    db.flush()
    vault.forget(org_id)
    return _view(row)


def remove(db: Session, vault: Vault, principal: Principal, org_id: str) -> KeyView:
    """Go back to the instance root key (step-up required): every data key is unwrapped
    by the customer's key (which must still answer) and wrapped by the root key."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth("org.encryption_key")
    audit.lock_chain(db, org_id)
    row = db.get(OrgEncryptionKey, org_id, with_for_update=True)
    if row is None:
        return LOCAL  # already on the instance root key
    keys = list(db.execute(select(OrgKey).where(OrgKey.org_id == org_id)).scalars())
    for key_row in keys:
        plain = _unwrap_current(vault, db, key_row)
        key_row.root_version, key_row.wrapped = vault.provider.wrap(
            plain, _key_aad(org_id, key_row.version)
        )
        del plain
    audit.record(
        db,
        type=EventType.ORG_ENCRYPTION_KEY_REMOVED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"provider": row.provider, "rewrapped": len(keys)},
    )
    db.delete(row)
    db.flush()
    vault.forget(org_id)
    return LOCAL


def lock(db: Session, vault: Vault, principal: Principal, org_id: str) -> KeyView:
    """Every worker drops the organisation's cached data keys: this one now, the others
    within `cmk.CMK_RECHECK_SECONDS` (they see the new generation). The next use asks
    the customer's key again, so a revocation takes effect at once."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    audit.lock_chain(db, org_id)
    row = db.get(OrgEncryptionKey, org_id)
    if row is None:
        vault.forget(org_id)
        return LOCAL  # no customer key: nothing another worker must ask again
    db.execute(
        update(OrgEncryptionKey)
        .where(OrgEncryptionKey.org_id == org_id)
        .values(generation=OrgEncryptionKey.generation + 1)
    )
    audit.record(
        db,
        type=EventType.ORG_ENCRYPTION_KEY_LOCKED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"provider": row.provider},
    )
    db.flush()
    db.refresh(row)
    vault.forget(org_id)
    return _view(row)
