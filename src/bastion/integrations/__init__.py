"""OAuth integrations: an organisation's connections to third-party systems (GitHub,
Slack, Linear, Google, any OAuth 2.0 provider) whose tokens Bastion holds in the vault
and hands to agent runs as short-lived access tokens."""
