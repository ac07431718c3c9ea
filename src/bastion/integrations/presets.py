"""What each provider preset fills in: its authorize, token and revoke endpoints, the
default scopes (least privilege: read-only where the provider has such a scope), how
scopes are joined, how the client authenticates at the token endpoint and any extra
authorize parameters. An integration's own URLs and scopes win over its preset's.
docs/integrations.md walks through each provider's console.

`revoke` names the revocation dialect: `rfc7009` (POST `token`, `token_type_hint`, with
client authentication), `slack` (`auth.revoke` with the token itself) or `github`
(`DELETE /applications/{client_id}/grant`, basic auth with the client's credentials)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    title: str
    authorize_url: str | None
    token_url: str | None
    revoke_url: str | None
    scopes: tuple[str, ...]
    scope_separator: str = " "
    client_auth: str = "client_secret_basic"  # or "client_secret_post"
    revoke: str = "rfc7009"
    authorize_params: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # GitHub has no read-only repository scope for OAuth apps: `read:user` reads the
    # profile only; add `repo` (read and write) knowingly, or use a GitHub App.
    "github": Preset(
        "GitHub",
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        "https://api.github.com/applications/{client_id}/grant",
        ("read:user",),
        client_auth="client_secret_post",
        revoke="github",
    ),
    "slack": Preset(
        "Slack",
        "https://slack.com/oauth/v2/authorize",
        "https://slack.com/api/oauth.v2.access",
        "https://slack.com/api/auth.revoke",
        ("channels:read",),
        scope_separator=",",
        client_auth="client_secret_post",
        revoke="slack",
    ),
    "linear": Preset(
        "Linear",
        "https://linear.app/oauth/authorize",
        "https://api.linear.app/oauth/token",
        "https://api.linear.app/oauth/revoke",
        ("read",),
        scope_separator=",",
        client_auth="client_secret_post",
    ),
    # `access_type=offline` and `prompt=consent`: Google hands out a refresh token only so.
    "google": Preset(
        "Google",
        "https://accounts.google.com/o/oauth2/v2/auth",
        "https://oauth2.googleapis.com/token",
        "https://oauth2.googleapis.com/revoke",
        ("openid", "email"),
        client_auth="client_secret_post",
        authorize_params={"access_type": "offline", "prompt": "consent"},
    ),
    # Any OAuth 2.0 provider: its URLs must be given; RFC 6749 client authentication.
    "oauth2": Preset("OAuth 2.0", None, None, None, ()),
}
