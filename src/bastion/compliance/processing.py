"""The GDPR Art. 30(1) record of processing activities, generated from the
organisation's configuration as Bastion holds it: what it processes about whom, for
what, who receives it (sinks, alert channels, forwarded webhooks), how long it is kept
and how it is protected. A draft the controller reviews and completes (their own
purposes and transfers beyond Bastion are theirs to state), never a finished record."""

from __future__ import annotations

from typing import Any

from bastion.compliance.facts import Facts
from bastion.core.clock import rfc3339


def record_of_processing(facts: Facts) -> dict[str, Any]:
    org = facts.org
    people = facts.people
    sinks = [{"name": s.name, "type": s.type, "enabled": s.enabled} for s in facts.sinks]
    forwards = [
        {"name": e.name, "provider": e.provider} for e in facts.webhook_endpoints if e.forwards
    ]
    key = facts.data_key
    return {
        "article": "GDPR Art. 30(1)",
        "generated_at": rfc3339(facts.now),
        "controller": {"organisation_id": org.id, "name": org.name},
        "processing_activities": [
            {
                "name": "Access control for people and agents",
                "purposes": [
                    "authenticate members, service accounts and agent runs",
                    "authorise each action by role, grant and policy",
                ],
                "data_subjects": {
                    "members": len(people),
                    "active_members": sum(1 for p in people if p.status == "active"),
                },
                "personal_data": [
                    "e-mail address and name",
                    "password hash (argon2id) and second-factor registrations",
                    "sessions: address and user agent of each sign-in",
                ],
                "retention": {
                    "session_idle_timeout_seconds": org.session_idle_timeout,
                    "session_absolute_timeout_seconds": org.session_absolute_timeout,
                    "accounts": "until removed by an admin or de-provisioned (SCIM)",
                },
            },
            {
                "name": "Security audit trail",
                "purposes": ["accountability (Art. 5(2))", "security monitoring (Art. 32)"],
                "data_subjects": {"members": len(people)},
                "personal_data": [
                    "actor identifier, address and user agent of each audited action",
                ],
                "retention": {"audit_retention_days": org.audit_retention_days},
                "recipients": [{"type": "siem_sink", **s} for s in sinks]
                + [{"type": "alert_channel", "channel": c} for c in facts.alert_channels],
            },
            {
                "name": "Inbound webhooks",
                "purposes": ["verify and relay events from third-party providers"],
                "personal_data": ["whatever the providers' payloads carry"],
                "retention": {
                    "endpoints": [
                        {"name": e.name, "retention_days": e.retention_days}
                        for e in facts.webhook_endpoints
                    ]
                },
                "recipients": [{"type": "webhook_forward", **f} for f in forwards],
            },
        ],
        "transfers": "to the recipients above, where their destinations are; Bastion makes"
        " no other transfer",
        "security_measures": {
            "mfa_policy": org.mfa_policy,
            "sso_enforced": bool(org.sso_enforced),
            "ip_allowlist_entries": len(org.ip_allowlist or []),
            "encryption_at_rest": "secrets sealed under a per-organisation data key"
            " (AES-256-GCM envelope)"
            + (f", version {key.active_version}" if key.active_version else ""),
            "audit_integrity": "hash-chained events with signed checkpoints (Ed25519)",
        },
    }
