from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.context import RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Ctx, Cursor, Limit
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf
from bastion.tenancy import service as tenancy
from bastion.tenancy.models import Team
from bastion.tenancy.schemas import TeamCreate, TeamDetail, TeamOut, TeamUpdate

router = APIRouter(prefix="/v1/orgs/{org}/teams", tags=["teams"])


def _detail(db: DB, team: Team) -> TeamDetail:
    base = TeamOut.model_validate(team).model_dump()
    return TeamDetail(**base, member_ids=tenancy.team_member_ids(db, team.org_id, team.id))


@router.post("", status_code=201, summary="Create a team")
async def create_team(org: str, body: TeamCreate, principal: Caller, ctx: Ctx) -> TeamDetail:
    return create_team_answer(ctx, principal, org, body)


def create_team_answer(
    ctx: RequestContext, principal: Principal, org: str, body: TeamCreate
) -> TeamDetail:
    """The answer of `POST /v1/orgs/{org}/teams` (also served by `bastion.api.fast`). It
    reads nothing: the name is checked, and the team written, by the request's unit."""
    db = ctx.reader
    team = tenancy.create_team(db, principal, org, name=body.name, description=body.description)
    return TeamDetail(**TeamOut.model_validate(team).model_dump(), member_ids=[])  # a new team


@router.get("", summary="List teams, newest first")
def list_teams(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[TeamOut]:
    page = tenancy.list_teams(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[TeamOut](
        data=[TeamOut.model_validate(t) for t in page.data], next_cursor=page.next_cursor
    )


@router.get("/{team}", summary="One team with its members")
def get_team(org: str, team: str, principal: Caller, db: DB) -> TeamDetail:
    return _detail(db, tenancy.get_team(db, principal, org, team))


@router.patch("/{team}", summary="Rename or describe a team")
def update_team(org: str, team: str, body: TeamUpdate, principal: Caller, db: DB) -> TeamDetail:
    updated = tenancy.update_team(
        db, principal, org, team, name=body.name, description=body.description
    )
    return _detail(db, updated)


@router.delete("/{team}", status_code=204, summary="Delete a team")
def delete_team(org: str, team: str, principal: Caller, db: DB) -> Response:
    tenancy.delete_team(db, principal, org, team)
    return Response(status_code=204)


@router.put("/{team}/members/{user}", status_code=204, summary="Add a member (idempotent)")
def add_member(org: str, team: str, user: str, principal: Caller, db: DB) -> Response:
    tenancy.add_member(db, principal, org, team, user)
    return Response(status_code=204)


@router.delete("/{team}/members/{user}", status_code=204, summary="Remove a member")
def remove_member(org: str, team: str, user: str, principal: Caller, db: DB) -> Response:
    tenancy.remove_member(db, principal, org, team, user)
    return Response(status_code=204)
