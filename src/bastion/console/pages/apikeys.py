"""API keys and service accounts: keys (create — the key shown once — rotate with an
overlap, revoke) and the service accounts they may belong to (create, suspend,
reactivate, delete), through the services of `/v1/orgs/{org}/api-keys` and
`/v1/orgs/{org}/service-accounts`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from bastion.console.pages.common import form_int, form_time, role_choices
from bastion.console.web import Posted, SignedIn, SignedInPost, notice, render, see_other
from bastion.core.clock import utcnow
from bastion.core.errors import Forbidden
from bastion.core.pagination import MAX_LIMIT
from bastion.identity import apikeys
from bastion.identity.schemas import (
    ApiKeyCreate,
    RotateIn,
    ServiceAccountCreate,
    ServiceAccountUpdate,
)

router = APIRouter()
PAGE = "/console/api-keys"

REVOKED = notice("key-revoked", "Key revoked: it stops working now.")
ACCOUNT_CREATED = notice("sa-created", "Service account created.")
ACCOUNT_CHANGED = notice("sa-changed", "Service account changed.")
ACCOUNT_DELETED = notice("sa-deleted", "Service account and its keys deleted.")


def _page(viewer: SignedIn, issued: apikeys.IssuedKey | None = None) -> Response:
    principal = viewer.signed_in
    keys = apikeys.list_keys(viewer.db, principal, viewer.org_id, limit=MAX_LIMIT, cursor=None)
    try:
        accounts: list[Any] = apikeys.list_accounts(
            viewer.db, principal, viewer.org_id, limit=MAX_LIMIT, cursor=None
        ).data
    except Forbidden:
        accounts = []
    now = utcnow()
    return render(
        viewer,
        "apikeys.html",
        status=201 if issued else 200,
        title="API keys",
        keys=[(k, apikeys.display_prefix(k), apikeys.key_status(k, now)) for k in keys.data],
        accounts=accounts,
        account_names={a.id: a.name for a in accounts},
        roles=role_choices(viewer),
        issued=issued,
    )


@router.get("/api-keys")
def keys_page(viewer: SignedIn) -> Response:
    return _page(viewer)


@router.post("/api-keys")
def create_key(posted: SignedInPost) -> Response:
    body = ApiKeyCreate.model_validate(
        {
            "name": posted.form.get("name", ""),
            "role": posted.get("role"),
            "expires_at": form_time(posted.get("expires_at")),
            "service_account_id": posted.get("service_account_id"),
        }
    )
    viewer = posted.viewer
    issued = apikeys.create_key(
        posted.db,
        viewer.unit.actor,
        posted.org_id,
        name=body.name,
        role=body.role,
        expires_at=body.expires_at,
        hasher=viewer.edge.app.hasher,
        principal=posted.principal,
        service_account_id=body.service_account_id,
    )
    return _page(viewer, issued)  # the key is shown on this answer only


@router.post("/api-keys/{key}/rotate")
def rotate_key(key: str, posted: SignedInPost) -> Response:
    overlap = form_int(posted.get("overlap_seconds"))
    body = RotateIn.model_validate({} if overlap is None else {"overlap_seconds": overlap})
    issued = apikeys.rotate_key(
        posted.db, posted.principal, posted.org_id, key, overlap_seconds=body.overlap_seconds,
        hasher=posted.viewer.edge.app.hasher,
    )  # fmt: skip
    return _page(posted.viewer, issued)


@router.post("/api-keys/{key}/revoke")
def revoke_key(key: str, posted: SignedInPost) -> Response:
    apikeys.revoke_key(posted.db, posted.principal, posted.org_id, key)
    return see_other(PAGE, REVOKED)


# --- service accounts ---------------------------------------------------------------


@router.post("/service-accounts")
def create_account(posted: SignedInPost) -> Response:
    body = ServiceAccountCreate.model_validate(
        {
            "name": posted.form.get("name", ""),
            "role": posted.form.get("role", ""),
            "description": posted.form.get("description", ""),
        }
    )
    apikeys.create_account(
        posted.db, posted.principal, posted.org_id, name=body.name, role=body.role,
        description=body.description,
    )  # fmt: skip
    return see_other(PAGE, ACCOUNT_CREATED)


def _set_status(posted: Posted, account: str, status: str) -> None:
    body = ServiceAccountUpdate.model_validate({"status": status})
    apikeys.update_account(
        posted.db, posted.principal, posted.org_id, account, name=None, description=None,
        role=None, status=body.status,
    )  # fmt: skip


@router.post("/service-accounts/{account}/suspend")
def suspend_account(account: str, posted: SignedInPost) -> Response:
    _set_status(posted, account, "suspended")
    return see_other(PAGE, ACCOUNT_CHANGED)


@router.post("/service-accounts/{account}/reactivate")
def reactivate_account(account: str, posted: SignedInPost) -> Response:
    _set_status(posted, account, "active")
    return see_other(PAGE, ACCOUNT_CHANGED)


@router.post("/service-accounts/{account}/delete")
def delete_account(account: str, posted: SignedInPost) -> Response:
    apikeys.delete_account(posted.db, posted.principal, posted.org_id, account)
    return see_other(PAGE, ACCOUNT_DELETED)
