from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime
from bastion.core.principal import DEFAULT_STEP_UP_MAX_AGE

# New organisations' audit retention (the contract's default; revision 0035). Existing
# organisations keep theirs. The instance chain (events of no organisation) keeps 365.
DEFAULT_AUDIT_RETENTION_DAYS = 90
INSTANCE_AUDIT_RETENTION_DAYS = 365
DEFAULT_PASSWORD_MIN_LENGTH = 12


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")
    # Data residency: the region whose database holds every row of the organisation,
    # fixed at creation (`BASTION_REGIONS`; `default` with one region).
    region: Mapped[str] = mapped_column(String(32), default="default", server_default="default")
    # Per-org overrides of the instance defaults (seconds); NULL means "use the default".
    session_idle_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    session_absolute_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audit_retention_days: Mapped[int] = mapped_column(
        Integer,
        default=DEFAULT_AUDIT_RETENTION_DAYS,
        server_default=str(DEFAULT_AUDIT_RETENTION_DAYS),
    )
    # Who must use a second factor: nobody (optional), holders of the admin role, all.
    mfa_policy: Mapped[str] = mapped_column(
        String(20), default="optional", server_default="optional"
    )
    # The factors members may enrol and sign in with; NULL: all (`core.mfa.METHODS`).
    mfa_methods: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    # Seconds a verification (sign-in or step-up) counts for sensitive actions.
    step_up_max_age: Mapped[int] = mapped_column(
        Integer,
        default=DEFAULT_STEP_UP_MAX_AGE,
        server_default=str(DEFAULT_STEP_UP_MAX_AGE),
    )
    # Whether admin-role API keys are refused the actions that need step-up of a person
    # (keys are not people: without it they may take them).
    step_up_refuses_admin_keys: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # The password policy new passwords of its users obey (`identity.passwords`).
    password_min_length: Mapped[int] = mapped_column(
        Integer,
        default=DEFAULT_PASSWORD_MIN_LENGTH,
        server_default=str(DEFAULT_PASSWORD_MIN_LENGTH),
    )
    password_breached_check: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    # Parallel sessions per user; a sign-in past it ends the oldest. NULL: unlimited.
    max_sessions_per_user: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # CIDR networks every credential of the organisation must come from; empty: any.
    ip_allowlist: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")
    # Users of the organisation's verified domains sign in through its SSO connection,
    # never by password (`bastion.sso`); with `sso_break_glass`, admins keep a password
    # and second-factor sign-in for when the identity provider is down.
    sso_enforced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sso_break_glass: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def password_policy(self) -> dict[str, object]:
        return {
            "min_length": self.password_min_length,
            "breached_check": self.password_breached_check,
        }


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (Index("ix_team_members_org_user", "org_id", "user_id"),)

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# An organisation's status decides whether any of its credentials work; teams are part
# of the data-access model (see `bastion.core.revisions`).
revisions.watch(Organization, org_key="id")
revisions.watch(Team, TeamMember, counters=(revisions.AuthzRevision,))
