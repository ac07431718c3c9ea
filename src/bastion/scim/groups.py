"""SCIM Groups: the organisation's teams, with their members."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete

from bastion.audit import service as audit
from bastion.core.clock import as_utc
from bastion.core.db import org_scoped
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix
from bastion.core.permissions import Permission
from bastion.scim import errors, patch
from bastion.scim.models import ScimResource
from bastion.scim.resources import (
    GROUP_URN,
    MAX_JSON_DEPTH,
    Call,
    check_if_match,
    clean_text,
    depth,
    finish,
    page,
    parsed_filter,
    patch_operations,
    scim_time,
    store_link,
    stored_link,
    stored_links,
)
from bastion.tenancy import service as tenancy


def _group_doc(
    call: Call, team: Any, link: ScimResource | None, members: list[str]
) -> dict[str, Any]:
    doc = copy.deepcopy(link.attributes) if link is not None else {}
    doc["displayName"] = team.name
    out: dict[str, Any] = {"schemas": [GROUP_URN], "id": team.id, **doc}
    sent = {m.get("value"): m for m in doc.get("members") or [] if isinstance(m, dict)}
    out["members"] = []
    for uid in members:
        member = {"value": uid, "$ref": f"{call.base_url}/Users/{uid}", "type": "User"}
        display = sent.get(uid, {}).get("display")
        if isinstance(display, str):
            member["display"] = display  # as the client named them
        out["members"].append(member)
    modified = as_utc(team.updated_at)
    if link is not None:
        modified = max(modified, as_utc(link.updated_at))
    out["meta"] = {
        "resourceType": "Group",
        "created": scim_time(team.created_at),
        "lastModified": scim_time(modified),
        "location": f"{call.base_url}/Groups/{team.id}",
    }
    return finish(out)


def _find_team(call: Call, team_id: str) -> Any:
    try:
        return tenancy.get_team(call.db, call.principal, call.org_id, team_id)
    except NotFound:
        raise errors.not_found(f"Group {team_id} not found") from None


def list_groups(
    call: Call,
    *,
    filter_text: str | None,
    start_index: int | None,
    count: int | None,
    with_members: bool = True,
) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_READ)
    links = stored_links(call.db, call.org_id, "Group")
    members: dict[str, list[str]] = {}
    if with_members:
        by_user, _ = tenancy.team_facts(call.db, call.org_id)
        for user, teams in by_user.items():
            for tid in teams:
                members.setdefault(tid, []).append(user)
    docs = [
        _group_doc(call, t, links.get(t.id), sorted(members.get(t.id, [])))
        for t in tenancy.org_teams(call.db, call.org_id)
    ]
    return page(docs, parsed_filter(filter_text, GROUP_URN), start_index, count)


def get_group(call: Call, team_id: str) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_READ)
    team = _find_team(call, team_id)
    members = tenancy.team_member_ids(call.db, call.org_id, team.id)
    return _group_doc(call, team, stored_link(call.db, call.org_id, team.id), members)


def _validated_group(  # noqa: PLR0912 - one branch per attribute rule
    body: Any,
) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(body, dict):
        raise errors.invalid_syntax("the body must be a JSON object")
    if depth(body) > MAX_JSON_DEPTH:
        raise errors.invalid_value(f"the resource nests deeper than {MAX_JSON_DEPTH} levels")
    schemas = body.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or GROUP_URN not in schemas):
        raise errors.invalid_syntax(f"schemas must include {GROUP_URN}")
    doc: dict[str, Any] = {}
    members: list[str] = []
    for key, value in body.items():
        lowered = key.lower()
        if lowered in ("id", "meta", "schemas"):
            continue
        if lowered == "members":
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
                raise errors.invalid_value("members must be a list of objects")
            kept = []
            for m in value:
                uid = m.get("value")
                if not isinstance(uid, str) or not has_prefix(uid, "usr"):
                    raise errors.invalid_value("members[].value must be a User id of this service")
                if uid not in members:
                    members.append(uid)
                    display = m.get("display")
                    if isinstance(display, str):
                        kept.append({"value": uid, "display": clean_text(display)})
            doc["members"] = kept  # the members' display names, as sent
            continue
        canonical = {"displayname": "displayName", "externalid": "externalId"}.get(lowered, key)
        doc[str(canonical)] = value
    name = doc.get("displayName")
    if not isinstance(name, str) or not clean_text(name):
        raise errors.invalid_value("displayName is required")
    doc["displayName"] = clean_text(name)
    external = doc.get("externalId")
    if external is not None and (not isinstance(external, str) or len(external) > 512):
        raise errors.invalid_value("externalId must be a string of at most 512 characters")
    return {k: v for k, v in doc.items() if v is not None}, members


def _set_members(call: Call, team_id: str, wanted: list[str]) -> None:
    current = set(tenancy.team_member_ids(call.db, call.org_id, team_id))
    for uid in wanted:
        if uid not in current:
            try:
                tenancy.add_member(call.db, call.principal, call.org_id, team_id, uid)
            except NotFound:
                raise errors.invalid_value(f"member {uid} is not a User of this service") from None
    for uid in sorted(current - set(wanted)):
        tenancy.remove_member(call.db, call.principal, call.org_id, team_id, uid)


def _name_taken(exc: Conflict) -> errors.ScimError:
    return errors.uniqueness("a Group with this displayName exists")


def create_group(call: Call, body: Any) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_MANAGE)
    doc, members = _validated_group(body)
    try:
        team = tenancy.create_team(
            call.db, call.principal, call.org_id, name=doc["displayName"], description=""
        )
    except Conflict as exc:
        raise _name_taken(exc) from None
    store_link(
        call.db, call.org_id, "Group", team.id, {k: v for k, v in doc.items() if k != "displayName"}
    )
    _set_members(call, team.id, members)
    return get_group(call, team.id)


def _write_group(call: Call, team: Any, doc: dict[str, Any], members: list[str]) -> dict[str, Any]:
    if doc["displayName"] != team.name:
        try:
            tenancy.update_team(
                call.db,
                call.principal,
                call.org_id,
                team.id,
                name=doc["displayName"],
                description=None,
            )
        except Conflict as exc:
            raise _name_taken(exc) from None
    kept = {k: v for k, v in doc.items() if k != "displayName"}
    if store_link(call.db, call.org_id, "Group", team.id, kept):
        audit.record(
            call.db,
            type=EventType.TEAM_UPDATED,
            actor=call.actor,
            org_id=call.org_id,
            resource=("team", team.id),
            metadata={"via": "scim", "attributes": sorted(kept)},
        )
    _set_members(call, team.id, members)
    return get_group(call, team.id)


def replace_group(call: Call, team_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_MANAGE)
    current = get_group(call, team_id)
    check_if_match(current, if_match)
    doc, members = _validated_group(body)
    return _write_group(call, _find_team(call, team_id), doc, members)


def patch_group(call: Call, team_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_MANAGE)
    operations = patch_operations(body)
    current = get_group(call, team_id)
    check_if_match(current, if_match)
    base = {k: v for k, v in current.items() if k not in ("id", "meta")}
    result = patch.apply(base, operations, GROUP_URN, frozenset())
    doc, members = _validated_group(result)
    return _write_group(call, _find_team(call, team_id), doc, members)


def delete_group(call: Call, team_id: str, if_match: str | None) -> None:
    call.principal.require(Permission.TEAMS_MANAGE)
    current = get_group(call, team_id)
    check_if_match(current, if_match)
    tenancy.delete_team(call.db, call.principal, call.org_id, team_id)
    call.db.execute(
        delete(ScimResource).where(
            ScimResource.org_id == call.org_id, ScimResource.resource_id == team_id
        ),
        execution_options=org_scoped(call.org_id),
    )


Handler = Callable[..., Any]
