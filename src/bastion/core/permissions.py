"""The closed permission catalogue and which credential kind may exercise what.

Anything not listed here does not exist and is denied. Sorted; one file.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    ACCESS_REVIEWS_MANAGE = "access_reviews:manage"
    AGENTS_CREATE = "agents:create"
    AGENTS_MANAGE = "agents:manage"
    AGENTS_READ = "agents:read"
    AGENTS_USE = "agents:use"
    APIKEYS_MANAGE = "apikeys:manage"
    APIKEYS_READ = "apikeys:read"
    APPROVAL_POLICIES_MANAGE = "approval_policies:manage"
    APPROVALS_DECIDE = "approvals:decide"
    APPROVALS_READ = "approvals:read"
    AUDIT_EXPORT = "audit:export"
    AUDIT_READ = "audit:read"
    AUTHZ_CHECK = "authz:check"
    COMPLIANCE_MANAGE = "compliance:manage"
    COMPLIANCE_READ = "compliance:read"
    GRANTS_MANAGE = "grants:manage"
    INTEGRATIONS_MANAGE = "integrations:manage"
    INTEGRATIONS_READ = "integrations:read"
    INTEGRATIONS_USE = "integrations:use"
    MCP_SERVERS_MANAGE = "mcp_servers:manage"
    MCP_SERVERS_READ = "mcp_servers:read"
    MCP_SERVERS_USE = "mcp_servers:use"
    ORG_MANAGE = "org:manage"
    ORG_READ = "org:read"
    PRIVACY_DETOKENIZE = "privacy:detokenize"
    PRIVACY_MANAGE = "privacy:manage"
    PRIVACY_READ = "privacy:read"
    PRIVACY_SCAN = "privacy:scan"
    PRIVACY_SUBJECT_REQUESTS = "privacy:subject_requests"
    ROLES_MANAGE = "roles:manage"
    ROLES_READ = "roles:read"
    SECRETS_MANAGE = "secrets:manage"
    SECRETS_READ = "secrets:read"
    SECRETS_REVEAL = "secrets:reveal"
    SERVICE_ACCOUNTS_MANAGE = "service_accounts:manage"
    SERVICE_ACCOUNTS_READ = "service_accounts:read"
    SOURCES_MANAGE = "sources:manage"
    SOURCES_READ = "sources:read"
    TEAMS_MANAGE = "teams:manage"
    TEAMS_READ = "teams:read"
    USERS_MANAGE = "users:manage"
    USERS_READ = "users:read"
    WEBHOOKS_MANAGE = "webhooks:manage"
    WEBHOOKS_READ = "webhooks:read"
    WORKFLOWS_MANAGE = "workflows:manage"
    WORKFLOWS_READ = "workflows:read"
    WORKSPACES_MANAGE = "workspaces:manage"
    WORKSPACES_READ = "workspaces:read"


DESCRIPTIONS: dict[Permission, str] = {
    Permission.ACCESS_REVIEWS_MANAGE: "Start, see and close access review campaigns.",
    Permission.AGENTS_CREATE: "Register new agents.",
    Permission.AGENTS_MANAGE: "Edit, share and delete every agent of the organisation.",
    Permission.AGENTS_READ: "See agents visible to the caller.",
    Permission.AGENTS_USE: "Start runs of agents visible to the caller.",
    Permission.APIKEYS_MANAGE: "Create, rotate and revoke API keys.",
    Permission.APIKEYS_READ: "List API keys (never their secret).",
    Permission.APPROVAL_POLICIES_MANAGE: "Create, re-approve and delete approval policies.",
    Permission.APPROVALS_DECIDE: "Approve or deny pending agent actions.",
    Permission.APPROVALS_READ: "See approval requests.",
    Permission.AUDIT_EXPORT: "Export the audit trail.",
    Permission.AUDIT_READ: "Search and read audit events.",
    Permission.AUTHZ_CHECK: "Ask authorization questions about other subjects.",
    Permission.COMPLIANCE_MANAGE: "Upload attestations and issue signed compliance reports.",
    Permission.COMPLIANCE_READ: "See compliance controls, their history and evidence.",
    Permission.GRANTS_MANAGE: "Give and revoke temporary role grants.",
    Permission.INTEGRATIONS_MANAGE: "Register, connect and delete OAuth integrations.",
    Permission.INTEGRATIONS_READ: "List OAuth integrations (never their tokens or secrets).",
    Permission.INTEGRATIONS_USE: "Give agents an OAuth integration as a connection.",
    Permission.MCP_SERVERS_MANAGE: "Register, change and remove upstream MCP servers.",
    Permission.MCP_SERVERS_READ: "List MCP servers and their tools (never their headers).",
    Permission.MCP_SERVERS_USE: "Connect agents to MCP servers (checked again at every call).",
    Permission.ORG_MANAGE: "Change organisation security settings.",
    Permission.ORG_READ: "Read organisation details and settings.",
    Permission.PRIVACY_DETOKENIZE: "Turn privacy tokens back into values (every use is audited).",
    Permission.PRIVACY_MANAGE: "Create, change and delete data policies; set retention periods.",
    Permission.PRIVACY_READ: "See data policies and retention periods.",
    Permission.PRIVACY_SCAN: "Scan and redact texts for personal data and secrets.",
    Permission.PRIVACY_SUBJECT_REQUESTS: "Answer data subjects' access and erasure requests "
    "(every request is audited; erasure cannot be undone).",
    Permission.ROLES_MANAGE: "Create, change and delete custom roles.",
    Permission.ROLES_READ: "List roles and the permission catalogue.",
    Permission.SECRETS_MANAGE: "Write and delete secrets.",
    Permission.SECRETS_READ: "List secret names and versions (never values).",
    Permission.SECRETS_REVEAL: "Reveal secret values (every reveal is audited).",
    Permission.SERVICE_ACCOUNTS_MANAGE: "Create, change and delete service accounts.",
    Permission.SERVICE_ACCOUNTS_READ: "List service accounts.",
    Permission.SOURCES_MANAGE: "Manage data sources, documents and their ACLs.",
    Permission.SOURCES_READ: "See data sources.",
    Permission.TEAMS_MANAGE: "Create, change and delete teams and their members.",
    Permission.TEAMS_READ: "List teams and members.",
    Permission.USERS_MANAGE: "Invite, change, suspend and delete users.",
    Permission.USERS_READ: "List users.",
    Permission.WEBHOOKS_MANAGE: "Manage webhook endpoints and their secrets.",
    Permission.WEBHOOKS_READ: "List webhook endpoints.",
    Permission.WORKFLOWS_MANAGE: "Create, change and delete workflows and the agents they admit.",
    Permission.WORKFLOWS_READ: "See workflows and bind runs of the agents they admit to them.",
    Permission.WORKSPACES_MANAGE: "Create, change and delete sandbox workspaces and their files.",
    Permission.WORKSPACES_READ: "See sandbox workspaces (their limits, network and base digest).",
}

ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


class CredentialKind(StrEnum):
    AGENT_RUN = "agent_run"
    API_KEY = "api_key"
    MFA_ENROLMENT = "mfa_enrolment"
    SCIM = "scim"
    OAUTH_TOKEN = "oauth_token"  # noqa: S105 - a credential kind's name
    SESSION = "session"
    SLACK = "slack"  # a click in Slack by the person linked to the Slack user


# Which permissions each kind of credential may exercise at all; the principal's role
# decides within this. A kind missing here exercises nothing (default deny). Agent run
# tokens act only on their own run, through run endpoints, never through org permissions.
CREDENTIAL_PERMISSIONS: dict[CredentialKind, frozenset[Permission]] = {
    CredentialKind.SESSION: ALL_PERMISSIONS,
    CredentialKind.API_KEY: ALL_PERMISSIONS,
    # An OAuth access token acts as its service account, within the token's scope (cut
    # into its role permissions when it is verified).
    CredentialKind.OAUTH_TOKEN: ALL_PERMISSIONS,
    CredentialKind.AGENT_RUN: frozenset(),
    # A Slack interaction (verified with the organisation's Slack signing secret) acts as
    # the linked person for reading and deciding approvals only; it carries no recent
    # verification, so what needs step-up is refused (see `Principal.require_recent_auth`).
    CredentialKind.SLACK: frozenset({Permission.APPROVALS_DECIDE, Permission.APPROVALS_READ}),
    # An `mfa_token` of a person who must enrol a factor first: it reaches the
    # `/v1/me/mfa…` enrolment endpoints only, which check no permission.
    CredentialKind.MFA_ENROLMENT: frozenset(),
    # A SCIM token (`bsp_…`) provisions its organisation's users and teams at `/scim/v2`
    # and nowhere else: every `/v1` route refuses it before any permission is asked.
    CredentialKind.SCIM: frozenset(
        {
            Permission.TEAMS_MANAGE,
            Permission.TEAMS_READ,
            Permission.USERS_MANAGE,
            Permission.USERS_READ,
        }
    ),
}


def parse_permissions(values: list[str]) -> tuple[frozenset[Permission], list[str]]:
    """Split into known permissions and unknown names (which callers must reject)."""
    known: set[Permission] = set()
    unknown: list[str] = []
    for value in values:
        try:
            known.add(Permission(value))
        except ValueError:
            unknown.append(value)
    return frozenset(known), unknown
