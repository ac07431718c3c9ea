"""The authenticated caller, as every service sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import Forbidden, NotFound, StepUpRequired
from bastion.core.events import EventType, Outcome
from bastion.core.permissions import CREDENTIAL_PERMISSIONS, CredentialKind, Permission

DEFAULT_STEP_UP_MAX_AGE = 600
# Credentials of a person, whom step-up concerns (a Slack click carries no verification
# time: what needs step-up is refused to it).
_PEOPLE = frozenset({CredentialKind.SESSION, CredentialKind.MFA_ENROLMENT, CredentialKind.SLACK})


@dataclass(frozen=True)
class Principal:
    principal_type: str  # "user" | "api_key" | "service_account" | "agent_run"
    id: str
    org_id: str
    role: str
    credential: CredentialKind
    role_permissions: frozenset[Permission] = field(repr=False)
    user_id: str | None = None
    session_id: str | None = None
    credential_id: str | None = None
    agent_id: str | None = None  # agent run tokens: the run's agent
    on_behalf_of: str | None = None  # agent run tokens: the user the run acts for
    actor: Actor = field(default_factory=lambda: Actor(type="anonymous", id=None))
    # The permissions of `role_permissions` held only through temporary grants, each
    # with the instant its last grant ends: not to be given away for longer (see
    # `authz.service.ensure_can_confer`).
    temporary: Mapping[Permission, datetime] = field(
        default_factory=dict, repr=False, compare=False
    )
    # Sessions: how the person proved who they are (RFC 8176 values, e.g. ("pwd",
    # "otp", "mfa")) and when they last did (sign-in or step-up); the organisation's
    # window for step-up, and whether its MFA policy still wants a factor of them.
    amr: tuple[str, ...] = ()
    auth_time: datetime | None = None
    step_up_max_age: int = DEFAULT_STEP_UP_MAX_AGE
    mfa_pending: bool = False
    # An admin-role API key of an organisation that refuses such keys the actions that
    # need step-up of a person (`step_up_refuses_admin_keys`).
    step_up_refused: bool = False

    def acting_as(self, actor: Actor) -> Principal:
        """This principal on behalf of `actor` (a request's address, agent and id): what
        a cached credential gives each request, so a copy made without
        `dataclasses.replace`'s field-by-field re-initialisation (~4 µs per request)."""
        copy = object.__new__(Principal)
        fields = copy.__dict__
        fields.update(self.__dict__)
        fields["actor"] = actor
        return copy

    @property
    def permissions(self) -> frozenset[Permission]:
        """What this caller may exercise: its role, cut to what its credential kind allows."""
        return self.role_permissions & CREDENTIAL_PERMISSIONS.get(self.credential, frozenset())

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"missing permission {permission}", permission=str(permission))

    def require_recent_auth(self, action: str) -> None:
        """Step-up (RFC 9470) for a sensitive action: a person's session must have been
        verified within the organisation's `step_up_max_age`. API keys, service accounts
        and agent runs are not people: it does not apply to them, unless the organisation
        refuses admin-role keys these actions (403). Reads only what the principal
        carries (cached with the credential): no query."""
        if self.step_up_refused:
            raise Forbidden(
                f"{action} needs a person who stepped up: this organisation refuses"
                " admin-role API keys it",
            ).with_audit(
                type=EventType.AUTH_STEP_UP_REQUIRED,
                actor=self.actor,
                org_id=self.org_id,
                outcome=Outcome.DENIED,
                resource=("api_key", self.credential_id) if self.credential_id else None,
                metadata={"action": action, "admin_key_refused": True},
            )
        if self.credential not in _PEOPLE:
            return
        max_age = self.step_up_max_age
        if self.auth_time is not None and (utcnow() - self.auth_time).total_seconds() <= max_age:
            return
        raise StepUpRequired(
            f"{action} needs a verification within the last {max_age} seconds;"
            " step up at POST /v1/auth/step-up",
            max_age=max_age,
        ).with_audit(
            type=EventType.AUTH_STEP_UP_REQUIRED,
            actor=self.actor,
            org_id=self.org_id,
            outcome=Outcome.DENIED,
            resource=("session", self.session_id) if self.session_id else None,
            metadata={"action": action, "max_age": max_age},
        )

    def require_org(self, org_id: str) -> None:
        """Another organisation's objects do not exist for this caller."""
        if org_id != self.org_id:
            raise NotFound("organization not found")
