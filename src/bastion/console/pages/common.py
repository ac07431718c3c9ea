"""Helpers several pages share (not a page: it has no routes)."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.authz import service as authz
from bastion.authz.roles import BuiltinRole
from bastion.console.web import Viewer
from bastion.core.errors import Forbidden

router = APIRouter()  # no routes: discovery includes every module of `pages`


def role_choices(viewer: Viewer) -> list[tuple[str, str]]:
    """(value, label) of the roles the viewer may see; the built-ins when they may not
    read roles (the API refuses such a caller the list, not the choice)."""
    try:
        rows = authz.list_roles(viewer.db, viewer.signed_in, viewer.org_id)
    except Forbidden:
        return [(str(r), str(r)) for r in BuiltinRole]
    return [(role_id, name) for role_id, name, _d, _p, _b in rows]
