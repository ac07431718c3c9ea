"""Helpers several pages share (not a page: it has no routes)."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.authz import service as authz
from bastion.authz.roles import BuiltinRole
from bastion.console.web import Viewer
from bastion.core.errors import Forbidden
from bastion.core.pagination import MAX_LIMIT
from bastion.identity import service as users

router = APIRouter()  # no routes: discovery includes every module of `pages`


def role_choices(viewer: Viewer) -> list[tuple[str, str]]:
    """(value, label) of the roles the viewer may see; the built-ins when they may not
    read roles (the API refuses such a caller the list, not the choice)."""
    try:
        rows = authz.list_roles(viewer.db, viewer.signed_in, viewer.org_id)
    except Forbidden:
        return [(str(r), str(r)) for r in BuiltinRole]
    return [(role_id, name) for role_id, name, _d, _p, _b in rows]


def form_int(value: str | None) -> int | str | None:
    """A number typed into a form, as the API's strict schemas take it: digits become
    an int; anything else stays text, for the schema to refuse by name."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    return int(text) if text.isdigit() and len(text) <= 12 else text


def form_time(value: str | None) -> str | None:
    """A `datetime-local` value (read as UTC, as the form says) in RFC 3339."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if len(text) == 16 and text[10] == "T":  # YYYY-MM-DDTHH:MM
        return text + ":00Z"
    if len(text) == 19 and text[10] == "T":  # with seconds
        return text + "Z"
    return text


def user_emails(viewer: Viewer) -> dict[str, str]:
    """user id → email of the organisation's users the viewer may list (first 200)."""
    try:
        page = users.list_users(
            viewer.db, viewer.signed_in, viewer.org_id, limit=MAX_LIMIT, cursor=None
        )
    except Forbidden:
        return {}
    return {u.id: u.email for u in page.data}
