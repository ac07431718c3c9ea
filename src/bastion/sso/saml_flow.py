"""SAML sign-in: the service provider's part of the SSO flow (`bastion.sso.flow`).

    GET  /v1/auth/sso/start                 `_start` (registered as the "saml" protocol)
    GET  /v1/auth/sso/{conn}/saml/metadata  `sp_metadata_document`
    POST /v1/auth/sso/{conn}/saml/acs       `acs`: the IdP's answer (HTTP-POST binding)

SP-initiated: the AuthnRequest is signed with the connection's key (HTTP-Redirect
binding); its ID is derived from the sign-in's state (`flow.derive`, purpose
"saml-id") and the RelayState is the state itself, so nothing more is stored. At the
ACS, a RelayState that names a state we issued goes through `flow.answer` (claimed
once, from the browser that started it), and the response must answer exactly that
request (`InResponseTo` = the ID derived again from the state).

IdP-initiated (the person starts at the IdP's dashboard): refused unless the
connection's `allow_idp_initiated` is on (audited `idp_initiated_disabled`). When on,
an answer without a RelayState of ours must carry no `InResponseTo` and ends at
`/console/` (`flow.unsolicited`). It is open to login CSRF by nature (anyone can post
their own valid assertion into a victim's browser), which is why it is off by default.

Every accepted assertion ID is recorded once per connection until the assertion could
no longer be accepted anyway (`onetime.use_once`): a replay is `assertion_replayed`.

The IdP's metadata, when it comes from a URL, is fetched again when older than
`BASTION_SSO_METADATA_TTL`, and when a response's signature does not verify with the
certificates kept (at most once per `BASTION_SSO_JWKS_REFETCH_INTERVAL`): the IdP may
have rolled its signing certificate. A failed refresh keeps the metadata last fetched.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import structlog
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.secrets import sealed
from bastion.sso import connections, flow, onetime, saml, saml_sp
from bastion.sso.errors import SsoFailure
from bastion.sso.models import SsoConnection, SsoRequest

log = structlog.get_logger("bastion.sso.saml")
REQUEST_ID_PURPOSE = "saml-id"
ASSERTION_PURPOSE = "saml-assertion"


def request_id_for(env: flow.Env, state: str) -> str:
    """The AuthnRequest ID of the sign-in `state` names: only this server can compute
    it; an xs:ID (an NCName, so it starts with "_")."""
    return "_" + flow.derive(env, REQUEST_ID_PURPOSE, state)


def _failure(exc: saml.SamlError) -> SsoFailure:
    return SsoFailure(exc.code, exc.message)


def _saml_connection(db: Session, connection_id: str) -> SsoConnection:
    conn = connections.find_any(db, connection_id)
    if conn is None or conn.type != "saml":
        raise NotFound("SAML connection not found")
    return conn


# --- the IdP's metadata ---------------------------------------------------------------


def _url(conn: SsoConnection) -> str | None:
    """The metadata URL when the metadata comes from one (not pasted)."""
    return conn.idp_metadata_url if conn.idp_metadata_xml is None else None


def _age(conn: SsoConnection, now: datetime) -> float | None:
    if conn.idp_metadata_fetched_at is None or conn.idp_metadata_fetched is None:
        return None
    return (now - as_utc(conn.idp_metadata_fetched_at)).total_seconds()


def _refresh(db: Session, env: flow.Env, conn: SsoConnection, url: str, now: datetime) -> None:
    """Fetch the IdP's metadata again; keep the last good one when that fails."""
    try:
        xml, info = saml_sp.fetch(url, saml_sp.Outbound.of(env.settings))
    except saml.SamlError as exc:
        if conn.idp_metadata_fetched is None:
            raise _failure(exc) from None
        log.warning("saml metadata refresh failed", connection_id=conn.id, code=exc.code)
        return
    changed = xml != conn.idp_metadata_fetched
    conn.idp_metadata_fetched, conn.idp_metadata_fetched_at = xml, now
    if changed:
        audit.record(
            db,
            type=EventType.SSO_CONNECTION_METADATA_REFRESHED,
            actor=env.actor,
            org_id=conn.org_id,
            resource=("sso_connection", conn.id),
            metadata={
                "connection_id": conn.id,
                "idp_entity_id": info.entity_id[:500],
                "certificates": len(info.certificates),
            },
        )


def idp_info(
    db: Session, env: flow.Env, conn: SsoConnection, *, signature_failed: bool = False
) -> saml.IdpInfo:
    """What the connection's IdP metadata says, fetched again first when due."""
    url = _url(conn)
    if url is not None:
        now = utcnow()
        age = _age(conn, now)
        due = (
            age is None
            or age >= env.settings.sso_metadata_ttl
            or (signature_failed and age >= env.settings.sso_jwks_refetch_interval)
        )
        if due:
            _refresh(db, env, conn, url, now)
    xml = saml_sp.metadata_xml(conn)
    if xml is None:
        raise SsoFailure("connection_incomplete", "the connection has no IdP metadata")
    try:
        return saml.parse_idp_metadata(xml)
    except saml.SamlError as exc:
        raise _failure(exc) from None


def _settings(
    env: flow.Env, conn: SsoConnection, idp: saml.IdpInfo, sp: saml.SpCredentials | None = None
) -> saml.SamlSettings:
    base = saml_sp.public_settings(env.settings.public_url, conn)
    return dataclasses.replace(
        base,
        sp=sp or base.sp,
        idp=idp,
        allow_idp_initiated=conn.allow_idp_initiated,
        email_attribute=conn.email_attribute,
        groups_attribute=conn.groups_attribute,
    )


# --- SP-initiated: the start ----------------------------------------------------------


def _start(
    db: Session, env: flow.Env, conn: SsoConnection, state: str, login_hint: str | None
) -> str:
    if not conn.sp_cert_pem or conn.sp_key_secret_id is None:
        raise SsoFailure("connection_incomplete", "no SP credentials: PATCH the connection")
    idp = idp_info(db, env, conn)
    try:
        sp = saml_sp.sp_credentials(db, env.vault, conn)
    except sealed.Unreadable:
        raise SsoFailure("connection_incomplete", "the SP key is unreadable") from None
    try:
        redirect = saml.authn_request(
            _settings(env, conn, idp, sp), state, request_id=request_id_for(env, state)
        )
    except saml.SamlError as exc:
        raise _failure(exc) from None
    return redirect.url


flow.register_protocol("saml", _start)


# --- the answer -----------------------------------------------------------------------


def _identity(
    db: Session,
    env: flow.Env,
    conn: SsoConnection,
    saml_response: str,
    expected_request_id: str | None,
) -> flow.VerifiedIdentity:
    """Parse and check the response (its signature against the IdP's certificates,
    fetched again once if it does not verify), record its assertion once, and say who
    signed in."""
    idp = idp_info(db, env, conn)
    try:
        try:
            found = saml.parse_response(
                _settings(env, conn, idp),
                saml_response,
                expected_request_id=expected_request_id,
                now=utcnow(),
            )
        except saml.SamlError as exc:
            if exc.code != "signature_invalid" or _url(conn) is None:
                raise
            fresh = idp_info(db, env, conn, signature_failed=True)
            if fresh.certificates == idp.certificates:
                raise
            found = saml.parse_response(
                _settings(env, conn, fresh),
                saml_response,
                expected_request_id=expected_request_id,
                now=utcnow(),
            )
    except saml.SamlError as exc:
        raise _failure(exc) from None
    if not onetime.use_once(
        db, ASSERTION_PURPOSE, f"{conn.id}:{found.assertion_id}", found.not_on_or_after
    ):
        raise SsoFailure("assertion_replayed", "this assertion was accepted before")
    return flow.VerifiedIdentity(
        subject=found.name_id,
        email=found.email,
        email_verified=None,  # SAML says nothing of it; the domain must be verified
        groups=found.groups,
    )


def acs(
    db: Session,
    env: flow.Env,
    connection_id: str,
    saml_response: str | None,
    relay_state: str | None,
    cookie: str | None,
) -> flow.Redirect:
    """The IdP's answer posted to the connection's ACS URL: 302 to `return_to` with a
    code or an error. Raises `NotFound` for an unknown or non-SAML connection, and
    `BadState` (400) for a RelayState we never issued when IdP-initiated sign-in is off."""
    conn = _saml_connection(db, connection_id)
    response = saml_response or ""
    if relay_state and flow.issued(db, env, relay_state):
        state = relay_state

        def verify(request: SsoRequest, claimed: SsoConnection) -> flow.VerifiedIdentity:
            if claimed.id != conn.id:
                raise SsoFailure(
                    "connection_mismatch", "the answer was posted to another connection's ACS"
                )
            return _identity(db, env, conn, response, request_id_for(env, state))

        return flow.answer(db, env, state, cookie, verify)
    if conn.allow_idp_initiated:
        unsolicited = lambda: _identity(db, env, conn, response, None)  # noqa: E731
        return flow.unsolicited(db, env, conn, cookie, unsolicited)
    if relay_state:  # a state nobody issued (tampered, or long expired): 400
        return flow.answer(db, env, relay_state, cookie, lambda request, claimed: _never())
    return flow.refuse(
        db,
        env,
        conn,
        SsoFailure("idp_initiated_disabled", "an unsolicited response; IdP-initiated is off"),
    )


def _never() -> flow.VerifiedIdentity:
    raise SsoFailure("state_invalid", "no such sign-in")  # unreachable: claim refuses first


# --- our metadata ---------------------------------------------------------------------


def sp_metadata_document(db: Session, public_url: str, connection_id: str) -> str:
    """The SP metadata of a SAML connection (entity id, ACS URL, our certificate):
    public, for the IdP admin to import. `NotFound` for other connections."""
    conn = _saml_connection(db, connection_id)
    if not conn.sp_cert_pem:
        raise NotFound("SAML connection not found")
    return saml.sp_metadata(saml_sp.public_settings(public_url, conn))
