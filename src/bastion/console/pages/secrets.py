"""Secrets: names, scopes and versions (never values), a new version ("Rotate"), a new
secret, and the reveal: a POST (CSRF) that needs `secrets:reveal` and a recent sign-in
(step-up), is audited, and shows the value on that answer only — through
`bastion.secrets.service`, as `/v1/orgs/{org}/secrets` does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from bastion.console.pages.common import form_int
from bastion.console.web import SignedIn, SignedInPost, Viewer, notice, render, see_other
from bastion.core.errors import InvalidInput
from bastion.core.permissions import Permission
from bastion.core.schemas import SecretName
from bastion.secrets import service as secrets
from bastion.secrets.schemas import RevealIn, SecretPut

router = APIRouter()
PAGE = "/console/secrets"

WRITTEN = notice("secret-written", "New version saved: readers use it from now on.")
_NAME: TypeAdapter[str] = TypeAdapter(SecretName)


def _name(value: str) -> str:
    try:
        return _NAME.validate_python(value)
    except ValidationError:
        raise InvalidInput.field("name", "is not a valid secret name") from None


def _page(viewer: Viewer, revealed: Any = None, revealed_name: str | None = None) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    rows = secrets.list_secrets(db, principal, org)
    versions: dict[str, list[Any]] = {}
    for name in sorted({s.name for s in rows}):
        versions[name] = secrets.describe(db, principal, org, name)
    return render(
        viewer, "secrets.html", title="Secrets", names=versions,
        may_manage=viewer.can(Permission.SECRETS_MANAGE),
        may_reveal=viewer.can(Permission.SECRETS_REVEAL),
        revealed=revealed, revealed_name=revealed_name,
        headers={"Cache-Control": "no-store"} if revealed else None,
    )  # fmt: skip


@router.get("/secrets")
def secrets_page(viewer: SignedIn) -> Response:
    return _page(viewer)


def _write(posted: SignedInPost, name: str) -> Response:
    body = SecretPut.model_validate(
        {"value": posted.form.get("value", ""), "description": posted.get("description")}
    )
    if not body.value.get_secret_value():
        raise InvalidInput.field("value", "is required")
    secrets.put_secret(
        posted.db, posted.viewer.edge.app.vault, posted.principal, posted.org_id, name,
        body.value.get_secret_value(), description=body.description, scope=secrets.Scope(),
    )  # fmt: skip
    return see_other(PAGE, WRITTEN)


@router.post("/secrets")
def create_secret(posted: SignedInPost) -> Response:
    return _write(posted, _name(posted.form.get("name", "")))


@router.post("/secrets/{name}/rotate")
def rotate_secret(name: str, posted: SignedInPost) -> Response:
    return _write(posted, _name(name))


@router.post("/secrets/{name}/reveal")
def reveal_secret(name: str, posted: SignedInPost) -> Response:
    """The value, on this answer only (never in a redirect or a later page)."""
    version = form_int(posted.get("version"))
    body = RevealIn.model_validate({} if version is None else {"version": version})
    found = secrets.reveal(
        posted.db, posted.viewer.edge.app.vault, posted.principal, posted.org_id, _name(name),
        version=body.version, workflow_id=None, run_id=None,
    )  # fmt: skip
    return _page(posted.viewer, found, name)
