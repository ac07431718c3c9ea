"""Users: invite, create, change, suspend, delete; the one-time password setup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.db import org_scoped, regions
from bastion.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import passwords, slack, subjects
from bastion.identity.mfa import factors
from bastion.identity.mfa import store as mfa_store
from bastion.identity.models import ApiKey, ServiceAccount, SetupToken, User, UserSession
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.tenancy import service as tenancy

USER_STATUSES = ("active", "invited", "suspended")


class Keep(Enum):
    """A field left as it is (where None means something: `slack_user_id` unlinks)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class CreatedUser:
    user: User
    setup_token: str | None  # shown once, only for invited users

    def __repr__(self) -> str:
        return f"CreatedUser(user={self.user.id})"


def create_user(
    db: Session,
    actor: Actor,
    org_id: str,
    *,
    email: str,
    name: str,
    role: str,
    password: str | None,
    hasher: TokenHasher,
    setup_ttl: int,
    principal: Principal | None = None,
) -> CreatedUser:
    """Create a user. `principal` is None only for instance bootstrap (the CLI)."""
    if principal is not None:
        principal.require_org(org_id)
        principal.require(Permission.USERS_MANAGE)
    stored_role = authz.resolve_role(db, org_id, role)
    if principal is not None:  # a user's role lasts
        granted = authz.permissions_of_role(db, org_id, stored_role)
        authz.ensure_can_confer(principal, granted, until=None)
    normalized = normalize_email(email)
    if db.execute(select(User.id).where(User.email_normalized == normalized)).first():
        raise Conflict("a user with this email already exists")
    if not regions.claim_email(db, normalized, org_id):  # another region's user has it
        raise Conflict("a user with this email already exists")
    if password is not None:
        check_new_password(db, org_id, password, email=email, name=name)
    user = User(
        id=new_id("usr"),
        org_id=org_id,
        email=email.strip(),
        email_normalized=normalized,
        name=name,
        role=stored_role,
        status="active" if password else "invited",
        password_hash=passwords.hash_password(password) if password else None,
        attributes={},
    )
    db.add(user)
    db.flush()
    token = None
    if password is None:
        row_id = new_id("inv")
        token, digest, version = hasher.issue(TokenKind.SETUP, row_id)
        db.add(
            SetupToken(
                id=row_id,
                org_id=org_id,
                user_id=user.id,
                token_hash=digest,
                pepper_version=version,
                expires_at=utcnow() + timedelta(seconds=setup_ttl),
            )
        )
    audit.record(
        db,
        type=EventType.USER_CREATED,
        actor=actor,
        org_id=org_id,
        resource=("user", user.id),
        metadata={"email": user.email, "role": stored_role, "status": user.status},
    )
    return CreatedUser(user, token)


def check_new_password(
    db: Session, org_id: str, password: str, *, email: str, name: str, field: str = "password"
) -> None:
    """A new password obeys the organisation's policy and contains no context word (the
    organisation's name, the user's email local part and name, "bastion")."""
    org = tenancy.find_org(db, org_id)
    policy = (
        passwords.Policy(org.password_min_length, org.password_breached_check)
        if org is not None
        else passwords.Policy()
    )
    context = passwords.context_words(
        whole=[email.strip().rsplit("@", 1)[0]],
        split=[org.name if org is not None else None, name],
    )
    passwords.check_policy(password, field, policy=policy, context=context)


def _find_user(db: Session, org_id: str, user_id: str) -> User:
    if not has_prefix(user_id, "usr"):
        raise NotFound("user not found")
    user = db.execute(
        select(User).where(User.org_id == org_id, User.id == user_id)
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("user not found")
    return user


def get_user(db: Session, principal: Principal, org_id: str, user_id: str) -> User:
    principal.require_org(org_id)
    if user_id != principal.user_id:
        principal.require(Permission.USERS_READ)
    return _find_user(db, org_id, user_id)


def require_user_in_org(db: Session, org_id: str, user_id: str) -> User:
    """For other domains (teams, grants): the user, or 404 when not in this org."""
    return _find_user(db, org_id, user_id)


Person = slack.Person
active_people = slack.active_people
slack_principal = slack.slack_principal
reach = slack.reach
person = slack.person
refuse_outside_slack_allowlist = slack.refuse_outside_allowlist

# Teams (tenancy, below) add members only through this lookup.
tenancy.register_user_lookup(lambda db, org_id, user_id: _find_user(db, org_id, user_id).id)


def list_users(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    email: str | None = None,
) -> Page[User]:
    principal.require_org(org_id)
    principal.require(Permission.USERS_READ)
    stmt = select(User).where(User.org_id == org_id)
    if status:
        stmt = stmt.where(User.status == status)
    if email:
        stmt = stmt.where(User.email_normalized == normalize_email(email))
    return newest_first(db, stmt, User.id, limit=limit, cursor=cursor)


def _ensure_may_manage(db: Session, principal: Principal, target: User) -> None:
    """The one rule for changing any field of another user, or deleting them: it needs
    `users:manage`, and the target must not outrank the caller: neither their role nor a
    grant of theirs still in force may hold a permission the caller lacks."""
    principal.require(Permission.USERS_MANAGE)
    if target.id == principal.user_id:
        raise Conflict("you cannot change your own role or status, or delete yourself")
    held = authz.user_permissions(db, target.org_id, target.role, target.id, target.grants_until)
    authz.ensure_outranks(principal, held, "this user")


def _set_status(db: Session, user: User, status: str, changes: dict[str, Any]) -> None:
    if status not in ("active", "suspended"):
        raise InvalidInput.field("status", "must be 'active' or 'suspended'")
    if user.status == "invited":
        raise Conflict("an invited user becomes active by completing setup")
    changes["status"] = {"from": user.status, "to": status}
    user.status = status
    if status == "suspended":
        end_access(db, user)


def _active_admin(user: User) -> bool:
    return user.role == "admin" and user.status == "active"


def _keep_an_admin(db: Session, org_id: str, user: User) -> None:
    """Refuse a change that leaves the organisation without an active admin. Callers
    lock the organisation's chain head first, so two admins demoting each other at once
    take turns and the second is refused."""
    others = db.execute(
        select(func.count())
        .select_from(User)
        .where(
            User.org_id == org_id,
            User.role == "admin",
            User.status == "active",
            User.id != user.id,
        )
    ).scalar_one()
    if not others:
        raise Conflict("the organisation must keep at least one active admin")


def end_access(db: Session, user: User) -> None:
    """Revoke every session of the user now; their API keys stop working because
    authentication checks the owner's status on every request."""
    db.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
        execution_options=org_scoped(user.org_id),
    )


def update_user(
    db: Session,
    principal: Principal,
    org_id: str,
    user_id: str,
    *,
    name: str | None = None,
    role: str | None = None,
    status: str | None = None,
    attributes: dict[str, Any] | None = None,
    slack_user_id: str | Keep | None = KEEP,
) -> User:
    """Change the fields given (`slack_user_id`: KEEP leaves it, None unlinks). A user
    changes their own name and Slack link; anything else of themselves is refused."""
    principal.require_org(org_id)
    if role is not None or status is not None:
        audit.lock_chain(db, org_id)  # first: see the org's admins as they are (below)
    user = _find_user(db, org_id, user_id)
    was_admin = _active_admin(user)
    changes: dict[str, Any] = {}
    renames_other = name is not None and user.id != principal.user_id
    if renames_other or role is not None or status is not None or attributes is not None:
        _ensure_may_manage(db, principal, user)  # one rule for every field (self: name only)
    if name is not None and name != user.name:
        user.name, changes["name"] = name, name
    if not isinstance(slack_user_id, Keep) and slack_user_id != user.slack_user_id:
        if user.id != principal.user_id:
            _ensure_may_manage(db, principal, user)
        slack.link(db, user, slack_user_id)
        changes["slack_user_id"] = slack_user_id
    if role is not None:
        stored = authz.resolve_role(db, org_id, role)
        if stored != user.role:  # the role they hold now is within reach (above)
            granted = authz.permissions_of_role(db, org_id, stored)
            authz.ensure_can_confer(principal, granted, until=None)
            changes["role"] = {"from": user.role, "to": stored}
            user.role = stored
    if attributes is not None:
        user.attributes, changes["attributes"] = attributes, sorted(attributes)
    if status is not None and status != user.status:
        _set_status(db, user, status, changes)
    if was_admin and not _active_admin(user):
        _keep_an_admin(db, org_id, user)
    if changes:
        user.updated_at = utcnow()
        db.flush()
        audit.record(
            db,
            type=EventType.USER_UPDATED,
            actor=principal.actor,
            org_id=org_id,
            resource=("user", user.id),
            metadata=changes,
        )
    return user


def delete_user(db: Session, principal: Principal, org_id: str, user_id: str) -> None:
    principal.require_org(org_id)
    audit.lock_chain(db, org_id)  # first: see the org's admins as they are
    user = _find_user(db, org_id, user_id)
    _ensure_may_manage(db, principal, user)
    if _active_admin(user):
        _keep_an_admin(db, org_id, user)
    end_access(db, user)
    mfa_store.destroy_user(db, org_id, user.id)  # with the factors, their sealed secrets
    email = user.email
    db.delete(user)
    db.flush()
    audit.record(
        db,
        type=EventType.USER_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("user", user_id),
        metadata={"email": email},
    )


def subject_records(db: Session, org_id: str, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """What identity holds of the person (a subject access request's files), or NotFound."""
    return subjects.records(db, _find_user(db, org_id, user_id))


def erase_subject(db: Session, principal: Principal, org_id: str, user_id: str) -> dict[str, int]:
    """Erase the person (an erasure request): sessions revoked then deleted, keys and
    factors deleted, the user row deleted. Unlike `delete_user`, nothing of them is
    written to the audit here (the caller audits the user id only). The organisation's
    last active admin cannot be erased."""
    audit.lock_chain(db, org_id)  # first: see the org's admins as they are
    user = _find_user(db, org_id, user_id)
    _ensure_may_manage(db, principal, user)
    if _active_admin(user):
        _keep_an_admin(db, org_id, user)
    end_access(db, user)
    return subjects.erase(db, user)


def reset_mfa(db: Session, principal: Principal, org_id: str, user_id: str) -> int:
    """An admin (who may manage the user) removes every factor and recovery code of
    another user; needs step-up. Returns the number of factors removed."""
    return factors.reset_user(db, principal, org_id, user_id, _ensure_may_manage, _find_user)


def complete_setup(
    db: Session, actor: Actor, *, token: str, password: str, hasher: TokenHasher
) -> User:
    parsed = parse(token)
    row = None
    if parsed is not None and parsed.kind is TokenKind.SETUP:
        row = db.get(SetupToken, parsed.row_id)
    now = utcnow()
    valid = (
        row is not None
        and parsed is not None
        and hasher.matches(TokenKind.SETUP, parsed.secret, row.pepper_version, row.token_hash)
        and row.used_at is None
        and row.expires_at > now
    )
    if not valid or row is None:
        raise Unauthenticated("setup token is invalid, used or expired")
    user = db.get(User, row.user_id)
    if user is None or user.status != "invited":
        raise Unauthenticated("setup token is invalid, used or expired")
    check_new_password(db, user.org_id, password, email=user.email, name=user.name)
    # Spent by a compare-and-set: two uses at once (PostgreSQL) both read it unused, and
    # only one may set the password.
    spent = db.execute(
        update(SetupToken)
        .where(SetupToken.id == row.id, SetupToken.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise Unauthenticated("setup token is invalid, used or expired")
    user.password_hash = passwords.hash_password(password)
    user.status = "active"
    db.flush()
    audit.record(
        db,
        type=EventType.AUTH_PASSWORD_SET,
        actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        org_id=user.org_id,
        resource=("user", user.id),
        outcome=Outcome.SUCCESS,
    )
    return user


def role_in_use(db: Session, org_id: str, role: str) -> bool:
    for model in (User, ApiKey, ServiceAccount):
        count = db.execute(
            select(func.count())
            .select_from(model)
            .where(model.org_id == org_id, model.role == role)
        ).scalar_one()
        if count:
            return True
    return False


def delete_custom_role(db: Session, principal: Principal, org_id: str, role_id: str) -> None:
    authz.delete_role(db, principal, org_id, role_id, in_use=role_in_use(db, org_id, role_id))


def grant_role(
    db: Session,
    principal: Principal,
    org_id: str,
    user_id: str,
    *,
    role: str,
    expires_at: Any,
    reason: str,
) -> Any:
    principal.require_org(org_id)
    user = _find_user(db, org_id, user_id)
    grant = authz.create_grant(
        db, principal, org_id, user.id, role=role, expires_at=expires_at, reason=reason
    )
    if user.grants_until is None or user.grants_until < grant.expires_at:
        user.grants_until = grant.expires_at
    return grant


def list_role_grants(
    db: Session, principal: Principal, org_id: str, user_id: str, *, limit: int, cursor: str | None
) -> Any:
    principal.require_org(org_id)
    if user_id != principal.user_id:
        principal.require(Permission.USERS_READ)
    _find_user(db, org_id, user_id)
    return authz.list_grants(db, org_id, user_id, limit=limit, cursor=cursor)


def revoke_role_grant(
    db: Session, principal: Principal, org_id: str, user_id: str, grant_id: str
) -> None:
    principal.require_org(org_id)
    user = _find_user(db, org_id, user_id)
    authz.revoke_grant(db, principal, org_id, user.id, grant_id)
    user.grants_until = authz.latest_grant_expiry(db, user.id)


# --- users an identity provider vouches for (`bastion.sso`) ------------------------------


def find_user_by_email(db: Session, email: str) -> User | None:
    """The user of this email in any organisation (emails are unique in the instance)."""
    normalized = normalize_email(email)
    return db.execute(select(User).where(User.email_normalized == normalized)).scalar_one_or_none()


def provision_sso_user(
    db: Session, actor: Actor, org_id: str, *, email: str, name: str, role: str
) -> User:
    """Create a user just in time for their first SSO sign-in: active, with the role the
    connection's mapping gave (`role` is already resolved and checked)."""
    return _create_without_password(
        db, actor, org_id, email=email, name=name, role=role, status="active", via="sso"
    )


def _create_without_password(
    db: Session,
    actor: Actor,
    org_id: str,
    *,
    email: str,
    name: str,
    role: str,
    status: str,
    via: str,
) -> User:
    """A user the organisation's identity provider vouches for (`via`: "sso" or "scim"):
    no password (they sign in through the provider, or set one by a password reset);
    the email must be free in the whole instance."""
    normalized = normalize_email(email)
    if db.execute(select(User.id).where(User.email_normalized == normalized)).first():
        raise Conflict("a user with this email already exists")
    if not regions.claim_email(db, normalized, org_id):  # another region's user has it
        raise Conflict("a user with this email already exists")
    user = User(
        id=new_id("usr"),
        org_id=org_id,
        email=email.strip(),
        email_normalized=normalized,
        name=name,
        role=role,
        status=status,
        password_hash=None,
        attributes={},
    )
    db.add(user)
    db.flush()
    audit.record(
        db,
        type=EventType.USER_CREATED,
        actor=actor,
        org_id=org_id,
        resource=("user", user.id),
        metadata={"email": user.email, "role": role, "status": status, "via": via},
    )
    return user


def apply_sso_role(db: Session, actor: Actor, user: User, role: str) -> dict[str, str] | None:
    """Give `user` the role an SSO sign-in mapped them to (resolved and checked by the
    connection); the change made ({"from", "to"}) or None. An invited user becomes
    active (the provider vouched for the email). The organisation's last active admin
    keeps the role: a mapping never locks an organisation out of itself."""
    changes: dict[str, Any] = {}
    if user.status == "invited":
        changes["status"] = {"from": "invited", "to": "active"}
        user.status = "active"
    change = None
    if role != user.role:
        if _active_admin(user):
            audit.lock_chain(db, user.org_id)
            others = db.execute(
                select(func.count())
                .select_from(User)
                .where(
                    User.org_id == user.org_id,
                    User.role == "admin",
                    User.status == "active",
                    User.id != user.id,
                )
            ).scalar_one()
            if not others:
                role = user.role
        if role != user.role:
            change = {"from": user.role, "to": role}
            changes["role"] = change
            user.role = role
    if changes:
        user.updated_at = utcnow()
        db.flush()
        audit.record(
            db,
            type=EventType.USER_UPDATED,
            actor=actor,
            org_id=user.org_id,
            resource=("user", user.id),
            metadata={**changes, "via": "sso"},
        )
    return change


def find_user_in_org(db: Session, org_id: str, user_id: str) -> User | None:
    if not has_prefix(user_id, "usr"):
        return None
    return db.execute(
        select(User).where(User.org_id == org_id, User.id == user_id)
    ).scalar_one_or_none()


# --- provisioning: the organisation's identity provider (SCIM) acts, not a person -------


@dataclass(frozen=True)
class ProvisionedUser:
    """A user as provisioning sees it (no credential material)."""

    id: str
    org_id: str
    email: str
    name: str
    role: str
    status: str
    created_at: Any
    updated_at: Any


def _provisioned(user: User) -> ProvisionedUser:
    return ProvisionedUser(
        user.id,
        user.org_id,
        user.email,
        user.name,
        user.role,
        user.status,
        user.created_at,
        user.updated_at,
    )


def provisioned_users(
    db: Session, org_id: str, *, ids: set[str] | None = None
) -> list[ProvisionedUser]:
    """The organisation's users (all, or those of `ids`), oldest first (the SCIM list's
    stable order)."""
    stmt = select(User).where(User.org_id == org_id)
    if ids is not None:
        if not ids:
            return []
        stmt = stmt.where(User.id.in_(sorted(ids)))
    return [_provisioned(u) for u in db.execute(stmt.order_by(User.id)).scalars()]


def user_ids_by_email(db: Session, org_id: str, email: str) -> set[str]:
    """The organisation's user with this email (compared as stored: normalised)."""
    stmt = select(User.id).where(
        User.org_id == org_id, User.email_normalized == normalize_email(email)
    )
    return set(db.execute(stmt).scalars())


def provisioned_user(db: Session, org_id: str, user_id: str) -> ProvisionedUser:
    return _provisioned(_find_user(db, org_id, user_id))


def provision_user(
    db: Session, actor: Actor, org_id: str, *, email: str, name: str, role: str, active: bool
) -> ProvisionedUser:
    """A user created by the organisation's identity provider over SCIM, `active` or
    `suspended` as it says."""
    stored_role = authz.resolve_role(db, org_id, role)
    status = "active" if active else "suspended"
    user = _create_without_password(
        db, actor, org_id, email=email, name=name, role=stored_role, status=status, via="scim"
    )
    return _provisioned(user)


def update_provisioned_user(
    db: Session,
    actor: Actor,
    org_id: str,
    user_id: str,
    *,
    email: str | None = None,
    name: str | None = None,
    active: bool | None = None,
) -> ProvisionedUser:
    """Change what the identity provider owns of a user: email, name, active. Making a
    user inactive suspends them: their sessions end and their API keys stop at once, on
    every worker (the user row bumps the organisation's auth revision). The last active
    admin is never suspended (409)."""
    if active is not None:
        audit.lock_chain(db, org_id)  # first: see the org's admins as they are
    user = _find_user(db, org_id, user_id)
    was_admin = _active_admin(user)
    changes: dict[str, Any] = {}
    if email is not None and normalize_email(email) != user.email_normalized:
        normalized = normalize_email(email)
        taken = db.execute(
            select(User.id).where(User.email_normalized == normalized, User.id != user.id)
        ).first()
        if taken or not regions.claim_email(db, normalized, org_id):
            raise Conflict("a user with this email already exists")
        changes["email"] = {"from": user.email, "to": email.strip()}
        user.email, user.email_normalized = email.strip(), normalized
    elif email is not None and email.strip() != user.email:
        user.email = email.strip()  # the same address, other letter case
    if name is not None and name != user.name:
        user.name, changes["name"] = name, name
    if active is not None:
        wanted = "active" if active else "suspended"
        current = "suspended" if user.status == "suspended" else "active"
        if wanted != current:
            target = wanted if user.status != "invited" or not active else user.status
            changes["status"] = {"from": user.status, "to": target}
            user.status = target
            if target == "suspended":
                end_access(db, user)
    if was_admin and not _active_admin(user):
        _keep_an_admin(db, org_id, user)
    if changes:
        user.updated_at = utcnow()
        db.flush()
        audit.record(
            db,
            type=EventType.USER_UPDATED,
            actor=actor,
            org_id=org_id,
            resource=("user", user.id),
            metadata={**changes, "via": "scim"},
        )
    return _provisioned(user)


def delete_provisioned_user(db: Session, actor: Actor, org_id: str, user_id: str) -> str:
    """Delete a user for the identity provider: sessions end, API keys go with them, the
    last active admin stays (409). Returns the role they held."""
    audit.lock_chain(db, org_id)  # first: see the org's admins as they are
    user = _find_user(db, org_id, user_id)
    if _active_admin(user):
        _keep_an_admin(db, org_id, user)
    end_access(db, user)
    mfa_store.destroy_user(db, org_id, user.id)
    email, role = user.email, user.role
    db.delete(user)
    db.flush()
    audit.record(
        db,
        type=EventType.USER_DELETED,
        actor=actor,
        org_id=org_id,
        resource=("user", user_id),
        metadata={"email": email, "role": role, "via": "scim"},
    )
    return role
