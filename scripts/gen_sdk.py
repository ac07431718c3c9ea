"""Generate the SDK's typed layer from Bastion's OpenAPI document.

    .venv/bin/python scripts/gen_sdk.py          # rewrite the files from the live app
    .venv/bin/python scripts/gen_sdk.py --check  # exit 1 when they are out of date

Writes `src/bastion/client/models.py` (a pydantic model for every schema of the API) and
`src/bastion/client/_generated.py` (one resource class per API area, sync and async, a
method per operation with named, documented parameters and a typed result). Every
operation of /openapi.json is either in OPERATIONS (its resource and method name) or in
NOT_IN_SDK with the reason; tests/client/test_coverage.py fails when the API has an
operation that is in neither, or when the files differ from what this script writes.
"""

from __future__ import annotations

import keyword
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "src/bastion/client/models.py"
GENERATED = ROOT / "src/bastion/client/_generated.py"

# (METHOD, path) -> (resource attribute on the client, method name)
OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/healthz"): ("meta", "health"),
    ("GET", "/v1/permissions"): ("meta", "permissions"),
    ("GET", "/v1/audit/signing-keys"): ("audit_events", "signing_keys"),
    ("GET", "/v1/privacy/types"): ("privacy", "types"),
    # authorization engine
    ("POST", "/v1/orgs/{org}/authz/rules"): ("authz", "create_rule"),
    ("GET", "/v1/orgs/{org}/authz/rules"): ("authz", "list_rules"),
    ("DELETE", "/v1/orgs/{org}/authz/rules/{rule}"): ("authz", "delete_rule"),
    ("POST", "/v1/orgs/{org}/authz/check"): ("authz", "check"),
    ("POST", "/v1/orgs/{org}/authz/check-batch"): ("authz", "check_batch"),
    ("POST", "/v1/orgs/{org}/authz/filter"): ("authz", "filter"),
    ("POST", "/v1/orgs/{org}/authz/list"): ("authz", "list"),
    ("POST", "/v1/orgs/{org}/authz/search-filter"): ("authz", "search_filter"),
    ("GET", "/v1/orgs/{org}/authz/stats"): ("authz", "stats"),
    # runs and the gate (the run's own token)
    ("GET", "/v1/runs/{run}"): ("runs", "get"),
    ("POST", "/v1/runs/{run}/tool-calls"): ("runs", "request_tool_call"),
    ("GET", "/v1/runs/{run}/tool-calls/{call}"): ("runs", "get_tool_call"),
    ("POST", "/v1/orgs/{org}/runs/{run}/revoke"): ("runs", "revoke"),
    ("POST", "/v1/runs/{run}/integrations/{name}/token"): ("runs", "integration_token"),
    # MCP gateway
    ("POST", "/v1/orgs/{org}/mcp-servers"): ("mcp_servers", "create"),
    ("GET", "/v1/orgs/{org}/mcp-servers"): ("mcp_servers", "list"),
    ("GET", "/v1/orgs/{org}/mcp-servers/{mcs}"): ("mcp_servers", "get"),
    ("PATCH", "/v1/orgs/{org}/mcp-servers/{mcs}"): ("mcp_servers", "update"),
    ("DELETE", "/v1/orgs/{org}/mcp-servers/{mcs}"): ("mcp_servers", "delete"),
    ("GET", "/v1/orgs/{org}/mcp-servers/{mcs}/tools"): ("mcp_servers", "tools"),
    # sign-in
    ("POST", "/v1/auth/login"): ("auth", "login"),
    ("POST", "/v1/auth/mfa"): ("auth", "mfa"),
    ("POST", "/v1/auth/step-up"): ("auth", "step_up"),
    ("POST", "/v1/auth/logout"): ("auth", "logout"),
    ("POST", "/v1/auth/setup"): ("auth", "setup"),
    ("POST", "/v1/auth/password-reset"): ("auth", "request_password_reset"),
    ("POST", "/v1/auth/password-reset/confirm"): ("auth", "confirm_password_reset"),
    ("POST", "/v1/me/password"): ("auth", "change_password"),
    ("POST", "/v1/auth/mfa/webauthn-options"): ("auth", "webauthn_sign_in_options"),
    ("POST", "/v1/auth/step-up/webauthn-options"): ("auth", "webauthn_step_up_options"),
    ("POST", "/v1/auth/passkey/options"): ("auth", "passkey_options"),
    ("POST", "/v1/auth/passkey"): ("auth", "passkey"),
    ("POST", "/v1/auth/sso/exchange"): ("auth", "sso_exchange"),
    # the caller
    ("GET", "/v1/me"): ("profile", "get"),
    ("PATCH", "/v1/me"): ("profile", "update"),
    ("GET", "/v1/me/sessions"): ("sessions", "list"),
    ("DELETE", "/v1/me/sessions"): ("sessions", "revoke_others"),
    ("DELETE", "/v1/me/sessions/{session_id}"): ("sessions", "revoke"),
    ("GET", "/v1/me/mfa"): ("mfa", "status"),
    ("POST", "/v1/me/mfa/totp"): ("mfa", "start_totp"),
    ("POST", "/v1/me/mfa/totp/{factor}/confirm"): ("mfa", "confirm_totp"),
    ("POST", "/v1/me/mfa/webauthn/registration-options"): ("mfa", "webauthn_options"),
    ("POST", "/v1/me/mfa/webauthn"): ("mfa", "register_webauthn"),
    ("POST", "/v1/me/mfa/recovery-codes"): ("mfa", "regenerate_recovery_codes"),
    ("DELETE", "/v1/me/mfa/{factor}"): ("mfa", "delete_factor"),
    # organisation
    ("GET", "/v1/orgs/{org}"): ("orgs", "get"),
    ("PATCH", "/v1/orgs/{org}"): ("orgs", "update"),
    ("DELETE", "/v1/orgs/{org}"): ("orgs", "delete"),
    ("DELETE", "/v1/orgs/{org}/sessions"): ("orgs", "end_sessions"),
    ("POST", "/v1/orgs/{org}/users"): ("users", "create"),
    ("GET", "/v1/orgs/{org}/users"): ("users", "list"),
    ("GET", "/v1/orgs/{org}/users/{user}"): ("users", "get"),
    ("PATCH", "/v1/orgs/{org}/users/{user}"): ("users", "update"),
    ("DELETE", "/v1/orgs/{org}/users/{user}"): ("users", "delete"),
    ("DELETE", "/v1/orgs/{org}/users/{user}/mfa"): ("users", "reset_mfa"),
    ("POST", "/v1/orgs/{org}/users/{user}/role-grants"): ("users", "grant_role"),
    ("GET", "/v1/orgs/{org}/users/{user}/role-grants"): ("users", "list_grants"),
    ("DELETE", "/v1/orgs/{org}/users/{user}/role-grants/{grant}"): ("users", "revoke_grant"),
    ("GET", "/v1/orgs/{org}/users/{user}/sessions"): ("users", "sessions"),
    ("DELETE", "/v1/orgs/{org}/users/{user}/sessions"): ("users", "end_all_sessions"),
    ("DELETE", "/v1/orgs/{org}/users/{user}/sessions/{session}"): ("users", "end_session"),
    ("POST", "/v1/orgs/{org}/teams"): ("teams", "create"),
    ("GET", "/v1/orgs/{org}/teams"): ("teams", "list"),
    ("GET", "/v1/orgs/{org}/teams/{team}"): ("teams", "get"),
    ("PATCH", "/v1/orgs/{org}/teams/{team}"): ("teams", "update"),
    ("DELETE", "/v1/orgs/{org}/teams/{team}"): ("teams", "delete"),
    ("PUT", "/v1/orgs/{org}/teams/{team}/members/{user}"): ("teams", "add_member"),
    ("DELETE", "/v1/orgs/{org}/teams/{team}/members/{user}"): ("teams", "remove_member"),
    ("GET", "/v1/orgs/{org}/roles"): ("roles", "list"),
    ("POST", "/v1/orgs/{org}/roles"): ("roles", "create"),
    ("GET", "/v1/orgs/{org}/roles/{role}"): ("roles", "get"),
    ("PATCH", "/v1/orgs/{org}/roles/{role}"): ("roles", "update"),
    ("DELETE", "/v1/orgs/{org}/roles/{role}"): ("roles", "delete"),
    ("POST", "/v1/orgs/{org}/api-keys"): ("api_keys", "create"),
    ("GET", "/v1/orgs/{org}/api-keys"): ("api_keys", "list"),
    ("GET", "/v1/orgs/{org}/api-keys/{key}"): ("api_keys", "get"),
    ("DELETE", "/v1/orgs/{org}/api-keys/{key}"): ("api_keys", "revoke"),
    ("POST", "/v1/orgs/{org}/api-keys/{key}/rotate"): ("api_keys", "rotate"),
    ("POST", "/v1/orgs/{org}/service-accounts"): ("service_accounts", "create"),
    ("GET", "/v1/orgs/{org}/service-accounts"): ("service_accounts", "list"),
    ("GET", "/v1/orgs/{org}/service-accounts/{account}"): ("service_accounts", "get"),
    ("PATCH", "/v1/orgs/{org}/service-accounts/{account}"): ("service_accounts", "update"),
    ("DELETE", "/v1/orgs/{org}/service-accounts/{account}"): ("service_accounts", "delete"),
    ("POST", "/v1/orgs/{org}/service-accounts/{account}/oauth-clients"): (
        "oauth_clients",
        "create",
    ),
    ("GET", "/v1/orgs/{org}/service-accounts/{account}/oauth-clients"): ("oauth_clients", "list"),
    ("GET", "/v1/orgs/{org}/service-accounts/{account}/oauth-clients/{client}"): (
        "oauth_clients",
        "get",
    ),
    ("DELETE", "/v1/orgs/{org}/service-accounts/{account}/oauth-clients/{client}"): (
        "oauth_clients",
        "delete",
    ),
    # audit
    ("GET", "/v1/orgs/{org}/audit-events"): ("audit_events", "list"),
    ("POST", "/v1/orgs/{org}/audit-events/verify"): ("audit_events", "verify"),
    ("GET", "/v1/orgs/{org}/audit-events/{event}"): ("audit_events", "get"),
    ("POST", "/v1/orgs/{org}/audit-checkpoints"): ("audit_checkpoints", "create"),
    ("GET", "/v1/orgs/{org}/audit-checkpoints"): ("audit_checkpoints", "list"),
    ("POST", "/v1/orgs/{org}/audit-sinks"): ("audit_sinks", "create"),
    ("GET", "/v1/orgs/{org}/audit-sinks"): ("audit_sinks", "list"),
    ("GET", "/v1/orgs/{org}/audit-sinks/{sink}"): ("audit_sinks", "get"),
    ("DELETE", "/v1/orgs/{org}/audit-sinks/{sink}"): ("audit_sinks", "delete"),
    # alerts
    ("POST", "/v1/orgs/{org}/alert-rules"): ("alert_rules", "create"),
    ("GET", "/v1/orgs/{org}/alert-rules"): ("alert_rules", "list"),
    ("GET", "/v1/orgs/{org}/alert-rules/{rule}"): ("alert_rules", "get"),
    ("PATCH", "/v1/orgs/{org}/alert-rules/{rule}"): ("alert_rules", "update"),
    ("DELETE", "/v1/orgs/{org}/alert-rules/{rule}"): ("alert_rules", "delete"),
    ("GET", "/v1/orgs/{org}/alerts"): ("alerts", "list"),
    ("GET", "/v1/orgs/{org}/alerts/{alert}"): ("alerts", "get"),
    ("POST", "/v1/orgs/{org}/alerts/{alert}/resolve"): ("alerts", "resolve"),
    # data access: sources and documents
    ("POST", "/v1/orgs/{org}/sources"): ("sources", "create"),
    ("GET", "/v1/orgs/{org}/sources"): ("sources", "list"),
    ("PUT", "/v1/orgs/{org}/sources/{src}/acl/{member}"): ("sources", "grant"),
    ("DELETE", "/v1/orgs/{org}/sources/{src}/acl/{member}"): ("sources", "revoke"),
    ("POST", "/v1/orgs/{org}/sources/{src}/documents"): ("documents", "create"),
    ("GET", "/v1/orgs/{org}/documents/{doc}"): ("documents", "get"),
    ("PATCH", "/v1/orgs/{org}/documents/{doc}"): ("documents", "update"),
    ("DELETE", "/v1/orgs/{org}/documents/{doc}"): ("documents", "delete"),
    ("GET", "/v1/orgs/{org}/documents/{doc}/acl-tokens"): ("documents", "acl_tokens"),
    # secrets
    ("PUT", "/v1/orgs/{org}/secrets/{name}"): ("secrets", "put"),
    ("GET", "/v1/orgs/{org}/secrets/{name}"): ("secrets", "get"),
    ("DELETE", "/v1/orgs/{org}/secrets/{name}"): ("secrets", "delete"),
    ("GET", "/v1/orgs/{org}/secrets"): ("secrets", "list"),
    ("POST", "/v1/orgs/{org}/secrets/{name}/reveal"): ("secrets", "reveal"),
    ("GET", "/v1/orgs/{org}/secrets-key"): ("secrets", "data_key"),
    ("POST", "/v1/orgs/{org}/secrets-key/rotate"): ("secrets", "rotate_data_key"),
    # agents, workflows, approvals
    ("POST", "/v1/orgs/{org}/agents"): ("agents", "create"),
    ("GET", "/v1/orgs/{org}/agents"): ("agents", "list"),
    ("GET", "/v1/orgs/{org}/agents/{agt}"): ("agents", "get"),
    ("PATCH", "/v1/orgs/{org}/agents/{agt}"): ("agents", "update"),
    ("DELETE", "/v1/orgs/{org}/agents/{agt}"): ("agents", "delete"),
    ("POST", "/v1/orgs/{org}/agents/{agt}/runs"): ("runs", "create"),
    ("GET", "/v1/orgs/{org}/agents/{agt}/runs"): ("runs", "list"),
    ("GET", "/v1/hub/agents"): ("agents", "hub"),
    ("POST", "/v1/orgs/{org}/workflows"): ("workflows", "create"),
    ("GET", "/v1/orgs/{org}/workflows"): ("workflows", "list"),
    ("GET", "/v1/orgs/{org}/workflows/{wf}"): ("workflows", "get"),
    ("PATCH", "/v1/orgs/{org}/workflows/{wf}"): ("workflows", "update"),
    ("DELETE", "/v1/orgs/{org}/workflows/{wf}"): ("workflows", "delete"),
    ("POST", "/v1/orgs/{org}/approval-policies"): ("approval_policies", "create"),
    ("GET", "/v1/orgs/{org}/approval-policies"): ("approval_policies", "list"),
    ("GET", "/v1/orgs/{org}/approval-policies/{policy}"): ("approval_policies", "get"),
    ("PATCH", "/v1/orgs/{org}/approval-policies/{policy}"): ("approval_policies", "update"),
    ("DELETE", "/v1/orgs/{org}/approval-policies/{policy}"): ("approval_policies", "delete"),
    ("POST", "/v1/orgs/{org}/approval-policies/{policy}/reapprove"): (
        "approval_policies",
        "reapprove",
    ),
    ("GET", "/v1/orgs/{org}/approvals"): ("approvals", "list"),
    ("GET", "/v1/orgs/{org}/approvals/{apr}"): ("approvals", "get"),
    ("POST", "/v1/orgs/{org}/approvals/{apr}/decisions"): ("approvals", "decide"),
    # webhooks
    ("POST", "/v1/orgs/{org}/webhook-endpoints"): ("webhook_endpoints", "create"),
    ("GET", "/v1/orgs/{org}/webhook-endpoints"): ("webhook_endpoints", "list"),
    ("GET", "/v1/orgs/{org}/webhook-endpoints/{endpoint}"): ("webhook_endpoints", "get"),
    ("DELETE", "/v1/orgs/{org}/webhook-endpoints/{endpoint}"): ("webhook_endpoints", "delete"),
    ("POST", "/v1/orgs/{org}/webhook-endpoints/{endpoint}/rotate-secret"): (
        "webhook_endpoints",
        "rotate_secret",
    ),
    ("GET", "/v1/orgs/{org}/webhook-endpoints/{endpoint}/events"): (
        "webhook_endpoints",
        "events",
    ),
    ("POST", "/v1/orgs/{org}/webhook-subscriptions"): ("webhook_subscriptions", "create"),
    ("GET", "/v1/orgs/{org}/webhook-subscriptions"): ("webhook_subscriptions", "list"),
    ("GET", "/v1/orgs/{org}/webhook-subscriptions/{subscription}"): (
        "webhook_subscriptions",
        "get",
    ),
    ("DELETE", "/v1/orgs/{org}/webhook-subscriptions/{subscription}"): (
        "webhook_subscriptions",
        "delete",
    ),
    ("POST", "/v1/orgs/{org}/webhook-subscriptions/{subscription}/enable"): (
        "webhook_subscriptions",
        "enable",
    ),
    ("GET", "/v1/orgs/{org}/webhook-subscriptions/{subscription}/deliveries"): (
        "webhook_subscriptions",
        "deliveries",
    ),
    (
        "POST",
        "/v1/orgs/{org}/webhook-subscriptions/{subscription}/deliveries/{delivery}/replay",
    ): ("webhook_subscriptions", "replay"),
    # SSO and provisioning
    ("POST", "/v1/orgs/{org}/sso-connections"): ("sso_connections", "create"),
    ("GET", "/v1/orgs/{org}/sso-connections"): ("sso_connections", "list"),
    ("GET", "/v1/orgs/{org}/sso-connections/{conn}"): ("sso_connections", "get"),
    ("PATCH", "/v1/orgs/{org}/sso-connections/{conn}"): ("sso_connections", "update"),
    ("DELETE", "/v1/orgs/{org}/sso-connections/{conn}"): ("sso_connections", "delete"),
    ("POST", "/v1/orgs/{org}/domains"): ("domains", "create"),
    ("GET", "/v1/orgs/{org}/domains"): ("domains", "list"),
    ("GET", "/v1/orgs/{org}/domains/{dom}"): ("domains", "get"),
    ("DELETE", "/v1/orgs/{org}/domains/{dom}"): ("domains", "delete"),
    ("POST", "/v1/orgs/{org}/domains/{dom}/verify"): ("domains", "verify"),
    ("POST", "/v1/orgs/{org}/scim-tokens"): ("scim_tokens", "create"),
    ("GET", "/v1/orgs/{org}/scim-tokens"): ("scim_tokens", "list"),
    ("DELETE", "/v1/orgs/{org}/scim-tokens/{token}"): ("scim_tokens", "revoke"),
    # integrations
    ("POST", "/v1/orgs/{org}/integrations"): ("integrations", "create"),
    ("GET", "/v1/orgs/{org}/integrations"): ("integrations", "list"),
    ("GET", "/v1/orgs/{org}/integrations/{integration}"): ("integrations", "get"),
    ("DELETE", "/v1/orgs/{org}/integrations/{integration}"): ("integrations", "delete"),
    # privacy
    ("POST", "/v1/orgs/{org}/privacy/scan"): ("privacy", "scan"),
    ("POST", "/v1/orgs/{org}/privacy/redact"): ("privacy", "redact"),
    ("POST", "/v1/orgs/{org}/privacy/detokenize"): ("privacy", "detokenize"),
    ("GET", "/v1/orgs/{org}/retention"): ("privacy", "retention"),
    ("PUT", "/v1/orgs/{org}/retention"): ("privacy", "set_retention"),
    ("POST", "/v1/orgs/{org}/privacy/policies"): ("privacy_policies", "create"),
    ("GET", "/v1/orgs/{org}/privacy/policies"): ("privacy_policies", "list"),
    ("GET", "/v1/orgs/{org}/privacy/policies/{policy}"): ("privacy_policies", "get"),
    ("PATCH", "/v1/orgs/{org}/privacy/policies/{policy}"): ("privacy_policies", "update"),
    ("DELETE", "/v1/orgs/{org}/privacy/policies/{policy}"): ("privacy_policies", "delete"),
    ("POST", "/v1/orgs/{org}/privacy/subject-requests"): ("subject_requests", "create"),
    ("GET", "/v1/orgs/{org}/privacy/subject-requests"): ("subject_requests", "list"),
    ("GET", "/v1/orgs/{org}/privacy/subject-requests/{request}"): ("subject_requests", "get"),
    # customer-managed keys
    ("GET", "/v1/orgs/{org}/encryption-key"): ("encryption_key", "get"),
    ("PUT", "/v1/orgs/{org}/encryption-key"): ("encryption_key", "set"),
    ("DELETE", "/v1/orgs/{org}/encryption-key"): ("encryption_key", "remove"),
    ("POST", "/v1/orgs/{org}/encryption-key/lock"): ("encryption_key", "lock"),
    # sandboxes
    ("POST", "/v1/orgs/{org}/workspaces"): ("workspaces", "create"),
    ("GET", "/v1/orgs/{org}/workspaces"): ("workspaces", "list"),
    ("GET", "/v1/orgs/{org}/workspaces/{wks}"): ("workspaces", "get"),
    ("PATCH", "/v1/orgs/{org}/workspaces/{wks}"): ("workspaces", "update"),
    ("DELETE", "/v1/orgs/{org}/workspaces/{wks}"): ("workspaces", "delete"),
    ("POST", "/v1/runs/{run}/sandbox/exec"): ("runs", "sandbox_exec"),
    ("GET", "/v1/runs/{run}/sandbox/{wks}/diff"): ("runs", "sandbox_diff"),
    # compliance and access reviews
    ("GET", "/v1/orgs/{org}/compliance/frameworks"): ("compliance", "frameworks"),
    ("GET", "/v1/orgs/{org}/compliance/controls"): ("compliance", "controls"),
    ("GET", "/v1/orgs/{org}/compliance/history"): ("compliance", "history"),
    ("POST", "/v1/orgs/{org}/compliance/attestations"): ("compliance", "attest"),
    ("GET", "/v1/orgs/{org}/compliance/attestations"): ("compliance", "attestations"),
    ("POST", "/v1/orgs/{org}/compliance/reports"): ("compliance", "create_report"),
    ("GET", "/v1/orgs/{org}/compliance/gdpr/record-of-processing"): (
        "compliance",
        "record_of_processing",
    ),
    ("POST", "/v1/orgs/{org}/access-reviews"): ("access_reviews", "create"),
    ("GET", "/v1/orgs/{org}/access-reviews"): ("access_reviews", "list"),
    ("GET", "/v1/orgs/{org}/access-reviews/{review}"): ("access_reviews", "get"),
    ("GET", "/v1/orgs/{org}/access-reviews/{review}/items"): ("access_reviews", "items"),
    ("POST", "/v1/orgs/{org}/access-reviews/{review}/items/{item}/decision"): (
        "access_reviews",
        "decide",
    ),
    # OAuth token endpoint helpers (the token itself: ClientCredentials)
    ("POST", "/v1/oauth/introspect"): ("oauth", "introspect"),
    ("POST", "/v1/oauth/revoke"): ("oauth", "revoke"),
}

# Operations the SDK does not wrap as methods, and why.
NOT_IN_SDK: dict[tuple[str, str], str] = {
    ("GET", "/readyz"): "probe for orchestrators; health() covers liveness",
    ("GET", "/.well-known/jwks.json"): "public keys for verifiers, not a client call",
    ("GET", "/v1/runs/{run}/tool-calls/{call}/stream"): "SSE; Run.wait long-polls",
    ("GET", "/v1/orgs/{org}/approvals/stream"): "SSE for the console",
    ("GET", "/v1/orgs/{org}/audit-events/export"): "streamed: audit_events.export(...)",
    ("POST", "/v1/integrations/slack/interactions"): "inbound from Slack",
    ("POST", "/v1/hooks/{endpoint}"): "inbound webhook deliveries",
    ("GET", "/v1/auth/sso/start"): "browser redirect",
    ("GET", "/v1/auth/sso/oidc/callback"): "browser redirect",
    ("GET", "/v1/auth/sso/{conn}/saml/metadata"): "XML for the identity provider",
    ("POST", "/v1/auth/sso/{conn}/saml/acs"): "browser POST from the identity provider",
    ("GET", "/v1/orgs/{org}/integrations/{integration}/connect"): (
        "browser redirect: integrations.connect_url(org, integration) gives its target"
    ),
    ("GET", "/v1/integrations/oauth/callback"): "browser redirect",
    ("POST", "/v1/oauth/token"): "ClientCredentials fetches and renews tokens itself",
    ("GET", "/v1/orgs/{org}/privacy/subject-requests/{request}/package"): (
        "a ZIP, not JSON: privacy.package(org, request)"
    ),
    ("PUT", "/v1/orgs/{org}/workspaces/{wks}/files"): (
        "a gzip tar body, not JSON: PUT it with any HTTP client (docs/sandboxes.md)"
    ),
}

# Path parameter names as the SDK spells them.
PARAM_NAMES = {
    "agt": "agent",
    "apr": "approval",
    "mcs": "server",
    "dom": "domain",
    "conn": "connection",
    "wf": "workflow",
    "src": "source",
    "doc": "document",
    "wks": "workspace",
}

# Resource attribute -> class name stem and one-line description.
RESOURCES: dict[str, str] = {
    "meta": "Instance-wide reads: health and the permission catalogue.",
    "auth": "Sign-in, second factors, step-up, password change and reset.",
    "profile": "The caller: who they are (`client.me()`), and changes to their own profile.",
    "sessions": "The signed-in user's own sessions.",
    "mfa": "The signed-in user's second factors.",
    "orgs": "Organisations: settings, deletion, ending every session.",
    "users": "An organisation's users, their time-boxed role grants and sessions.",
    "teams": "Teams and their members.",
    "roles": "Built-in and custom roles.",
    "api_keys": "API keys (`bsk_…`): the secret is shown once, at creation or rotation.",
    "service_accounts": "Service accounts (non-human principals).",
    "oauth_clients": "A service account's OAuth clients (client-credentials grant).",
    "oauth": "Token introspection and revocation (RFC 7662, RFC 7009).",
    "audit_events": "The tamper-evident audit log: search, get, verify, export.",
    "audit_checkpoints": "Signed checkpoints of the audit chain.",
    "audit_sinks": "SIEM sinks the audit log is streamed to.",
    "alert_rules": "Rules that raise alerts on audit events.",
    "alerts": "Raised alerts.",
    "authz": "The relationship-based authorization engine: rules, check, filter, list.",
    "sources": "Data sources and their access lists.",
    "documents": "Documents of a source and their access lists.",
    "secrets": "Encrypted secrets and the organisation's data key.",
    "agents": "Agents, their declared tools, and the public hub.",
    "runs": "Runs of an agent (start one with `runs.start`), and the tool-call gate.",
    "workflows": "Workflows agents run in.",
    "approval_policies": "Policies deciding which tool calls need whose approval.",
    "approvals": "Approval requests: the inbox, approve and deny.",
    "mcp_servers": "Upstream MCP servers behind the gateway.",
    "webhook_endpoints": "Inbound webhook endpoints (signed deliveries to Bastion).",
    "webhook_subscriptions": "Outbound webhook subscriptions and their deliveries.",
    "sso_connections": "SSO connections (OIDC, SAML).",
    "domains": "Verified email domains.",
    "scim_tokens": "SCIM provisioning tokens.",
    "integrations": "Third-party integrations (OAuth-connected providers).",
    "privacy": "Sensitive-data detection, redaction and detokenization; retention periods.",
    "privacy_policies": "Data policies on agent traffic, audit metadata and webhook payloads.",
    "subject_requests": "Data subject requests: access (a ZIP package) and erasure.",
    "encryption_key": "The organisation's customer-managed key (Vault Transit, PKCS#11).",
    "workspaces": "Sandbox workspaces: limits, network, and a read-only base.",
    "compliance": "Compliance frameworks, controls, attestations and reports.",
    "access_reviews": "Access reviews and their items.",
}

_SPECIAL = {"ListOf_": "Page"}
_RESERVED_FIELDS = {"get", "keys", "items", "values", "to_dict", "copy", "json", "dict", "schema"}


def model_name(ref_name: str) -> str:
    """`ListOf_UserOut_` -> `UserOutPage`; `bastion__authz__schemas__CheckOut` ->
    `AuthzCheckOut`."""
    if ref_name.startswith("ListOf_"):
        inner = ref_name[len("ListOf_") : -1]
        return ("Str" if inner == "str" else model_name(inner)) + "Page"
    if "__" in ref_name:
        parts = ref_name.split("__")
        return parts[1].capitalize() + parts[-1]
    return ref_name


def _ref(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


class Types:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = spec["components"]["schemas"]

    def is_enum(self, name: str) -> bool:
        return "enum" in self.schemas[name] and "properties" not in self.schemas[name]

    def py(self, schema: dict[str, Any], *, request: bool, prefix: str = "") -> str:
        """The Python annotation of a JSON schema. Enums are `Literal`s in requests and
        `str` in responses (a newer server may add a value)."""
        name = _ref(schema)
        if name:
            if self.is_enum(name):
                return self.py(self.schemas[name], request=request, prefix=prefix)
            return prefix + model_name(name)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return union(self.py(s, request=request, prefix=prefix) for s in schema[key])
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.py(schema["allOf"][0], request=request, prefix=prefix)
        if "const" in schema:
            return f"Literal[{schema['const']!r}]" if request else "str"
        if "enum" in schema:
            values = ", ".join(repr(v) for v in schema["enum"])
            return f"Literal[{values}]" if request else "str"
        kind = schema.get("type")
        if kind == "null":
            return "None"
        if kind == "string":
            if schema.get("format") == "date-time":
                return "datetime" + (" | str" if request else "")
            return "str"
        if kind == "integer":
            return "int"
        if kind == "number":
            return "float"
        if kind == "boolean":
            return "bool"
        if kind == "array":
            item = self.py(schema.get("items", {}), request=request, prefix=prefix)
            return f"{'builtins.' if prefix else ''}list[{item}]"
        if kind == "object" or "additionalProperties" in schema:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                return f"dict[str, {self.py(extra, request=request, prefix=prefix)}]"
            return "dict[str, Any]"
        return "Any"


def union(parts: Any) -> str:
    """`A | B | None`: each part once, None last."""
    flat = [p for part in parts for p in str(part).split(" | ")]
    unique = list(dict.fromkeys(flat))
    return " | ".join([p for p in unique if p != "None"] + (["None"] if "None" in unique else []))


def _doc_line(text: str) -> str:
    return " ".join(text.split()).replace('"""', "'''").replace("\\", "\\\\")


def py_name(name: str) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    snake = re.sub(r"\W", "_", snake)
    if keyword.iskeyword(snake) or snake in _RESERVED_FIELDS:
        snake += "_"
    return snake


def render_models(spec: dict[str, Any]) -> str:
    types = Types(spec)
    out = [
        '"""Typed results and request parts of the Bastion API, one pydantic model per',
        "schema of /openapi.json. Generated by scripts/gen_sdk.py: do not edit.",
        "",
        'Every model also reads like the JSON object it came from (`user["email"]`,',
        '`"token" in result`, `result.get("x")`) so code written against the earlier',
        'dict results keeps working; `to_dict()` gives the JSON object."""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import datetime",
        "from typing import Any",
        "",
        "from pydantic import Field",
        "",
        "from bastion.client._model import Model",
        "",
        '__all__ = ["Model"]',
        "",
    ]
    names = []
    for raw, schema in sorted(
        spec["components"]["schemas"].items(), key=lambda kv: model_name(kv[0])
    ):
        if types.is_enum(raw):
            continue
        name = model_name(raw)
        names.append(name)
        out.append("")
        out.append(f"class {name}(Model):")
        desc = schema.get("description") or schema.get("title") or name
        out.append(f'    """{_doc_line(desc)}"""')
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not props:
            out.append("")
            continue
        out.append("")
        for field, fs in props.items():
            annotation = types.py(fs, request=False)
            attr = py_name(field)
            extras = []
            if attr != field:
                extras.append(f"alias={field!r}")
            description = fs.get("description")
            if description:
                extras.append(f"description={_doc_line(description)!r}")
            if field in required:
                if extras:
                    out.append(f"    {attr}: {annotation} = Field({', '.join(extras)})")
                else:
                    out.append(f"    {attr}: {annotation}")
            else:
                annotation = union([annotation, "None"])
                out.append(
                    f"    {attr}: {annotation} = Field({', '.join(['default=None', *extras])})"
                )
    out.append("")
    out.append("")
    out.append("__all__ += [")
    out.extend(f"    {n!r}," for n in sorted(names))
    out.append("]")
    for name in names:
        out.append(f"{name}.model_rebuild()")
    return "\n".join(out) + "\n"


class Operation:
    def __init__(
        self, types: Types, method: str, path: str, op: dict[str, Any], resource: str, name: str
    ) -> None:
        self.types = types
        self.method = method
        self.path = path
        self.op = op
        self.resource = resource
        self.name = name
        self.path_params = re.findall(r"{(\w+)}", path)
        self.query = [p for p in op.get("parameters", []) if p["in"] == "query"]
        body = (op.get("requestBody") or {}).get("content", {})
        self.body_schema: dict[str, Any] | None = None
        self.form = False
        if "application/json" in body:
            schema = body["application/json"]["schema"]
            self.body_required = bool(op["requestBody"].get("required"))
            refs = [_ref(s) for s in schema.get("anyOf", [schema]) if _ref(s)]
            self.body_schema = types.schemas[refs[0]] if refs else schema
        elif "application/x-www-form-urlencoded" in body:
            self.form = True
            self.body_schema = body["application/x-www-form-urlencoded"]["schema"]
            self.body_required = True
        self.result, self.item = self._result()
        self.paginated = self.item is not None and any(p["name"] == "cursor" for p in self.query)

    def _result(self) -> tuple[str, str | None]:
        """(annotation of the result, item model of a `{"data": [...]}` answer)."""
        for status, response in self.op["responses"].items():
            if not status.startswith("2"):
                continue
            content = response.get("content", {})
            if "application/json" not in content:
                return "None", None
            schema = content["application/json"]["schema"]
            name = _ref(schema)
            if name and name.startswith("ListOf_"):
                inner = self.types.schemas[name]["properties"]["data"]["items"]
                return "m." + model_name(name), self.types.py(inner, request=False, prefix="m.")
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and extra.get("type") == "array":
                item = self.types.py(extra["items"], request=False, prefix="m.")
                return f"builtins.list[{item}]", None
            if not schema:
                return "Any", None
            return self.types.py(schema, request=False, prefix="m."), None
        return "None", None

    @property
    def list_unwrap(self) -> bool:
        return self.result.startswith("builtins.list[")


def _sig_params(op: Operation) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """(positional path parameters, keyword parameters, (python name, wire name, where))."""
    positional = [f"{PARAM_NAMES.get(p, p)}: str" for p in op.path_params]
    kw_required: list[str] = []
    kw_optional: list[str] = []
    wire: list[tuple[str, str, str]] = []
    if op.body_schema is not None:
        props = op.body_schema.get("properties", {})
        required = set(op.body_schema.get("required", [])) if op.body_required else set()
        for field, fs in props.items():
            attr = py_name(field)
            annotation = op.types.py(fs, request=True, prefix="m.")
            annotation = annotation.replace("m.", "m.")
            refs = [_ref(fs), *(_ref(s) for s in fs.get("anyOf", []))]
            if any(r and not op.types.is_enum(r) for r in refs):
                annotation = union([annotation, "Mapping[str, Any]"])
            if field in required:
                kw_required.append(f"{attr}: {annotation}")
            else:
                kw_optional.append(f"{attr}: {union([annotation, 'None'])} = None")
            wire.append((attr, field, "body"))
    for q in op.query:
        if q["name"] in ("cursor", "limit") and op.paginated:
            continue
        attr = py_name(q["name"])
        annotation = op.types.py(q["schema"], request=True, prefix="m.")
        if q.get("required"):
            kw_required.append(f"{attr}: {annotation}")
        else:
            kw_optional.append(f"{attr}: {union([annotation, 'None'])} = None")
        wire.append((attr, q["name"], "query"))
    return positional, kw_required + kw_optional, wire


def _docstring(op: Operation, indent: str) -> list[str]:
    summary = op.op.get("summary") or op.name.replace("_", " ").capitalize()
    lines = [f"{op.method} {op.path}: {_doc_line(summary)}."]
    description = op.op.get("description")
    if description:
        lines += ["", *(_doc_line(p) for p in description.strip().split("\n\n"))]
    args = []
    if op.body_schema is not None:
        for field, fs in op.body_schema.get("properties", {}).items():
            text = fs.get("description") or fs.get("title") or ""
            args.append(f"    {py_name(field)}: {_doc_line(text)}")
    for q in op.query:
        if q["name"] in ("cursor", "limit") and op.paginated:
            continue
        text = q.get("description") or q["schema"].get("title") or ""
        args.append(f"    {py_name(q['name'])}: {_doc_line(text)}")
    if args:
        lines += ["", "Args:", *args]
    import textwrap

    wrapped: list[str] = []
    for line in lines:
        if not line:
            wrapped.append("")
            continue
        lead = len(line) - len(line.lstrip())
        wrapped += textwrap.wrap(
            line,
            width=92 - len(indent),
            subsequent_indent=" " * (lead + (4 if lead else 0)),
            break_long_words=False,
            break_on_hyphens=False,
        ) or [""]
    out = [f'{indent}"""{wrapped[0]}']
    out += [f"{indent}{w}" if w else "" for w in wrapped[1:]]
    out.append(f'{indent}"""')
    return out


def _method(op: Operation, asynchronous: bool) -> list[str]:
    positional, keywords, wire = _sig_params(op)
    i1, i2 = "    ", "        "
    call_parts = ", ".join(
        [
            repr(s) if not s.startswith("{") else PARAM_NAMES.get(s[1:-1], s[1:-1])
            for s in op.path.split("/")[1:]
        ]
    )
    path_expr = f"_path({call_parts})"
    body_items = ", ".join(
        f"{wire_name!r}: {attr}" for attr, wire_name, where in wire if where == "body"
    )
    query_items = ", ".join(
        f"{wire_name!r}: {attr}" for attr, wire_name, where in wire if where == "query"
    )
    extra_kw = []
    if op.method == "POST" and not op.form:
        extra_kw.append("idempotency_key: str | None = None")
    lines: list[str] = []
    awaiting = "await " if asynchronous else ""
    define = "async def" if asynchronous else "def"

    def signature(name: str, kws: list[str], result: str, is_async: bool) -> str:
        params = ["self", *positional]
        if kws:
            params += ["*", *kws]
        d = "async def" if is_async else "def"
        return f"{i1}{d} {name}({', '.join(params)}) -> {result}:"

    req_args = [f"{op.method!r}", path_expr]
    if query_items:
        req_args.append(f"params=_query({{{query_items}}})")
    if op.body_schema is not None and not op.form:
        req_args.append(f"json=_body({{{body_items}}})")
    if op.form:
        req_args.append(f"form=_body({{{body_items}}})")
    if op.method == "POST" and not op.form:
        req_args.append("idempotency_key=_key(idempotency_key)")
    if op.result == "None":
        req_args.append("expect_body=False")
    req = f"Req({', '.join(req_args)})"

    if op.paginated:
        item = op.item
        iterator = f"AsyncIterator[{item}]" if asynchronous else f"Iterator[{item}]"
        lines.append(
            signature(op.name, [*keywords, "page_size: int | None = None"], iterator, False)
        )
        lines += _docstring(op, i2)
        req_it = (
            req.replace("params=_query({", "params=_query({'limit': page_size, ", 1)
            if query_items
            else req.replace(path_expr, f"{path_expr}, params=_query({{'limit': page_size}})", 1)
        )
        lines.append(f"{i2}return self._c._iterate({req_it}, {item})")
        lines.append("")
        page_name = "page" if op.name == "list" else f"{op.name}_page"
        lines.append(
            signature(
                page_name,
                [*keywords, "limit: int | None = None", "cursor: str | None = None"],
                op.result,
                asynchronous,
            )
        )
        lines.append(f'{i2}"""One page of `{op.name}`: `data` and `next_cursor`."""')
        req_page = (
            req.replace("params=_query({", "params=_query({'limit': limit, 'cursor': cursor, ", 1)
            if query_items
            else req.replace(
                path_expr, f"{path_expr}, params=_query({{'limit': limit, 'cursor': cursor}})", 1
            )
        )
        lines.append(
            f"{i2}return cast({op.result}, {awaiting}self._c._request({req_page}, {op.result}))"
        )
        return lines

    lines.append(signature(op.name, [*keywords, *extra_kw], op.result, asynchronous))
    lines += _docstring(op, i2)
    if op.result == "None":
        lines.append(f"{i2}{awaiting}self._c._request({req}, None)")
    elif op.list_unwrap:
        lines.append(f"{i2}return {awaiting}self._c._request_list({req}, {op.result[14:-1]})")
    else:
        lines.append(
            f"{i2}return cast({op.result}, {awaiting}self._c._request({req}, {op.result}))"
        )
    _ = define
    return lines


def class_name(resource: str, asynchronous: bool) -> str:
    stem = "".join(part.capitalize() for part in resource.split("_"))
    return ("Async" if asynchronous else "") + stem + "API"


def render_generated(spec: dict[str, Any]) -> str:
    types = Types(spec)
    by_resource: dict[str, list[Operation]] = {r: [] for r in RESOURCES}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            key = (method.upper(), path)
            if key in NOT_IN_SDK:
                continue
            if key not in OPERATIONS:
                raise SystemExit(f"{key}: add it to OPERATIONS or NOT_IN_SDK in scripts/gen_sdk.py")
            resource, name = OPERATIONS[key]
            by_resource[resource].append(Operation(types, key[0], path, op, resource, name))
    out = [
        '"""The API\'s operations as typed methods, one class per area, sync and async.',
        'Generated by scripts/gen_sdk.py from /openapi.json: do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        "import builtins",
        "from collections.abc import AsyncIterator, Iterator, Mapping",
        "from datetime import datetime",
        "from typing import TYPE_CHECKING, Any, Literal, cast",
        "",
        "from bastion.client import models as m",
        "from bastion.client._base import Req, _body, _key, _path, _query",
        "",
        "if TYPE_CHECKING:",
        "    from bastion.client._transport import AsyncTransport, SyncTransport",
        "",
        "__all__ = [",
        *(
            f"    {n!r},"
            for n in sorted(class_name(r, a) for r in RESOURCES for a in (True, False))
        ),
        "]",
        "",
        "# Every operation: (METHOD, path) -> (client attribute, method name).",
        "OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {",
        *(f"    {k!r}: {v!r}," for k, v in OPERATIONS.items()),
        "}",
        "",
        "_ = (datetime, Literal, Mapping)  # used by some annotations only",
    ]
    for asynchronous in (False, True):
        for resource, description in RESOURCES.items():
            transport = "AsyncTransport" if asynchronous else "SyncTransport"
            out += ["", ""]
            out.append(f"class {class_name(resource, asynchronous)}:")
            out.append(f'    """{description}"""')
            out.append("")
            out.append(f"    def __init__(self, c: {transport}) -> None:")
            out.append("        self._c = c")
            for op in sorted(by_resource[resource], key=lambda o: o.name):
                out.append("")
                out += _method(op, asynchronous)
    return "\n".join(out) + "\n"


def _format(text: str, name: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run(  # noqa: S603 - the venv's own ruff
        [str(ruff), "format", "--stdin-filename", name, "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    fixed = subprocess.run(  # noqa: S603
        [str(ruff), "check", "--fix-only", "--select", "I,F401,UP", "--stdin-filename", name, "-"],
        input=done.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    return subprocess.run(  # noqa: S603
        [str(ruff), "format", "--stdin-filename", name, "-"],
        input=fixed.stdout or done.stdout,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def render(spec: dict[str, Any]) -> dict[Path, str]:
    return {
        MODELS: _format(render_models(spec), str(MODELS)),
        GENERATED: _format(render_generated(spec), str(GENERATED)),
    }


def live_spec() -> dict[str, Any]:
    """The OpenAPI document of an app built in a throwaway data directory."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from tests.conftest import (
        AUDIT_SIGNING_KEY_FILE,
        PEPPER_FILE,
        ROOT_KEY_FILE,
        create_keyring,
        make_settings,
    )

    from bastion.api.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
            create_keyring(data / name)
        app = create_app(make_settings(data, f"sqlite:///{data / 'bastion.db'}"))
        return app.openapi()


def main() -> int:
    files = render(live_spec())
    if "--check" in sys.argv:
        stale = [str(p.relative_to(ROOT)) for p, text in files.items() if p.read_text() != text]
        if stale:
            print("out of date (run scripts/gen_sdk.py):", *stale)
            return 1
        return 0
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
