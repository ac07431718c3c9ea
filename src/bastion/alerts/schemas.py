"""The alerts API's bodies: a rule as given (kinds and channels checked again by
`bastion.alerts.rules`) and as shown (never its channel secrets), and an alert."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from bastion.core.schemas import In, Name, Out

RuleKind = Literal[
    "failed_signins_account",
    "failed_signins_ip",
    "new_network_signin",
    "not_found_burst",
    "access_spike",
    "permission_change",
    "data_export",
    "sink_failing",
    "api_key_new_network",
    "approval_pending",
    "approval_requested",
    "mfa_failures",
    "mfa_change",
    "step_up_refused",
    "sso_failures",
    "scim_admin_deprovisioned",
    "integration_disconnected",
    "control_failing",
    "access_review_due",
    "encryption_key_unavailable",
]
Channels = Annotated[list[dict[str, Any]], Field(max_length=10)]


class AlertRuleIn(In):
    """An alert rule. `kind` and its `params` are described in docs/alerts.md; channels
    are `{"type": "webhook", "url", "secret": "whsec_…"}` (Standard Webhooks signature),
    `{"type": "slack", "url"}` (incoming webhook) or `{"type": "email", "to": [...]}`."""

    name: Name
    kind: RuleKind
    params: dict[str, Any] = Field(default_factory=dict)
    channels: Channels = Field(default_factory=list)
    enabled: bool = True


class AlertRulePatch(In):
    """The fields to change, checked as on create. `params` replaces the rule's
    parameters (those left out take the kind's defaults); `channels` replaces its
    channels, where a webhook channel without `secret` keeps the signing secret of the
    rule's current webhook channel with the same `url`. `kind` cannot change (its open
    alerts belong to it): give the rule's own kind or leave it out. None may be null."""

    name: Name | None = None
    kind: RuleKind | None = None
    params: dict[str, Any] | None = None
    channels: Channels | None = None
    enabled: bool | None = None


class AlertChannelOut(Out):
    type: str
    url: str | None = None
    to: list[str] | None = None


class AlertRuleOut(Out):
    id: str
    name: str
    kind: str
    params: dict[str, Any]
    channels: list[AlertChannelOut]
    enabled: bool
    created_at: datetime


class AlertOut(Out):
    id: str
    rule_id: str
    kind: str
    key: str
    status: Literal["open", "resolved"]
    summary: str
    count: int
    first_at: datetime
    last_at: datetime
    first_event_id: str | None
    last_event_id: str | None
    details: dict[str, Any]
    notified_at: datetime | None
    notify_attempts: int
    notify_error: str | None
    resolved_at: datetime | None
