"""OpenID Connect sign-in: the relying party's part of the SSO flow (`bastion.sso.flow`).

`_start` (registered for connections of type `oidc`) sends the browser to the
provider's authorization endpoint with PKCE (S256), a nonce and the state; the verifier
and the nonce are derived from the state, never stored. `oidc_callback` takes the
provider's redirect back through `flow.answer`: the authorization code is exchanged
(with the client secret from the vault), the ID token validated (issuer, audience,
nonce, at_hash), userinfo consulted when the token carries no email, and the person's
`VerifiedIdentity` handed to `flow.complete_sign_in`. RFC 9207's `iss` is checked when
the provider sends it (mix-up defence).
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from bastion.core.crypto import digest
from bastion.secrets import sealed
from bastion.sso import connections, flow, oidc
from bastion.sso.errors import SsoFailure
from bastion.sso.flow import Env, Redirect, VerifiedIdentity
from bastion.sso.models import SsoConnection, SsoRequest


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _start(db: Session, env: Env, conn: SsoConnection, state: str, login_hint: str | None) -> str:
    if not conn.issuer or not conn.client_id:
        raise SsoFailure("connection_incomplete", "issuer or client_id missing")
    provider = env.rp.metadata(conn.issuer)
    if provider.code_challenge_methods and "S256" not in provider.code_challenge_methods:
        raise SsoFailure("provider_invalid", "provider does not support PKCE S256")
    verifier = flow.derive(env, "pkce", state)
    params = {
        "response_type": "code",
        "client_id": conn.client_id,
        "redirect_uri": env.redirect_uri,
        "scope": " ".join(conn.scopes or ["openid", "email", "profile"]),
        "state": state,
        "nonce": flow.derive(env, "nonce", state),
        "code_challenge": _b64(digest("sha256", verifier)),
        "code_challenge_method": "S256",
    }
    if "openid" not in params["scope"].split():
        params["scope"] = "openid " + params["scope"]
    if login_hint:
        params["login_hint"] = login_hint
    sep = "&" if "?" in provider.authorization_endpoint else "?"
    return provider.authorization_endpoint + sep + urlencode(params)


flow.register_protocol("oidc", _start)


def oidc_callback(db: Session, env: Env, params: dict[str, str], cookie: str | None) -> Redirect:
    """The OpenID provider's redirect back: 302 to `return_to` with a code or an error."""

    def verify(request: SsoRequest, conn: SsoConnection) -> VerifiedIdentity:
        if conn.type != "oidc":
            raise SsoFailure("protocol_mismatch", "an OIDC answer for a non-OIDC connection")
        return _identity(db, env, conn, request, params)

    return flow.answer(db, env, params.get("state"), cookie, verify)


def _identity(
    db: Session, env: Env, conn: SsoConnection, request: SsoRequest, params: dict[str, str]
) -> VerifiedIdentity:
    if params.get("error"):
        word = params["error"]
        word = word if word.replace("_", "").isalnum() and len(word) < 50 else "error"
        raise SsoFailure("idp_error", f"provider answered {word}")
    if not conn.issuer or not conn.client_id:
        raise SsoFailure("connection_incomplete", "issuer or client_id missing")
    if "iss" in params and params["iss"] != conn.issuer:  # RFC 9207: mix-up defence
        raise SsoFailure("issuer_mismatch", "authorization response from another issuer")
    code = params.get("code")
    if not code:
        raise SsoFailure("code_missing", "no authorization code")
    provider = env.rp.metadata(conn.issuer)
    try:
        secret = connections.client_secret(db, env.vault, conn)
    except sealed.Unreadable:
        raise SsoFailure("connection_incomplete", "client secret unreadable") from None
    state = params["state"]
    tokens = env.rp.exchange_code(
        provider,
        code=code,
        redirect_uri=env.redirect_uri,
        client_id=conn.client_id,
        client_secret=secret,
        code_verifier=flow.derive(env, "pkce", state),
    )
    id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
    if not isinstance(id_token, str):
        raise SsoFailure("token_invalid", "no id_token in the token response")
    claims = env.rp.validate_id_token(
        provider,
        id_token,
        client_id=conn.client_id,
        nonce=flow.derive(env, "nonce", state),
        access_token=access_token if isinstance(access_token, str) else None,
        groups_attribute=conn.groups_attribute,
    )
    if claims.email is None and isinstance(access_token, str):
        info = env.rp.userinfo(provider, access_token)
        if info:
            claims = oidc.merge_userinfo(claims, info, conn.groups_attribute)
    return VerifiedIdentity(
        subject=claims.subject,
        email=claims.email,
        email_verified=claims.email_verified,
        groups=claims.groups,
        name=claims.name,
        amr=claims.amr,
    )
