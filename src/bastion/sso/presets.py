"""What each identity provider preset fills in: the issuer pattern (`{tenant}` is the
organisation's tenant name or id at that provider), the claim that carries groups and
the scopes to ask for. A connection's own values win over its preset's. docs/sso.md
walks through each provider's console."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    issuer: str  # may contain {tenant}
    groups_attribute: str | None
    scopes: tuple[str, ...]


PRESETS: dict[str, Preset] = {
    "okta": Preset(
        "Okta", "https://{tenant}.okta.com", "groups", ("openid", "email", "profile", "groups")
    ),
    "entra": Preset(
        "Microsoft Entra ID",
        "https://login.microsoftonline.com/{tenant}/v2.0",
        "groups",
        ("openid", "email", "profile"),
    ),
    "google": Preset(
        "Google Workspace", "https://accounts.google.com", None, ("openid", "email", "profile")
    ),
    "onelogin": Preset(
        "OneLogin",
        "https://{tenant}.onelogin.com/oidc/2",
        "groups",
        ("openid", "email", "profile", "groups"),
    ),
    "auth0": Preset(
        "Auth0",
        "https://{tenant}.auth0.com/",
        "https://bastion/groups",
        ("openid", "email", "profile"),
    ),
}
DEFAULT_SCOPES = ("openid", "email", "profile")


def issuer_for(preset: str, tenant: str | None) -> str | None:
    """The preset's issuer for `tenant`; None when the pattern needs a tenant not given."""
    pattern = PRESETS[preset].issuer
    if "{tenant}" in pattern:
        return pattern.format(tenant=tenant) if tenant else None
    return pattern
