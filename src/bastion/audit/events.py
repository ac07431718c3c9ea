"""The closed catalogue of audit event types, sorted by value; documented in
docs/audit-events.md."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    ACL_GRANTED = "acl.granted"
    ACL_REVOKED = "acl.revoked"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_RULE_CREATED = "alert_rule.created"
    ALERT_RULE_DELETED = "alert_rule.deleted"
    API_KEY_CREATED = "api_key.created"
    API_KEY_NEW_NETWORK = "api_key.new_network"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_ROTATED = "api_key.rotated"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_PURGED = "audit.purged"
    AUDIT_SINK_CREATED = "audit_sink.created"
    AUDIT_SINK_DELETED = "audit_sink.deleted"
    AUTH_CREDENTIAL_REJECTED = "auth.credential_rejected"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_LOGIN_SUCCEEDED = "auth.login_succeeded"
    AUTH_LOGIN_THROTTLED = "auth.login_throttled"
    AUTH_LOGOUT = "auth.logout"
    AUTH_PASSWORD_SET = "auth.password_set"  # noqa: S105 - an event name
    AUTHZ_DENIED = "authz.denied"
    AUTHZ_RULE_CREATED = "authz_rule.created"
    AUTHZ_RULE_DELETED = "authz_rule.deleted"
    DOCUMENT_CREATED = "document.created"
    DOCUMENT_DELETED = "document.deleted"
    DOCUMENT_UPDATED = "document.updated"
    ORG_CREATED = "org.created"
    ORG_UPDATED = "org.updated"
    ROLE_CREATED = "role.created"
    ROLE_DELETED = "role.deleted"
    ROLE_UPDATED = "role.updated"
    ROLE_GRANT_CREATED = "role_grant.created"
    ROLE_GRANT_REVOKED = "role_grant.revoked"
    SERVICE_ACCOUNT_CREATED = "service_account.created"
    SERVICE_ACCOUNT_DELETED = "service_account.deleted"
    SERVICE_ACCOUNT_UPDATED = "service_account.updated"
    SESSION_REVOKED = "session.revoked"
    SOURCE_CREATED = "source.created"
    TEAM_CREATED = "team.created"
    TEAM_DELETED = "team.deleted"
    TEAM_MEMBER_ADDED = "team.member_added"
    TEAM_MEMBER_REMOVED = "team.member_removed"
    TEAM_UPDATED = "team.updated"
    USER_CREATED = "user.created"
    USER_DELETED = "user.deleted"
    USER_UPDATED = "user.updated"


class Outcome(StrEnum):
    DENIED = "denied"
    FAILURE = "failure"
    SUCCESS = "success"
