"""Alerts: rules over each organisation's audit event stream, incidents deduplicated,
and notifications by signed webhook, Slack and email. The top domain: it watches audit,
approvals and webhooks, and nothing below imports it."""
