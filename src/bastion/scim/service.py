"""SCIM 2.0 provisioning: the organisation's SCIM tokens, and its users and teams as SCIM
Users and Groups (RFC 7643/7644).

Users are Bastion users: `userName` is their email (or, when the identity provider's
userName is not an address, their primary email), `active: false` suspends them, and
DELETE deletes them; both end their sessions and stop their API keys at once, on every
worker (identity's own suspension, through `identity.service`). The last active admin
of the organisation is never de-provisioned (409). Groups are teams, with members.
Whatever else the client sends of a resource (externalId, name parts, emails, the
enterprise extension) is kept as sent, in `scim_resources`, and returned as such.

Every change is audited in the request's transaction with the SCIM token as the actor;
de-provisioning (deactivation or deletion) also records `scim_user.deprovisioned` with
the user's role, which the `scim_admin_deprovisioned` alert rule watches.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.db import org_scoped
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import service as identity
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.scim import errors, patch
from bastion.scim.filter import Compare, InvalidFilter, Logical, Node, matches, parse_filter
from bastion.scim.models import ScimResource, ScimToken
from bastion.tenancy import service as tenancy

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

USER_EXTENSIONS = frozenset({ENTERPRISE_URN.lower()})
MAX_COUNT = 200  # ServiceProviderConfig filter.maxResults
MAX_JSON_DEPTH = 8
NEW_USER_ROLE = "member"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")


# --- tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: ScimToken
    secret: str  # shown once

    def __repr__(self) -> str:
        return f"IssuedToken(token={self.token.id})"


def create_token(
    db: Session, principal: Principal, org_id: str, *, name: str, hasher: TokenHasher
) -> IssuedToken:
    """A SCIM token for the organisation's identity provider. It can create users and
    suspend anyone (admins included), so it is an identity-provisioning setting like
    SSO: an admin's permission, and for a person a recent verification (step-up)."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require(Permission.USERS_MANAGE)
    principal.require_recent_auth("scim_token.create")
    token_id = new_id("sct")
    secret, digest, version = hasher.issue(TokenKind.SCIM, token_id)
    row = ScimToken(
        id=token_id,
        org_id=org_id,
        name=name,
        token_hash=digest,
        pepper_version=version,
        created_by=principal.id,
        created_at=utcnow(),
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        type=EventType.SCIM_TOKEN_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("scim_token", token_id),
        metadata={"name": name},
    )
    return IssuedToken(row, secret)


def list_tokens(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[ScimToken]:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    stmt = select(ScimToken).where(ScimToken.org_id == org_id)
    return newest_first(db, stmt, ScimToken.id, limit=limit, cursor=cursor)


def revoke_token(db: Session, principal: Principal, org_id: str, token_id: str) -> None:
    """Revoked at once, on every worker (the row bumps the organisation's auth revision).
    No step-up: taking access away must stay quick in an incident."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    row = None
    if has_prefix(token_id, "sct"):
        row = db.execute(
            select(ScimToken).where(ScimToken.org_id == org_id, ScimToken.id == token_id)
        ).scalar_one_or_none()
    if row is None:
        raise NotFound("SCIM token not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
        audit.record(
            db,
            type=EventType.SCIM_TOKEN_REVOKED,
            actor=principal.actor,
            org_id=org_id,
            resource=("scim_token", token_id),
            metadata={"name": row.name},
        )


# --- shared -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One SCIM request: its database session, the token's principal, the absolute base
    URL of `/scim/v2` (for `meta.location`)."""

    db: Session
    principal: Principal
    base_url: str

    @property
    def org_id(self) -> str:
        return self.principal.org_id

    @property
    def actor(self) -> Actor:
        return self.principal.actor


def _time(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag_of(doc: dict[str, Any]) -> str:
    """A weak ETag over the resource's representation (without its `meta`)."""
    body = {k: v for k, v in doc.items() if k != "meta"}
    digest = sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))
    return f'W/"{digest[:32]}"'


def _finish(doc: dict[str, Any]) -> dict[str, Any]:
    doc["meta"]["version"] = etag_of(doc)
    return doc


def check_if_match(doc: dict[str, Any], if_match: str | None) -> None:
    if if_match is None:
        return
    wanted = {t.strip() for t in if_match.split(",")}
    current = doc["meta"]["version"]
    strip = current.removeprefix("W/")
    if "*" in wanted or current in wanted or strip in wanted:
        return
    raise errors.precondition_failed()


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _clean_text(value: str, limit: int = 200) -> str:
    kept = "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf"))
    return kept.strip()[:limit]


def _links(db: Session, org_id: str, kind: str) -> dict[str, ScimResource]:
    rows = db.execute(
        select(ScimResource).where(
            ScimResource.org_id == org_id, ScimResource.resource_type == kind
        )
    ).scalars()
    return {r.resource_id: r for r in rows}


def _link(db: Session, org_id: str, resource_id: str) -> ScimResource | None:
    row = db.get(ScimResource, resource_id)
    return row if row is not None and row.org_id == org_id else None


def _store_link(
    db: Session, org_id: str, kind: str, resource_id: str, attributes: dict[str, Any]
) -> bool:
    """Keep the client's attributes; True when they changed."""
    external = attributes.get("externalId")
    user_name = attributes.get("userName")
    user_name = user_name.strip().lower() if isinstance(user_name, str) else None
    row = _link(db, org_id, resource_id)
    now = utcnow()
    if row is None:
        db.add(
            ScimResource(
                resource_id=resource_id,
                org_id=org_id,
                resource_type=kind,
                external_id=external,
                user_name=user_name,
                attributes=attributes,
                created_at=now,
                updated_at=now,
            )
        )
        db.flush()
        return True
    if row.attributes == attributes:
        return False
    row.attributes, row.external_id, row.updated_at = attributes, external, now
    row.user_name = user_name
    db.flush()
    return True


def _parsed(filter_text: str | None, core_urn: str) -> Node | None:
    if filter_text is None:
        return None
    try:
        return parse_filter(filter_text, core_urn)
    except InvalidFilter as exc:
        raise errors.invalid_filter(f"filter {exc}") from None


def _page(
    docs: list[dict[str, Any]], node: Node | None, start_index: int | None, count: int | None
) -> dict[str, Any]:
    if node is not None:
        docs = [d for d in docs if matches(node, d)]
    start = max(1, start_index or 1)
    size = MAX_COUNT if count is None else max(0, min(count, MAX_COUNT))
    window = docs[start - 1 : start - 1 + size]
    return {
        "schemas": [LIST_URN],
        "totalResults": len(docs),
        "startIndex": start,
        "itemsPerPage": len(window),
        "Resources": window,
    }


# --- users --------------------------------------------------------------------------


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
            return _clean_text(candidate)
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
    if _depth(body) > MAX_JSON_DEPTH:
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
        "created": _time(user.created_at),
        "lastModified": _time(modified),
        "location": location,
    }
    return _finish(out)


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
    node = _parsed(filter_text, USER_URN)
    ids = _user_candidates(call, node) if node is not None else None
    users = identity.provisioned_users(call.db, call.org_id, ids=ids)
    if ids is None:
        links = _links(call.db, call.org_id, "User")
        groups = _groups_by_user(call.db, call.org_id)
    else:
        links = {u.id: link for u in users if (link := _link(call.db, call.org_id, u.id))}
        groups = {u.id: _groups_of(call.db, call.org_id, u.id) for u in users}
    docs = [_user_doc(call, u, links.get(u.id), groups.get(u.id, [])) for u in users]
    return _page(docs, node, start_index, count)


def get_user(call: Call, user_id: str) -> dict[str, Any]:
    call.principal.require(Permission.USERS_READ)
    user = _find_user(call, user_id)
    link = _link(call.db, call.org_id, user.id)
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
    _store_link(call.db, call.org_id, "User", user.id, doc)
    return _user_doc(call, user, _link(call.db, call.org_id, user.id), [])


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
    changed = _store_link(call.db, call.org_id, "User", user.id, doc)
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
        _link(call.db, call.org_id, user.id),
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
    operations = _operations(body)
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


def _operations(body: Any) -> Any:
    if not isinstance(body, dict):
        raise errors.invalid_syntax("the body must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or PATCH_URN not in schemas:
        raise errors.invalid_syntax(f"schemas must include {PATCH_URN}")
    for key, value in body.items():
        if key.lower() == "operations":
            return value
    raise errors.invalid_syntax("Operations is required")


# --- groups (teams) -----------------------------------------------------------------


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
        "created": _time(team.created_at),
        "lastModified": _time(modified),
        "location": f"{call.base_url}/Groups/{team.id}",
    }
    return _finish(out)


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
    links = _links(call.db, call.org_id, "Group")
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
    return _page(docs, _parsed(filter_text, GROUP_URN), start_index, count)


def get_group(call: Call, team_id: str) -> dict[str, Any]:
    call.principal.require(Permission.TEAMS_READ)
    team = _find_team(call, team_id)
    members = tenancy.team_member_ids(call.db, call.org_id, team.id)
    return _group_doc(call, team, _link(call.db, call.org_id, team.id), members)


def _validated_group(  # noqa: PLR0912 - one branch per attribute rule
    body: Any,
) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(body, dict):
        raise errors.invalid_syntax("the body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
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
                        kept.append({"value": uid, "display": _clean_text(display)})
            doc["members"] = kept  # the members' display names, as sent
            continue
        canonical = {"displayname": "displayName", "externalid": "externalId"}.get(lowered, key)
        doc[str(canonical)] = value
    name = doc.get("displayName")
    if not isinstance(name, str) or not _clean_text(name):
        raise errors.invalid_value("displayName is required")
    doc["displayName"] = _clean_text(name)
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
    _store_link(
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
    if _store_link(call.db, call.org_id, "Group", team.id, kept):
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
    operations = _operations(body)
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
