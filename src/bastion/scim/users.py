"""SCIM Users: Bastion users, `userName` their email; `active: false` suspends and
DELETE deletes them (both end their sessions and stop their API keys at once, through
`identity.service`); the last active admin is never de-provisioned (409)."""

from __future__ import annotations

import copy
import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc
from bastion.core.db import org_scoped
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.identity import service as identity
from bastion.scim import errors, patch
from bastion.scim.filter import Compare, Logical, Node
from bastion.scim.models import ScimResource
from bastion.scim.resources import (
    ENTERPRISE_URN,
    MAX_JSON_DEPTH,
    USER_EXTENSIONS,
    USER_URN,
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

NEW_USER_ROLE = "member"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")


def _email_of(doc: dict[str, Any]) -> str:
    """The Bastion email (sign-in identifier) of a SCIM user: its userName when that is
    an address, else its primary (or first) email, else the userName itself (an
    identity provider whose userName is not an address: such a user signs in by SSO)."""
    user_name = str(doc["userName"]).strip()
    if _EMAIL.match(user_name):
        return user_name
    emails = [e for e in doc.get("emails") or [] if isinstance(e, dict)]
    emails.sort(key=lambda e: not e.get("primary"))
    for entry in emails:
        value = entry.get("value")
        if isinstance(value, str) and _EMAIL.match(value):
            return value
    return user_name


def _name_of(doc: dict[str, Any]) -> str:
    given = doc.get("name")
    name: dict[str, Any] = given if isinstance(given, dict) else {}
    for candidate in (
        doc.get("displayName"),
        name.get("formatted"),
        " ".join(str(p) for p in (name.get("givenName"), name.get("familyName")) if p),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return clean_text(candidate)
    return ""


_USER_STRINGS = (
    "userName",
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "externalId",
    "profileUrl",
)


def _validated_user(  # noqa: PLR0912 - one branch per attribute rule
    body: Any,
) -> tuple[dict[str, Any], bool | None]:
    """The attributes to keep of a User body (POST, PUT, a PATCH's result) and `active`
    (None when the body does not say: a PUT without it leaves the status alone, so a
    profile update never reactivates a de-provisioned user)."""
    if not isinstance(body, dict):
        raise errors.invalid_syntax("the body must be a JSON object")
    if depth(body) > MAX_JSON_DEPTH:
        raise errors.invalid_value(f"the resource nests deeper than {MAX_JSON_DEPTH} levels")
    doc: dict[str, Any] = {}
    for key, value in body.items():
        lowered = key.lower()
        if lowered in ("id", "meta", "groups", "schemas", "password"):
            continue  # read-only, or never stored (a password is not taken by SCIM)
        canonical = next((n for n in _USER_STRINGS if n.lower() == lowered), None)
        canonical = canonical or {
            "active": "active",
            "name": "name",
            "emails": "emails",
            "phonenumbers": "phoneNumbers",
            ENTERPRISE_URN.lower(): ENTERPRISE_URN,
        }.get(lowered, key)
        doc[str(canonical)] = value
    schemas = body.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or USER_URN not in schemas):
        raise errors.invalid_syntax(f"schemas must include {USER_URN}")
    user_name = doc.get("userName")
    if not isinstance(user_name, str) or not user_name.strip():
        raise errors.invalid_value("userName is required")
    if len(user_name) > 320:
        raise errors.invalid_value("userName is longer than 320 characters")
    for name in _USER_STRINGS:
        if name in doc and doc[name] is not None and not isinstance(doc[name], str):
            raise errors.invalid_value(f"{name} must be a string")
    external = doc.get("externalId")
    if isinstance(external, str) and len(external) > 512:
        raise errors.invalid_value("externalId is longer than 512 characters")
    active = doc.get("active")
    if isinstance(active, str) and active.lower() in ("true", "false"):
        active = active.lower() == "true"
    if active is not None and not isinstance(active, bool):
        raise errors.invalid_value("active must be a boolean")
    if active is not None:
        doc["active"] = active
    if doc.get("name") is not None and not isinstance(doc["name"], dict):
        raise errors.invalid_value("name must be an object")
    for multi in ("emails", "phoneNumbers"):
        values = doc.get(multi)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise errors.invalid_value(f"{multi} must be a list of objects")
        if sum(1 for v in values if v.get("primary") is True) > 1:
            raise errors.invalid_value(f"at most one of {multi} may be primary")
    if ENTERPRISE_URN in doc and not isinstance(doc[ENTERPRISE_URN], dict):
        raise errors.invalid_value(f"{ENTERPRISE_URN} must be an object")
    doc = {k: v for k, v in doc.items() if v is not None}
    return doc, active


def _user_doc(
    call: Call,
    user: identity.ProvisionedUser,
    link: ScimResource | None,
    groups: list[tuple[str, str]],
) -> dict[str, Any]:
    if link is not None:
        doc = copy.deepcopy(link.attributes)
    else:  # a user Bastion made itself (API, SSO): what it knows
        doc = {
            "userName": user.email,
            "emails": [{"value": user.email, "type": "work", "primary": True}],
        }
        if user.name:
            doc["displayName"] = user.name
    if link is None or "active" in doc:
        # Bastion's status is the truth. A client that removed `active` sees none; the
        # removal itself changed no status (it never reactivates anyone).
        doc["active"] = user.status != "suspended"
    schemas = [USER_URN] + ([ENTERPRISE_URN] if ENTERPRISE_URN in doc else [])
    location = f"{call.base_url}/Users/{user.id}"
    modified = max(
        as_utc(user.updated_at), as_utc(link.updated_at) if link else as_utc(user.updated_at)
    )
    out: dict[str, Any] = {"schemas": schemas, "id": user.id, **doc}
    if groups:
        out["groups"] = [
            {
                "value": tid,
                "display": name,
                "$ref": f"{call.base_url}/Groups/{tid}",
                "type": "direct",
            }
            for tid, name in groups
        ]
    out["meta"] = {
        "resourceType": "User",
        "created": scim_time(user.created_at),
        "lastModified": scim_time(modified),
        "location": location,
    }
    return finish(out)


def _groups_by_user(db: Session, org_id: str) -> dict[str, list[tuple[str, str]]]:
    names = {t.id: t.name for t in tenancy.org_teams(db, org_id)}
    members, _ = tenancy.team_facts(db, org_id)
    return {
        user: sorted((tid, names[tid]) for tid in teams if tid in names)
        for user, teams in members.items()
    }


def _groups_of(db: Session, org_id: str, user_id: str) -> list[tuple[str, str]]:
    team_ids = tenancy.teams_of(db, org_id, user_id)
    if not team_ids:
        return []
    return sorted((t.id, t.name) for t in tenancy.org_teams(db, org_id) if t.id in team_ids)


def _find_user(call: Call, user_id: str) -> identity.ProvisionedUser:
    try:
        return identity.provisioned_user(call.db, call.org_id, user_id)
    except NotFound:
        raise errors.not_found(f"User {user_id} not found") from None


def _user_candidates(call: Call, node: Node) -> set[str] | None:
    """The ids a filter can match at most, from the indexed lookups identity providers
    lean on (`userName eq`, `externalId eq`); None when the filter needs every user."""
    if isinstance(node, Logical):
        left, right = _user_candidates(call, node.left), _user_candidates(call, node.right)
        if node.op == "and":
            return left if right is None else right if left is None else left & right
        return None if left is None or right is None else left | right
    if not (
        isinstance(node, Compare)
        and node.op == "eq"
        and isinstance(node.value, str)
        and not node.path.urn
        and len(node.path.names) == 1
    ):
        return None
    name, value = node.path.names[0].lower(), node.value
    if name == "username":
        linked = call.db.execute(
            select(ScimResource.resource_id).where(
                ScimResource.org_id == call.org_id,
                ScimResource.resource_type == "User",
                ScimResource.user_name == value.strip().lower(),
            )
        ).scalars()
        # a user without SCIM attributes shows its email as userName
        return set(linked) | identity.user_ids_by_email(call.db, call.org_id, value)
    if name == "externalid":
        return set(
            call.db.execute(
                select(ScimResource.resource_id).where(
                    ScimResource.org_id == call.org_id,
                    ScimResource.resource_type == "User",
                    ScimResource.external_id == value,
                )
            ).scalars()
        )
    return None


def list_users(
    call: Call, *, filter_text: str | None, start_index: int | None, count: int | None
) -> dict[str, Any]:
    call.principal.require(Permission.USERS_READ)
    node = parsed_filter(filter_text, USER_URN)
    ids = _user_candidates(call, node) if node is not None else None
    users = identity.provisioned_users(call.db, call.org_id, ids=ids)
    if ids is None:
        links = stored_links(call.db, call.org_id, "User")
        groups = _groups_by_user(call.db, call.org_id)
    else:
        links = {u.id: link for u in users if (link := stored_link(call.db, call.org_id, u.id))}
        groups = {u.id: _groups_of(call.db, call.org_id, u.id) for u in users}
    docs = [_user_doc(call, u, links.get(u.id), groups.get(u.id, [])) for u in users]
    return page(docs, node, start_index, count)


def get_user(call: Call, user_id: str) -> dict[str, Any]:
    call.principal.require(Permission.USERS_READ)
    user = _find_user(call, user_id)
    link = stored_link(call.db, call.org_id, user.id)
    return _user_doc(call, user, link, _groups_of(call.db, call.org_id, user.id))


def _unique_user_name(call: Call, user_name: str, except_id: str | None) -> None:
    """userName is unique in the organisation, without regard to case (RFC 7643 §4.1.1)."""
    rows = call.db.execute(
        select(ScimResource.resource_id).where(
            ScimResource.org_id == call.org_id,
            ScimResource.resource_type == "User",
            ScimResource.user_name == user_name.strip().lower(),
        )
    ).scalars()
    for resource_id in list(rows):
        if resource_id == except_id:
            continue
        if _exists(call, resource_id):
            raise errors.uniqueness("a User with this userName exists")
        # the user was deleted outside SCIM: its SCIM attributes go now
        call.db.execute(
            delete(ScimResource).where(
                ScimResource.org_id == call.org_id, ScimResource.resource_id == resource_id
            ),
            execution_options=org_scoped(call.org_id),
        )


def _exists(call: Call, user_id: str) -> bool:
    try:
        identity.provisioned_user(call.db, call.org_id, user_id)
    except NotFound:
        return False
    return True


def create_user(call: Call, body: Any) -> dict[str, Any]:
    call.principal.require(Permission.USERS_MANAGE)
    doc, active = _validated_user(body)
    _unique_user_name(call, doc["userName"], None)
    email = _email_of(doc)
    try:
        user = identity.provision_user(
            call.db,
            call.actor,
            call.org_id,
            email=email,
            name=_name_of(doc),
            role=NEW_USER_ROLE,
            active=active is not False,
        )
    except Conflict:
        raise errors.uniqueness("a user with this email exists") from None
    store_link(call.db, call.org_id, "User", user.id, doc)
    return _user_doc(call, user, stored_link(call.db, call.org_id, user.id), [])


def _write_user(
    call: Call, user: identity.ProvisionedUser, doc: dict[str, Any], active: bool | None
) -> dict[str, Any]:
    _unique_user_name(call, doc["userName"], user.id)
    email = _email_of(doc)
    try:
        updated = identity.update_provisioned_user(
            call.db,
            call.actor,
            call.org_id,
            user.id,
            email=email,
            name=_name_of(doc),
            active=active,
        )
    except Conflict as exc:
        if "admin" in exc.detail:
            raise errors.ScimError(
                "the organisation must keep at least one active admin", status=409
            ) from None
        raise errors.uniqueness("a user with this email exists") from None
    changed = store_link(call.db, call.org_id, "User", user.id, doc)
    same = (updated.email, updated.name, updated.status) == (user.email, user.name, user.status)
    if changed and same:
        audit.record(
            call.db,
            type=EventType.USER_UPDATED,
            actor=call.actor,
            org_id=call.org_id,
            resource=("user", user.id),
            metadata={"via": "scim", "attributes": sorted(doc)},
        )
    if user.status != "suspended" and updated.status == "suspended":
        _deprovisioned(call, updated, "deactivated")
    return _user_doc(
        call,
        updated,
        stored_link(call.db, call.org_id, user.id),
        _groups_of(call.db, call.org_id, user.id),
    )


def _deprovisioned(
    call: Call,
    user: identity.ProvisionedUser | None,
    action: str,
    user_id: str = "",
    role: str = "",
) -> None:
    audit.record(
        call.db,
        type=EventType.SCIM_USER_DEPROVISIONED,
        actor=call.actor,
        org_id=call.org_id,
        resource=("user", user.id if user else user_id),
        metadata={"action": action, "role": user.role if user else role},
    )


def replace_user(call: Call, user_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
    call.principal.require(Permission.USERS_MANAGE)
    current = get_user(call, user_id)
    check_if_match(current, if_match)
    user = _find_user(call, user_id)
    doc, active = _validated_user(body)
    if active is None and "active" in current:  # the status stays, and stays shown
        doc["active"] = current["active"]
    return _write_user(call, user, doc, active)


def patch_user(call: Call, user_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
    call.principal.require(Permission.USERS_MANAGE)
    operations = patch_operations(body)
    current = get_user(call, user_id)
    check_if_match(current, if_match)
    user = _find_user(call, user_id)
    base = {k: v for k, v in current.items() if k not in ("id", "meta", "groups")}
    result = patch.apply(base, operations, USER_URN, USER_EXTENSIONS)
    doc, active = _validated_user(result)
    return _write_user(call, user, doc, active)


def delete_user(call: Call, user_id: str, if_match: str | None) -> None:
    call.principal.require(Permission.USERS_MANAGE)
    current = get_user(call, user_id)
    check_if_match(current, if_match)
    try:
        role = identity.delete_provisioned_user(call.db, call.actor, call.org_id, user_id)
    except Conflict:
        raise errors.ScimError(
            "the organisation must keep at least one active admin", status=409
        ) from None
    call.db.execute(
        delete(ScimResource).where(
            ScimResource.org_id == call.org_id, ScimResource.resource_id == user_id
        ),
        execution_options=org_scoped(call.org_id),
    )
    _deprovisioned(call, None, "deleted", user_id=user_id, role=role)
