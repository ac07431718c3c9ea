"""The authenticated caller, as every service sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bastion.core.context import Actor
from bastion.core.errors import Forbidden, NotFound
from bastion.core.permissions import CREDENTIAL_PERMISSIONS, CredentialKind, Permission


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

    @property
    def permissions(self) -> frozenset[Permission]:
        """What this caller may exercise: its role, cut to what its credential kind allows."""
        return self.role_permissions & CREDENTIAL_PERMISSIONS.get(self.credential, frozenset())

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"missing permission {permission}", permission=str(permission))

    def require_org(self, org_id: str) -> None:
        """Another organisation's objects do not exist for this caller."""
        if org_id != self.org_id:
            raise NotFound("organization not found")
