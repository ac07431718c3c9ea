from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit
from bastion.core.schemas import ListOf
from bastion.identity import apikeys
from bastion.identity.schemas import ServiceAccountCreate, ServiceAccountOut, ServiceAccountUpdate

router = APIRouter(prefix="/v1/orgs/{org}/service-accounts", tags=["service accounts"])


@router.post("", status_code=201, summary="Create a service account (a non-human principal)")
def create_account(
    org: str, body: ServiceAccountCreate, principal: Caller, db: DB
) -> ServiceAccountOut:
    account = apikeys.create_account(
        db, principal, org, name=body.name, role=body.role, description=body.description
    )
    return ServiceAccountOut.model_validate(account)


@router.get("", summary="List service accounts, newest first")
def list_accounts(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[ServiceAccountOut]:
    page = apikeys.list_accounts(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[ServiceAccountOut](
        data=[ServiceAccountOut.model_validate(a) for a in page.data], next_cursor=page.next_cursor
    )


@router.get("/{account}", summary="One service account")
def get_account(org: str, account: str, principal: Caller, db: DB) -> ServiceAccountOut:
    return ServiceAccountOut.model_validate(apikeys.get_account(db, principal, org, account))


@router.patch("/{account}", summary="Change a service account; suspending it stops its keys")
def update_account(
    org: str, account: str, body: ServiceAccountUpdate, principal: Caller, db: DB
) -> ServiceAccountOut:
    updated = apikeys.update_account(
        db,
        principal,
        org,
        account,
        name=body.name,
        description=body.description,
        role=body.role,
        status=body.status,
    )
    return ServiceAccountOut.model_validate(updated)


@router.delete("/{account}", status_code=204, summary="Delete a service account and its keys")
def delete_account(org: str, account: str, principal: Caller, db: DB) -> Response:
    apikeys.delete_account(db, principal, org, account)
    return Response(status_code=204)
