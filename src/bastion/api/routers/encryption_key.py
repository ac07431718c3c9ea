"""An organisation's customer-managed key: `/v1/orgs/{org}/encryption-key`."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.api.deps import DB, Caller, State
from bastion.secrets import encryption_key as cmk
from bastion.secrets.schemas import EncryptionKeyIn, EncryptionKeyOut

router = APIRouter(prefix="/v1/orgs/{org}/encryption-key", tags=["secrets"])


def _out(view: cmk.KeyView) -> EncryptionKeyOut:
    return EncryptionKeyOut(
        provider=view.provider,
        status=view.status,
        reason=view.reason,
        last_checked_at=view.last_checked_at,
    )


@router.get("", summary="The organisation's key provider and its status (never its settings)")
def get_encryption_key(org: str, principal: Caller, db: DB) -> EncryptionKeyOut:
    return _out(cmk.describe(db, principal, org))


@router.put(
    "",
    summary="Wrap the organisation's data keys under its own key (customer-managed key)",
    description="Needs `org:manage` and a recent verification (step-up). The key is "
    "tried (wrap and unwrap a canary), then every data key of the organisation is "
    "re-wrapped under it in one transaction; `config` (credentials included) is sealed "
    "and never shown, logged or audited. Switching provider re-wraps again; the previous "
    "key must still answer.",
)
def put_encryption_key(
    org: str, body: EncryptionKeyIn, principal: Caller, db: DB, state: State
) -> EncryptionKeyOut:
    config = {k: v.get_secret_value() for k, v in body.config.items()}
    return _out(cmk.configure(db, state.vault, principal, org, body.provider, config))


@router.delete(
    "",
    summary="Go back to the instance root key (the customer's key must still answer)",
)
def delete_encryption_key(org: str, principal: Caller, db: DB, state: State) -> EncryptionKeyOut:
    return _out(cmk.remove(db, state.vault, principal, org))


@router.post(
    "/lock",
    summary="Drop the organisation's cached data keys on every worker (within 2 s)",
    description="Every server asks the customer's key again on the next use: after the "
    "customer revoked access, reveals and secret writes answer 503 `key_unavailable` "
    "from then on.",
)
def lock_encryption_key(org: str, principal: Caller, db: DB, state: State) -> EncryptionKeyOut:
    return _out(cmk.lock(db, state.vault, principal, org))
