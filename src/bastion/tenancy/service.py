"""Organisations and teams. Every query is scoped by organisation.

Users live in identity, a layer above: a team's members are checked through the user
lookup identity registers (`register_user_lookup`); until it has, nobody can be added
(fail closed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, insert, select
from sqlalchemy.orm import Session

from bastion.audit import retention
from bastion.audit import service as audit
from bastion.core import clientip, groupcommit, mfa, revisions
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.db import fetch, org_scoped
from bastion.core.errors import Conflict, FieldError, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import service as secrets
from bastion.secrets.vault import Vault
from bastion.tenancy.models import INSTANCE_AUDIT_RETENTION_DAYS, Organization, Team, TeamMember

ORG_DELETED = "deleted"  # Organization.status: credentials refused, data keys destroyed


def create_org(
    db: Session, actor: Actor, *, name: str, region: str = "default", org_id: str | None = None
) -> Organization:
    """Instance bootstrap only (the CLI): organisations are not created over the API.
    `region` is fixed for good (data residency); `org_id` when the directory already
    routes it (`bastion org create --region`)."""
    if not name.strip():
        raise InvalidInput.field("name", "must not be empty")
    org = Organization(id=org_id or new_id("org"), name=name.strip(), region=region)
    db.add(org)
    db.flush()
    audit.start_chain(db, org.id)
    audit.record(
        db,
        type=EventType.ORG_CREATED,
        actor=actor,
        org_id=org.id,
        resource=("org", org.id),
        metadata={"name": org.name, "region": region},
    )
    return org


def find_org(db: Session, org_id: str) -> Organization | None:
    """The organisation, whatever its status, for a domain acting for a caller it has
    already identified (sign-in reads its status and session timeouts)."""
    return db.get(Organization, org_id)


def org_status(org_id: Any) -> ColumnElement[str]:
    """The status of the organisation `org_id` (a column or a value) as a scalar
    subquery, so a caller's one hot query (a credential's check) reads it without a
    second round trip."""
    return select(Organization.status).where(Organization.id == org_id).scalar_subquery()


def org_mfa_policy(org_id: Any) -> ColumnElement[str]:
    """The organisation's `mfa_policy`, as `org_status` reads its status."""
    return select(Organization.mfa_policy).where(Organization.id == org_id).scalar_subquery()


def org_step_up_max_age(org_id: Any) -> ColumnElement[int]:
    """The organisation's `step_up_max_age`, as `org_status` reads its status."""
    stmt = select(Organization.step_up_max_age).where(Organization.id == org_id)
    return stmt.scalar_subquery()


def org_refuses_admin_keys(org_id: Any) -> ColumnElement[bool]:
    """Whether the organisation refuses admin-role keys the step-up actions (read with a
    key's check in its one query, as `org_status` is)."""
    stmt = select(Organization.step_up_refuses_admin_keys).where(Organization.id == org_id)
    return stmt.scalar_subquery()


def org_ip_allowlist(org_id: Any) -> ColumnElement[Any]:
    """The IP allowlist of the organisation `org_id` (a column or a value) as a scalar
    subquery, read with a credential's check in its one query (see `org_status`)."""
    return select(Organization.ip_allowlist).where(Organization.id == org_id).scalar_subquery()


def sso_policy(db: Session, org_id: str) -> tuple[bool, bool]:
    """The organisation's (`sso_enforced`, `sso_break_glass`); (False, False) when gone."""
    row = db.execute(
        select(Organization.sso_enforced, Organization.sso_break_glass).where(
            Organization.id == org_id
        )
    ).first()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


def ip_allowlist(db: Session, org_id: str) -> list[str]:
    """The organisation's IP allowlist (empty: any address); for credentials whose
    resolver does not read it in its own query."""
    found = db.execute(select(Organization.ip_allowlist).where(Organization.id == org_id))
    value = found.scalar_one_or_none()
    return list(value or [])


def get_org(db: Session, principal: Principal, org_id: str) -> Organization:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    org = db.get(Organization, org_id)
    if org is None:
        raise NotFound("organization not found")
    return org


def update_org(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    name: str | None,
    session_idle_timeout: int | None,
    session_absolute_timeout: int | None,
    fields_set: set[str],
    audit_retention_days: int | None = None,
    mfa_policy: str | None = None,
    mfa_methods: list[str] | None = None,
    step_up_max_age: int | None = None,
    step_up_refuses_admin_keys: bool | None = None,
    password_min_length: int | None = None,
    password_breached_check: bool | None = None,
    max_sessions_per_user: int | None = None,
    ip_allowlist: list[str] | None = None,
    confirm_lockout: bool = False,
    sso_enforced: bool | None = None,
    sso_break_glass: bool | None = None,
    region: str | None = None,
) -> Organization:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    org = db.get(Organization, org_id)
    if org is None:
        raise NotFound("organization not found")
    if region is not None and region != org.region:
        raise Conflict(
            "an organisation's region is fixed at creation; move it with"
            " `bastion org export` and `bastion org import --region`"
        )
    mfa_changes = {
        "mfa_policy": mfa_policy,
        "mfa_methods": sorted(set(mfa_methods)) if mfa_methods is not None else None,
        "step_up_max_age": step_up_max_age,
        "step_up_refuses_admin_keys": step_up_refuses_admin_keys,
    }
    mfa_changes = {k: v for k, v in mfa_changes.items() if v is not None}
    if mfa_methods is not None and not set(mfa_methods) & set(mfa.AVAILABLE):
        raise InvalidInput.field(
            "mfa_methods", f"must include a method members can enrol: {', '.join(mfa.AVAILABLE)}"
        )
    _step_up_for(principal, org, mfa_changes, audit_retention_days)
    changes: dict[str, object] = {}
    for name_, value in mfa_changes.items():
        setattr(org, name_, value)
        changes[name_] = value
    if password_min_length is not None:
        org.password_min_length = password_min_length
        changes["password_min_length"] = password_min_length
    if password_breached_check is not None:
        org.password_breached_check = password_breached_check
        changes["password_breached_check"] = password_breached_check
    if "max_sessions_per_user" in fields_set:
        org.max_sessions_per_user = max_sessions_per_user
        changes["max_sessions_per_user"] = max_sessions_per_user
    if ip_allowlist is not None:
        _set_ip_allowlist(db, principal, org, ip_allowlist, confirm_lockout=confirm_lockout)
    changes.update(_set_sso(principal, org, sso_enforced, sso_break_glass))
    if name is not None:
        org.name, changes["name"] = name, name
    if "session_idle_timeout" in fields_set:
        org.session_idle_timeout = session_idle_timeout
        changes["session_idle_timeout"] = session_idle_timeout
    if "session_absolute_timeout" in fields_set:
        org.session_absolute_timeout = session_absolute_timeout
        changes["session_absolute_timeout"] = session_absolute_timeout
    if audit_retention_days is not None:
        org.audit_retention_days = audit_retention_days
        changes["audit_retention_days"] = audit_retention_days
    org.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.ORG_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata=changes,
    )
    return org


def _step_up_for(
    principal: Principal,
    org: Organization,
    mfa_changes: Mapping[str, object],
    audit_retention_days: int | None,
) -> None:
    """Changing MFA or retention settings needs a recent verification (RFC 9470 step-up;
    the IP allowlist's is checked where it is saved)."""
    if mfa_changes:
        principal.require_recent_auth("org.mfa_settings")
    if audit_retention_days is not None and audit_retention_days != org.audit_retention_days:
        principal.require_recent_auth("org.retention")


def _set_sso(
    principal: Principal, org: Organization, enforced: bool | None, break_glass: bool | None
) -> dict[str, bool]:
    """Change `sso_enforced` / `sso_break_glass`: SSO settings, so a person steps up
    (RFC 9470) for a change; saving them unchanged does not. The changes made."""
    wanted = (("sso_enforced", enforced), ("sso_break_glass", break_glass))
    changes = {k: v for k, v in wanted if v is not None and v != getattr(org, k)}
    if changes:
        principal.require_recent_auth("org.sso_settings")
        for name, value in changes.items():
            setattr(org, name, value)
    return changes


def _set_ip_allowlist(
    db: Session,
    principal: Principal,
    org: Organization,
    entries: list[str],
    *,
    confirm_lockout: bool,
) -> None:
    """Save the allowlist (canonical networks, duplicates dropped), refusing one that
    would shut out the caller's own address unless they confirm it, and audit the
    change. A change is an IP setting: a person needs step-up (RFC 9470); saving the
    list unchanged does not. Its row change bumps the org's auth revision: every
    credential's cached allowlist is replaced by the very next request on every worker."""
    try:
        networks = clientip.normalize_networks(entries)
    except clientip.BadNetwork as exc:
        raise InvalidInput.field(
            f"ip_allowlist.{exc.index}", "must be an IPv4 or IPv6 address or CIDR network"
        ) from None
    before = list(org.ip_allowlist or [])
    if before == networks:
        return
    principal.require_recent_auth("org.ip_allowlist")
    caller = clientip.parse_address(principal.actor.ip)
    parsed = clientip.parse_networks(networks)
    if networks and not clientip.contains(parsed, caller) and not confirm_lockout:
        message = (
            "excludes the address of this request; send confirm_lockout: true to save it anyway"
        )
        raise InvalidInput(
            f"ip_allowlist: {message}",
            errors=[
                FieldError("ip_allowlist", message),
                FieldError("confirm_lockout", "must be true to save a list that excludes you"),
            ],
        )
    org.ip_allowlist = networks
    audit.record(
        db,
        type=EventType.ORG_IP_ALLOWLIST_CHANGED,
        actor=principal.actor,
        org_id=org.id,
        resource=("org", org.id),
        metadata={
            "from": before,
            "to": networks,
            "excludes_caller": bool(networks) and not clientip.contains(parsed, caller),
        },
    )


def delete_org(
    db: Session, vault: Vault, actor: Actor, org_id: str, principal: Principal | None = None
) -> int:
    """Delete an organisation, in one transaction: mark it deleted (the row change bumps
    its auth revision, so every session and API key of it is refused on the very next
    request on every worker) and destroy its data keys (crypto-shredding: its secrets can
    no longer be decrypted). The event closes the organisation's own chain. `principal`
    is None only for the CLI. Returns the number of data keys destroyed."""
    if principal is not None:
        principal.require_org(org_id)
        principal.require(Permission.ORG_MANAGE)
    org = db.get(Organization, org_id) if has_prefix(org_id, "org") else None
    if org is None or org.status == ORG_DELETED:
        raise NotFound("organization not found")
    org.status = ORG_DELETED
    org.updated_at = utcnow()
    db.flush()
    shredded = secrets.shred_org(db, vault, org_id)
    audit.record(
        db,
        type=EventType.ORG_DELETED,
        actor=actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"name": org.name, "data_keys_destroyed": shredded},
    )
    return shredded


def audit_retention_of(db: Session, org_id: str) -> int | None:
    """The organisation's audit retention period in days (None: no such organisation)."""
    found = db.execute(select(Organization.audit_retention_days).where(Organization.id == org_id))
    value = found.scalar_one_or_none()
    return None if value is None else int(value)


def set_audit_retention(db: Session, org_id: str, days: int) -> None:
    """Set it (the caller checked the right, the step-up, and audits the change)."""
    org = db.get(Organization, org_id)
    if org is None:
        raise NotFound("organization not found")
    org.audit_retention_days = days
    org.updated_at = utcnow()


def active_org_ids(db: Session) -> list[str]:
    """The ids of the organisations not deleted."""
    stmt = select(Organization.id).where(Organization.status != ORG_DELETED)
    return list(db.execute(stmt.order_by(Organization.id)).scalars())


def apply_audit_retention(db: Session) -> list[retention.Purge]:
    """Purge each organisation's audit events older than its retention period (and the
    instance chain's, by the instance default), always through a signed checkpoint."""
    results = []
    for org_id, days in db.execute(
        select(Organization.id, Organization.audit_retention_days)
    ).all():
        results.append(retention.purge_chain(db, org_id, days))
    results.append(retention.purge_instance_chain(db, INSTANCE_AUDIT_RETENTION_DAYS))
    return results


# --- teams -------------------------------------------------------------------------

# (db, org_id, user_id) -> the user's id, or raises NotFound when the organisation has
# no such user. Registered by identity, which owns users.
UserLookup = Callable[[Session, str, str], str]
_user_lookup: list[UserLookup] = []  # at most one: identity's


def register_user_lookup(lookup: UserLookup) -> None:
    """Called by identity at import."""
    _user_lookup[:] = [lookup]


def _member_id(db: Session, org_id: str, user_id: str) -> str:
    if not _user_lookup:  # nobody can vouch for the user: refuse, as for an unknown one
        raise NotFound("user not found")
    return _user_lookup[0](db, org_id, user_id)


def _find_team(db: Session, org_id: str, team_id: str) -> Team:
    if not has_prefix(team_id, "team"):
        raise NotFound("team not found")
    team = db.execute(
        select(Team).where(Team.org_id == org_id, Team.id == team_id)
    ).scalar_one_or_none()
    if team is None:
        raise NotFound("team not found")
    return team


def _ensure_name_free(db: Session, org_id: str, name: str) -> None:
    """In plain SQL (`fetch`): team creation runs this in the writer for every unit,
    where building the ORM statement cost several times the lookup."""
    if fetch(db, "SELECT 1 FROM teams WHERE org_id = ? AND name = ?", (org_id, name)):
        raise Conflict("a team with this name already exists")


def create_team(
    db: Session, principal: Principal, org_id: str, *, name: str, description: str
) -> Team:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_MANAGE)
    now = utcnow()
    team = Team(
        id=new_id("team"),
        org_id=org_id,
        name=name,
        description=description,
        created_at=now,
        updated_at=now,
    )

    row = {
        "id": team.id,
        "org_id": org_id,
        "name": name,
        "description": description,
        "created_at": now,
        "updated_at": now,
    }

    def write(writer: Session) -> None:
        # In the writer's transaction: a create committed just before this one counts.
        # Staged, so a batch's teams go in one INSERT (a plain row: no mapped object to
        # flush): two units of one batch taking the same name both pass the check, the
        # unique constraint refuses the batch's insert, and the units then run again
        # each in a transaction of its own, where the second one meets this check.
        _ensure_name_free(writer, org_id, name)
        if not groupcommit.stage(writer, _STAGED_TEAMS, row):
            _insert_teams(writer, [row])

    groupcommit.defer(db, write)
    audit.record(
        db,
        type=EventType.TEAM_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("team", team.id),
        metadata={"name": name},
    )
    return team


_STAGED_TEAMS = "tenancy.teams"
_INSERT_TEAMS = insert(cast(Table, Team.__table__))


def _insert_teams(db: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new teams as plain rows. A new team changes the organisation's data-access
    model (the flush of a mapped one would bump its revision: see `revisions.watch`)."""
    db.connection().execute(_INSERT_TEAMS, rows)
    revisions.bump(db, {row["org_id"] for row in rows}, revisions.AuthzRevision)


groupcommit.on_flush(_STAGED_TEAMS, _insert_teams)


def list_teams(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[Team]:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_READ)
    stmt = select(Team).where(Team.org_id == org_id)
    return newest_first(db, stmt, Team.id, limit=limit, cursor=cursor)


def get_team(db: Session, principal: Principal, org_id: str, team_id: str) -> Team:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_READ)
    return _find_team(db, org_id, team_id)


def team_member_ids(db: Session, org_id: str, team_id: str) -> list[str]:
    rows = db.execute(
        select(TeamMember.user_id)
        .where(TeamMember.org_id == org_id, TeamMember.team_id == team_id)
        .order_by(TeamMember.user_id)
    ).scalars()
    return list(rows)


def teams_of(db: Session, org_id: str, user_id: str | None) -> frozenset[str]:
    """The teams a user belongs to (none for anyone who is not a user)."""
    if user_id is None:
        return frozenset()
    rows = db.execute(
        select(TeamMember.team_id).where(TeamMember.org_id == org_id, TeamMember.user_id == user_id)
    ).scalars()
    return frozenset(rows)


def team_facts(db: Session, org_id: str) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Every member's teams (user id -> team ids) and every team of the organisation:
    what authorization's index holds, read in two queries (memberships first)."""
    teams: dict[str, set[str]] = {}
    team_ids: set[str] = set()
    for team_id, user_id in db.execute(
        select(TeamMember.team_id, TeamMember.user_id).where(TeamMember.org_id == org_id)
    ):
        teams.setdefault(user_id, set()).add(team_id)
        team_ids.add(team_id)
    team_ids |= set(db.execute(select(Team.id).where(Team.org_id == org_id)).scalars())
    return {u: frozenset(t) for u, t in teams.items()}, frozenset(team_ids)


def existing_team_ids(db: Session, org_id: str, team_ids: list[str]) -> set[str]:
    if not team_ids:
        return set()
    rows = db.execute(select(Team.id).where(Team.org_id == org_id, Team.id.in_(team_ids)))
    return set(rows.scalars())


def update_team(
    db: Session,
    principal: Principal,
    org_id: str,
    team_id: str,
    *,
    name: str | None,
    description: str | None,
) -> Team:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_MANAGE)
    team = _find_team(db, org_id, team_id)
    changes: dict[str, object] = {}
    if name is not None and name != team.name:
        _ensure_name_free(db, org_id, name)
        team.name, changes["name"] = name, name
    if description is not None:
        team.description, changes["description"] = description, description
    team.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.TEAM_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("team", team.id),
        metadata=changes,
    )
    return team


def delete_team(db: Session, principal: Principal, org_id: str, team_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_MANAGE)
    team = _find_team(db, org_id, team_id)
    db.execute(
        delete(TeamMember).where(TeamMember.team_id == team.id),
        execution_options=org_scoped(team.org_id),
    )
    db.delete(team)
    db.flush()
    audit.record(
        db,
        type=EventType.TEAM_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("team", team_id),
        metadata={"name": team.name},
    )


def add_member(db: Session, principal: Principal, org_id: str, team_id: str, user_id: str) -> bool:
    """Idempotent PUT: returns True when the membership was created."""
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_MANAGE)
    team = _find_team(db, org_id, team_id)
    member_id = _member_id(db, org_id, user_id)
    if db.get(TeamMember, (team.id, member_id)) is not None:
        return False
    db.add(TeamMember(team_id=team.id, user_id=member_id, org_id=org_id))
    db.flush()
    audit.record(
        db,
        type=EventType.TEAM_MEMBER_ADDED,
        actor=principal.actor,
        org_id=org_id,
        resource=("team", team.id),
        metadata={"user_id": member_id},
    )
    return True


def remove_member(
    db: Session, principal: Principal, org_id: str, team_id: str, user_id: str
) -> None:
    principal.require_org(org_id)
    principal.require(Permission.TEAMS_MANAGE)
    team = _find_team(db, org_id, team_id)
    membership = db.get(TeamMember, (team.id, user_id)) if has_prefix(user_id, "usr") else None
    if membership is None or membership.org_id != org_id:
        raise NotFound("membership not found")
    db.delete(membership)
    db.flush()
    audit.record(
        db,
        type=EventType.TEAM_MEMBER_REMOVED,
        actor=principal.actor,
        org_id=org_id,
        resource=("team", team.id),
        metadata={"user_id": user_id},
    )


def sync_memberships(
    db: Session,
    actor: Actor,
    org_id: str,
    user_id: str,
    *,
    wanted: set[str],
    managed: set[str],
) -> tuple[list[str], list[str]]:
    """Make the user a member of exactly the teams of `wanted` among those of `managed`
    (the teams an SSO connection's mapping manages; other memberships are left alone).
    Teams that are not the organisation's are skipped. Each change is audited;
    returns (teams joined, teams left)."""
    existing = existing_team_ids(db, org_id, sorted(managed | wanted))
    current = set(
        db.execute(
            select(TeamMember.team_id).where(
                TeamMember.org_id == org_id,
                TeamMember.user_id == user_id,
                TeamMember.team_id.in_(sorted(existing)),
            )
        ).scalars()
    )
    added = sorted((wanted & existing) - current)
    removed = sorted((current & managed & existing) - wanted)
    for team_id in added:
        db.add(TeamMember(team_id=team_id, user_id=user_id, org_id=org_id))
    if removed:
        db.execute(
            delete(TeamMember).where(
                TeamMember.org_id == org_id,
                TeamMember.user_id == user_id,
                TeamMember.team_id.in_(removed),
            ),
            execution_options=org_scoped(org_id),
        )
    db.flush()
    for team_id in added:
        audit.record(
            db,
            type=EventType.TEAM_MEMBER_ADDED,
            actor=actor,
            org_id=org_id,
            resource=("team", team_id),
            metadata={"user_id": user_id, "via": "sso"},
        )
    for team_id in removed:
        audit.record(
            db,
            type=EventType.TEAM_MEMBER_REMOVED,
            actor=actor,
            org_id=org_id,
            resource=("team", team_id),
            metadata={"user_id": user_id, "via": "sso"},
        )
    return added, removed


def org_teams(db: Session, org_id: str) -> list[Team]:
    """Every team of the organisation, oldest first (SCIM's stable list order)."""
    return list(db.execute(select(Team).where(Team.org_id == org_id).order_by(Team.id)).scalars())
