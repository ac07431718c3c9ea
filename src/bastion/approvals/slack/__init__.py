"""Approvals in Slack: the organisation's Slack app (`settings`) and the Approve / Deny
clicks Slack sends back (`interactions`)."""
