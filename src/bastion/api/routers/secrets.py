from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from bastion.agents import gate
from bastion.api.context import RequestContext
from bastion.api.deps import DB, Caller, Ctx, State
from bastion.api.state import AppState
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.core.schemas import SecretName
from bastion.secrets import service as secrets
from bastion.secrets.schemas import (
    DataKeyOut,
    RevealIn,
    RevealOut,
    SecretOut,
    SecretPut,
    SecretScopeOut,
    SecretSummary,
    SecretVersionOut,
    SecretWritten,
)
from bastion.secrets.vault import KeyState

router = APIRouter(prefix="/v1/orgs/{org}/secrets", tags=["secrets"])
key_router = APIRouter(prefix="/v1/orgs/{org}/secrets-key", tags=["secrets"])
# The rule a body's secret names follow (`Path` in the annotation: a `= Path()` default
# beside an annotated type dropped its pattern, and "a b" was a secret's name).
Name = Annotated[SecretName, Path(description="Letters, digits and _ . : -")]


def _scope_id(value: str) -> str | None:
    return value or None


@router.put("/{name}", summary="Write a new version of a secret (creates it on first write)")
def put_secret(
    org: str,
    body: SecretPut,
    principal: Caller,
    db: DB,
    state: State,
    name: Name,
) -> SecretWritten:
    scope = secrets.Scope.of(
        body.scope.workflow_id if body.scope else None, body.scope.run_id if body.scope else None
    )
    secret, version = secrets.put_secret(
        db,
        state.vault,
        principal,
        org,
        name,
        body.value.get_secret_value(),
        description=body.description,
        scope=scope,
    )
    return SecretWritten(
        name=name, version=version, scope=secret.scope_type, scope_id=_scope_id(secret.scope_id)
    )


@router.get("", summary="Secrets' metadata (never values)")
def list_secrets(org: str, principal: Caller, db: DB) -> dict[str, list[SecretSummary]]:
    return {
        "data": [
            SecretSummary(
                name=s.name,
                scope=s.scope_type,
                scope_id=_scope_id(s.scope_id),
                current_version=s.current_version,
                description=s.description,
                updated_at=s.updated_at,
            )
            for s in secrets.list_secrets(db, principal, org)
        ]
    }


@router.get("/{name}", summary="One secret's scopes and versions (never values)")
def get_secret(org: str, name: Name, principal: Caller, db: DB) -> SecretOut:
    scopes = [
        SecretScopeOut(
            id=s.id,
            scope=s.scope_type,
            scope_id=_scope_id(s.scope_id),
            description=s.description,
            current_version=s.current_version,
            versions=[SecretVersionOut.model_validate(v) for v in versions],
            updated_at=s.updated_at,
        )
        for s, versions in secrets.describe(db, principal, org, name)
    ]
    return SecretOut(name=name, scopes=scopes)


@router.post("/{name}/reveal", summary="Reveal a value (audited; needs secrets:reveal)")
async def reveal(
    org: str, name: Name, body: RevealIn, principal: Caller, ctx: Ctx, state: State
) -> RevealOut:
    return await reveal_answer(state, ctx, principal, org, name, body)


async def reveal_answer(
    state: AppState,
    ctx: RequestContext,
    principal: Principal,
    org: str,
    name: str,
    body: RevealIn,
) -> RevealOut:
    """The answer of `POST …/secrets/{name}/reveal` (also served by `bastion.api.fast`):
    read on the request's reader, its audit event written by the request's unit."""
    # Agent run tokens reveal only what their agent was given, inside their run.
    reveal = (
        gate.reveal_secret if principal.credential is CredentialKind.AGENT_RUN else secrets.reveal
    )
    db = ctx.reader
    found = await state.read(
        lambda: reveal(
            db,
            state.vault,
            principal,
            org,
            name,
            version=body.version,
            workflow_id=body.workflow_id,
            run_id=body.run_id,
        )
    )
    return RevealOut(
        value=found.value,
        version=found.version,
        scope=found.scope.type,
        scope_id=_scope_id(found.scope.id),
    )


@router.delete("/{name}", status_code=204, summary="Delete a secret at every scope")
def delete_secret(org: str, name: Name, principal: Caller, db: DB) -> Response:
    secrets.delete_secret(db, principal, org, name)
    return Response(status_code=204)


def _key_out(state: KeyState) -> DataKeyOut:
    return DataKeyOut(
        active_version=state.active_version,
        older_versions=list(state.older_versions),
        pending=state.pending,
        total=state.total,
        status="reencrypting" if state.older_versions else "current",
    )


@key_router.get("", summary="The organisation's data-key version and re-encryption progress")
def get_data_key(org: str, principal: Caller, db: DB) -> DataKeyOut:
    return _key_out(secrets.data_key_state(db, principal, org))


@key_router.post(
    "/rotate",
    status_code=202,
    summary="Rotate the organisation's data key (secrets are re-encrypted in the background)",
)
def rotate_data_key(org: str, principal: Caller, db: DB, state: State) -> DataKeyOut:
    return _key_out(secrets.rotate_data_key(db, state.vault, principal.actor, org, principal))
