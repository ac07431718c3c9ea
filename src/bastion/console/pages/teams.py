"""Teams: list with members, create, delete, add and remove members (the
`/v1/orgs/{org}/teams…` services)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from bastion.console.pages.common import user_emails
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.pagination import MAX_LIMIT
from bastion.tenancy import service as tenancy
from bastion.tenancy.schemas import TeamCreate

router = APIRouter()
PAGE = "/console/teams"

CREATED = notice("team-created", "Team created.")
DELETED = notice("team-deleted", "Team deleted.")
ADDED = notice("team-member-added", "Member added.")
REMOVED = notice("team-member-removed", "Member removed.")


@router.get("/teams")
def teams_page(viewer: SignedIn, cursor: str | None = None) -> Response:
    page = tenancy.list_teams(
        viewer.db, viewer.signed_in, viewer.org_id, limit=MAX_LIMIT, cursor=cursor
    )
    members = {t.id: tenancy.team_member_ids(viewer.db, viewer.org_id, t.id) for t in page.data}
    return render(
        viewer,
        "teams.html",
        title="Teams",
        teams=page.data,
        members=members,
        emails=user_emails(viewer),
        next_cursor=page.next_cursor,
    )


@router.post("/teams")
def create_team(posted: SignedInPost) -> Response:
    body = TeamCreate.model_validate(
        {"name": posted.form.get("name", ""), "description": posted.form.get("description", "")}
    )
    tenancy.create_team(
        posted.db, posted.principal, posted.org_id, name=body.name, description=body.description
    )
    return see_other(PAGE, CREATED)


@router.post("/teams/{team}/delete")
def delete_team(team: str, posted: SignedInPost) -> Response:
    tenancy.delete_team(posted.db, posted.principal, posted.org_id, team)
    return see_other(PAGE, DELETED)


@router.post("/teams/{team}/members")
def add_member(team: str, posted: SignedInPost) -> Response:
    tenancy.add_member(posted.db, posted.principal, posted.org_id, team, posted.require("user"))
    return see_other(PAGE, ADDED)


@router.post("/teams/{team}/members/{user}/remove")
def remove_member(team: str, user: str, posted: SignedInPost) -> Response:
    tenancy.remove_member(posted.db, posted.principal, posted.org_id, team, user)
    return see_other(PAGE, REMOVED)
