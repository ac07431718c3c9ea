"""Built-in roles. The matrix is documented in docs/roles.md; a test keeps them equal."""

from __future__ import annotations

from enum import StrEnum

from bastion.core.permissions import ALL_PERMISSIONS, Permission

P = Permission


class BuiltinRole(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"
    VIEWER = "viewer"


_VIEWER = frozenset(
    {
        P.AGENTS_READ,
        P.APPROVALS_READ,
        P.ORG_READ,
        P.ROLES_READ,
        P.SOURCES_READ,
        P.TEAMS_READ,
        P.USERS_READ,
        P.WORKFLOWS_READ,
    }
)
_MEMBER = _VIEWER | {
    P.AGENTS_CREATE,
    P.AGENTS_USE,
    P.INTEGRATIONS_READ,
    P.PRIVACY_SCAN,
    P.MCP_SERVERS_READ,
    P.MCP_SERVERS_USE,
    P.SECRETS_READ,
    P.WEBHOOKS_READ,
    P.WORKSPACES_READ,
}
_MANAGER = _MEMBER | {
    P.APIKEYS_READ,
    P.APPROVALS_DECIDE,
    P.AUDIT_READ,
    P.AUTHZ_CHECK,
    P.GRANTS_MANAGE,
    P.PRIVACY_READ,
    P.INTEGRATIONS_USE,
    P.SERVICE_ACCOUNTS_READ,
    P.SOURCES_MANAGE,
    P.TEAMS_MANAGE,
    P.USERS_MANAGE,
    P.WORKSPACES_MANAGE,
}

BUILTIN_PERMISSIONS: dict[BuiltinRole, frozenset[Permission]] = {
    BuiltinRole.VIEWER: _VIEWER,
    BuiltinRole.MEMBER: frozenset(_MEMBER),
    BuiltinRole.MANAGER: frozenset(_MANAGER),
    BuiltinRole.ADMIN: ALL_PERMISSIONS,
}

BUILTIN_DESCRIPTIONS: dict[BuiltinRole, str] = {
    BuiltinRole.ADMIN: "Everything, including organisation security settings and roles.",
    BuiltinRole.MANAGER: "Member rights plus managing users, teams, grants and approvals.",
    BuiltinRole.MEMBER: "Uses and creates agents; reads the organisation directory.",
    BuiltinRole.VIEWER: "Read-only access to the organisation directory and agents.",
}


def is_builtin(name: str) -> bool:
    return name in BuiltinRole.__members__.values()
