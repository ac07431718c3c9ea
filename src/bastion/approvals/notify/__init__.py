"""Approvers notified where they are: who may decide an approval now (`recipients`),
what they are told (`messages`), and the after-commit, retried sending by email and
Slack (`deliver`). Signed webhooks (`approval.requested`) go through
`bastion.webhooks.outbound` as before."""
