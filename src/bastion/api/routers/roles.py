from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import DB, Caller
from bastion.authz import service as authz
from bastion.authz.models import Role
from bastion.authz.schemas import RoleCreate, RoleOut, RoleUpdate
from bastion.identity import service as identity

router = APIRouter(prefix="/v1/orgs/{org}/roles", tags=["roles"])


def _out(role: Role) -> RoleOut:
    return RoleOut(
        id=role.id,
        name=role.name,
        description=role.description,
        permissions=sorted(role.permissions),
        builtin=False,
    )


@router.get("", summary="Built-in and custom roles")
def list_roles(org: str, principal: Caller, db: DB) -> dict[str, list[RoleOut]]:
    rows = authz.list_roles(db, principal, org)
    return {
        "data": [
            RoleOut(id=i, name=n, description=d, permissions=p, builtin=b) for i, n, d, p, b in rows
        ]
    }


@router.post("", status_code=201, summary="Create a custom role from catalogue permissions")
def create_role(org: str, body: RoleCreate, principal: Caller, db: DB) -> RoleOut:
    role = authz.create_role(
        db,
        principal,
        org,
        name=body.name,
        permissions=body.permissions,
        description=body.description,
    )
    return _out(role)


@router.get("/{role}", summary="One custom role")
def get_role(org: str, role: str, principal: Caller, db: DB) -> RoleOut:
    return _out(authz.get_role(db, principal, org, role))


@router.patch("/{role}", summary="Change a custom role (takes effect on the next request)")
def update_role(org: str, role: str, body: RoleUpdate, principal: Caller, db: DB) -> RoleOut:
    updated = authz.update_role(
        db,
        principal,
        org,
        role,
        name=body.name,
        description=body.description,
        permissions=body.permissions,
    )
    return _out(updated)


@router.delete("/{role}", status_code=204, summary="Delete an unused custom role")
def delete_role(org: str, role: str, principal: Caller, db: DB) -> Response:
    identity.delete_custom_role(db, principal, org, role)
    return Response(status_code=204)
