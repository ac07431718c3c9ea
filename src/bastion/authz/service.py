"""Roles, custom roles and temporary grants; what a principal may do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz.models import Role, RoleGrant
from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole, is_builtin
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission, parse_permissions
from bastion.core.principal import Principal

# Parsed custom-role permissions, keyed by (role id, updated_at): a change to the role
# changes the key, so a stale entry is never used.
_custom_cache: dict[tuple[str, datetime], frozenset[Permission]] = {}
_CACHE_MAX = 10_000


def custom_role_permissions(role: Role) -> frozenset[Permission]:
    key = (role.id, role.updated_at)
    cached = _custom_cache.get(key)
    if cached is None:
        cached, _ = parse_permissions(role.permissions)
        if len(_custom_cache) >= _CACHE_MAX:
            _custom_cache.clear()
        _custom_cache[key] = cached
    return cached


def permissions_of_role(db: Session, org_id: str, role: str) -> frozenset[Permission]:
    """Permissions of a built-in role name or a custom role id; unknown → none."""
    if is_builtin(role):
        return BUILTIN_PERMISSIONS[BuiltinRole(role)]
    if not has_prefix(role, "role"):
        return frozenset()
    row = db.execute(
        select(Role).where(Role.org_id == org_id, Role.id == role)
    ).scalar_one_or_none()
    return custom_role_permissions(row) if row else frozenset()


def resolve_role(db: Session, org_id: str, value: str, *, field: str = "role") -> str:
    """Turn what a caller wrote (built-in name, custom role id or name) into the stored form."""
    if is_builtin(value):
        return value
    stmt = select(Role.id).where(Role.org_id == org_id)
    stmt = (
        stmt.where(Role.id == value)
        if has_prefix(value, "role")
        else stmt.where(Role.name == value)
    )
    role_id = db.execute(stmt).scalar_one_or_none()
    if role_id is None:
        raise InvalidInput.field(field, "unknown role: neither built-in nor of this organisation")
    return role_id


def ensure_can_confer(
    principal: Principal, permissions: Iterable[Permission], *, until: datetime | None
) -> None:
    """The one rule for handing rights on (a user's role, an API key, a service account,
    a custom role, a grant), where `until` is when what is given ends (None: never).
    Nobody hands out a permission they do not hold; and one held only through a
    temporary grant is handed out only until that grant ends, so that rights that end
    are not laundered into rights that do not."""
    wanted = set(permissions)
    missing = sorted(wanted - principal.permissions)
    if missing:
        raise Forbidden(f"cannot confer permissions you lack: {', '.join(missing)}")
    outliving = sorted(
        p
        for p in wanted & principal.temporary.keys()
        if until is None or as_utc(until) > as_utc(principal.temporary[p])
    )
    if outliving:
        ends = min(as_utc(principal.temporary[p]) for p in outliving)
        raise Forbidden(
            f"you hold {', '.join(outliving)} only through a temporary grant (until "
            f"{ends.isoformat()}): what you give must end no later"
        )


def ensure_outranks(principal: Principal, permissions: Iterable[Permission], what: str) -> None:
    """Nobody acts on `what` (a user, its grant, a role, a service account) holding a
    permission the caller lacks: it outranks them."""
    missing = sorted(set(permissions) - principal.permissions)
    if missing:
        raise Forbidden(f"{what} holds permissions you lack: {', '.join(missing)}")


def active_grant_roles(db: Session, user_id: str, now: datetime) -> list[str]:
    stmt = select(RoleGrant.role).where(
        RoleGrant.user_id == user_id, RoleGrant.expires_at > now, RoleGrant.revoked_at.is_(None)
    )
    return list(db.execute(stmt).scalars())


@dataclass(frozen=True)
class Rights:
    """What a user may do at this instant: `permissions` (their role's and their grants'
    in force) and, of those, the `temporary` ones their role lacks, each with the instant
    the last grant giving it ends."""

    permissions: frozenset[Permission]
    temporary: Mapping[Permission, datetime]


def user_rights(
    db: Session, org_id: str, role: str, user_id: str, grants_until: datetime | None
) -> Rights:
    """A user's role plus every grant still in force at this instant (no job needed)."""
    lasting = permissions_of_role(db, org_id, role)
    temporary: dict[Permission, datetime] = {}
    now = utcnow()
    if grants_until is not None and grants_until > now:
        grants = db.execute(
            select(RoleGrant.role, RoleGrant.expires_at).where(
                RoleGrant.user_id == user_id,
                RoleGrant.expires_at > now,
                RoleGrant.revoked_at.is_(None),
            )
        ).all()
        for granted, expires_at in grants:
            ends = as_utc(expires_at)
            for permission in permissions_of_role(db, org_id, granted) - lasting:
                if permission not in temporary or temporary[permission] < ends:
                    temporary[permission] = ends
    return Rights(lasting | frozenset(temporary), temporary)


def user_permissions(
    db: Session, org_id: str, role: str, user_id: str, grants_until: datetime | None
) -> frozenset[Permission]:
    """A user's role plus every grant still in force at this instant (no job needed)."""
    return user_rights(db, org_id, role, user_id, grants_until).permissions


# --- custom roles -------------------------------------------------------------------


def _validated_permissions(values: list[str]) -> list[str]:
    known, unknown = parse_permissions(values)
    if unknown:
        # Not named: what a caller wrote is not echoed (GET /v1/permissions lists them).
        raise InvalidInput.field("permissions", "names a permission that does not exist")
    return sorted(known)


def list_roles(
    db: Session, principal: Principal, org_id: str
) -> list[tuple[str, str, str, list[str], bool]]:
    """(id, name, description, permissions, builtin) for built-ins then custom roles."""
    principal.require_org(org_id)
    principal.require(Permission.ROLES_READ)
    out: list[tuple[str, str, str, list[str], bool]] = []
    from bastion.authz.roles import BUILTIN_DESCRIPTIONS

    for builtin in BuiltinRole:
        perms = sorted(str(p) for p in BUILTIN_PERMISSIONS[builtin])
        out.append((str(builtin), str(builtin), BUILTIN_DESCRIPTIONS[builtin], perms, True))
    rows = db.execute(select(Role).where(Role.org_id == org_id).order_by(Role.id.desc())).scalars()
    for row in rows:
        out.append((row.id, row.name, row.description, sorted(row.permissions), False))
    return out


def get_role(db: Session, principal: Principal, org_id: str, role_id: str) -> Role:
    principal.require_org(org_id)
    principal.require(Permission.ROLES_READ)
    return _find_role(db, org_id, role_id)


def _find_role(db: Session, org_id: str, role_id: str) -> Role:
    if not has_prefix(role_id, "role"):
        raise NotFound("role not found")
    row = db.execute(
        select(Role).where(Role.org_id == org_id, Role.id == role_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("role not found")
    return row


def _check_role_name(name: str) -> None:
    """A custom role's name is neither a built-in's, in any case (a custom `Admin` beside
    the built-in `admin` misleads whoever reads a user's role), nor shaped like a role id."""
    if is_builtin(name.casefold()) or has_prefix(name, "role"):
        raise InvalidInput.field("name", "is reserved (a built-in role's name, or a role id)")


def create_role(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    name: str,
    permissions: list[str],
    description: str = "",
) -> Role:
    principal.require_org(org_id)
    principal.require(Permission.ROLES_MANAGE)
    _check_role_name(name)
    perms = _validated_permissions(permissions)
    ensure_can_confer(principal, (Permission(p) for p in perms), until=None)  # roles last
    exists = db.execute(select(Role.id).where(Role.org_id == org_id, Role.name == name)).first()
    if exists:
        raise Conflict("a role with this name already exists")
    role = Role(
        id=new_id("role"), org_id=org_id, name=name, description=description, permissions=perms
    )
    db.add(role)
    db.flush()
    audit.record(
        db,
        type=EventType.ROLE_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("role", role.id),
        metadata={"name": name, "permissions": perms},
    )
    return role


def update_role(
    db: Session,
    principal: Principal,
    org_id: str,
    role_id: str,
    *,
    name: str | None,
    description: str | None,
    permissions: list[str] | None,
) -> Role:
    principal.require_org(org_id)
    principal.require(Permission.ROLES_MANAGE)
    role = _find_role(db, org_id, role_id)
    changes: dict[str, object] = {}
    if name is not None and name != role.name:
        _check_role_name(name)
        clash = db.execute(select(Role.id).where(Role.org_id == org_id, Role.name == name)).first()
        if clash:
            raise Conflict("a role with this name already exists")
        role.name = name
        changes["name"] = name
    if description is not None:
        role.description = description
        changes["description"] = description
    if permissions is not None:
        perms = _validated_permissions(permissions)
        # Both what it gives and what it takes away: a role above the caller's is not
        # theirs to change (taking permissions away demotes everyone holding it).
        every = (Permission(p) for p in {*perms, *role.permissions})
        ensure_outranks(principal, every, "this role")
        added = (Permission(p) for p in set(perms) - set(role.permissions))
        ensure_can_confer(principal, added, until=None)  # its holders keep them
        role.permissions = perms
        changes["permissions"] = perms
    role.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.ROLE_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("role", role.id),
        metadata=changes,
    )
    return role


def delete_role(db: Session, principal: Principal, org_id: str, role_id: str, in_use: bool) -> None:
    principal.require_org(org_id)
    principal.require(Permission.ROLES_MANAGE)
    role = _find_role(db, org_id, role_id)
    if in_use:
        raise Conflict("role is still assigned; reassign its holders first")
    db.delete(role)
    audit.record(
        db,
        type=EventType.ROLE_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("role", role_id),
        metadata={"name": role.name},
    )


# --- temporary grants ---------------------------------------------------------------

MAX_GRANT_SECONDS = 90 * 24 * 3600


def create_grant(
    db: Session,
    principal: Principal,
    org_id: str,
    user_id: str,
    *,
    role: str,
    expires_at: datetime,
    reason: str,
) -> RoleGrant:
    """Caller must already have checked the user exists in `org_id`."""
    principal.require(Permission.GRANTS_MANAGE)
    stored = resolve_role(db, org_id, role)
    ensure_can_confer(principal, permissions_of_role(db, org_id, stored), until=expires_at)
    now = utcnow()
    if expires_at <= now:
        raise InvalidInput.field("expires_at", "must be in the future")
    if expires_at - now > timedelta(seconds=MAX_GRANT_SECONDS):
        raise InvalidInput.field("expires_at", "must be within 90 days")
    grant = RoleGrant(
        id=new_id("grt"),
        org_id=org_id,
        user_id=user_id,
        role=stored,
        reason=reason,
        expires_at=expires_at,
        granted_by=principal.id,
    )
    db.add(grant)
    db.flush()
    audit.record(
        db,
        type=EventType.ROLE_GRANT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("user", user_id),
        metadata={
            "grant_id": grant.id,
            "role": stored,
            "expires_at": expires_at.isoformat(),
            "reason": reason,
        },
    )
    return grant


def list_grants(
    db: Session, org_id: str, user_id: str, *, limit: int, cursor: str | None
) -> Page[RoleGrant]:
    stmt = select(RoleGrant).where(RoleGrant.org_id == org_id, RoleGrant.user_id == user_id)
    return newest_first(db, stmt, RoleGrant.id, limit=limit, cursor=cursor)


def revoke_grant(
    db: Session, principal: Principal, org_id: str, user_id: str, grant_id: str
) -> None:
    principal.require(Permission.GRANTS_MANAGE)
    if not has_prefix(grant_id, "grt"):
        raise NotFound("grant not found")
    grant = db.execute(
        select(RoleGrant).where(
            RoleGrant.org_id == org_id, RoleGrant.user_id == user_id, RoleGrant.id == grant_id
        )
    ).scalar_one_or_none()
    if grant is None:
        raise NotFound("grant not found")
    # As for giving it: a grant of a role above the caller's is not theirs to end.
    ensure_outranks(principal, permissions_of_role(db, org_id, grant.role), "this grant")
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
        audit.record(
            db,
            type=EventType.ROLE_GRANT_REVOKED,
            actor=principal.actor,
            org_id=org_id,
            resource=("user", user_id),
            metadata={"grant_id": grant_id},
        )


def latest_grant_expiry(db: Session, user_id: str) -> datetime | None:
    return db.execute(
        select(func.max(RoleGrant.expires_at)).where(
            RoleGrant.user_id == user_id, RoleGrant.revoked_at.is_(None)
        )
    ).scalar_one_or_none()
