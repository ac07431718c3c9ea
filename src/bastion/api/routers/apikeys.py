from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.core.clock import utcnow
from bastion.core.schemas import ListOf
from bastion.identity import apikeys
from bastion.identity.models import ApiKey
from bastion.identity.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, RotateIn

router = APIRouter(prefix="/v1/orgs/{org}/api-keys", tags=["api keys"])


def _out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=apikeys.display_prefix(key),
        role=key.role,
        status=apikeys.key_status(key, utcnow()),
        user_id=key.user_id,
        service_account_id=key.service_account_id,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        rotated_to=key.rotated_to,
        created_at=key.created_at,
    )


def _created(issued: apikeys.IssuedKey) -> ApiKeyCreated:
    return ApiKeyCreated(**_out(issued.key).model_dump(), key=issued.token)


@router.post("", status_code=201, summary="Create an API key (the key is shown once)")
def create_key(
    org: str, body: ApiKeyCreate, principal: Caller, db: DB, state: State
) -> ApiKeyCreated:
    issued = apikeys.create_key(
        db,
        principal.actor,
        org,
        name=body.name,
        role=body.role,
        expires_at=body.expires_at,
        hasher=state.hasher,
        principal=principal,
        service_account_id=body.service_account_id,
    )
    return _created(issued)


@router.get("", summary="List API keys (never the key itself)")
def list_keys(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[ApiKeyOut]:
    page = apikeys.list_keys(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[ApiKeyOut](data=[_out(k) for k in page.data], next_cursor=page.next_cursor)


@router.get("/{key}", summary="One API key's metadata")
def get_key(org: str, key: str, principal: Caller, db: DB) -> ApiKeyOut:
    return _out(apikeys.get_key(db, principal, org, key))


@router.post(
    "/{key}/rotate",
    status_code=201,
    summary="Issue a successor; the old key lives on for overlap_seconds",
)
def rotate_key(
    org: str, key: str, principal: Caller, db: DB, state: State, body: RotateIn | None = None
) -> ApiKeyCreated:
    issued = apikeys.rotate_key(
        db,
        principal,
        org,
        key,
        overlap_seconds=(body or RotateIn()).overlap_seconds,
        hasher=state.hasher,
    )
    return _created(issued)


@router.delete("/{key}", status_code=204, summary="Revoke now")
def revoke_key(org: str, key: str, principal: Caller, db: DB) -> Response:
    apikeys.revoke_key(db, principal, org, key)
    return Response(status_code=204)
