"""Single sign-on: an organisation's identity providers (OpenID Connect; SAML plugs in
by connection type), its verified domains, just-in-time users and group mapping, and
SSO enforcement for password sign-in (registered with identity at import)."""
