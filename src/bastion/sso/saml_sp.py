"""A SAML connection's service-provider side: its signing credentials, its URLs, and
the identity provider's metadata (pasted, or fetched from the IdP's URL).

- Credentials: each SAML connection gets its own RSA key and self-signed certificate
  when it is created (`bastion.sso.saml.new_sp_credentials`). The private key is sealed
  in the vault like an OIDC client secret (`bastion.secrets.sealed`, scope `sso`); only
  its id is kept on the connection. It is read only to sign an AuthnRequest, and never
  returned, logged or audited. The certificate is public: it is in the SP metadata.
- URLs: the SP entity id is the connection's metadata URL
  (`{BASTION_PUBLIC_URL}/v1/auth/sso/{conn}/saml/metadata`), the ACS URL is
  `{BASTION_PUBLIC_URL}/v1/auth/sso/{conn}/saml/acs`.
- IdP metadata: `idp_metadata_xml` is validated when it is set; `idp_metadata_url` is
  fetched through the SSRF guard (the instance's BASTION_OUTBOUND_* settings) when it is
  set, and what it answered is kept (`idp_metadata_fetched`). The sign-in flow fetches
  it again when it is older than `BASTION_SSO_METADATA_TTL`, or when a response's
  signature does not verify with the certificates kept (the IdP rolled its key).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.errors import InvalidInput
from bastion.secrets import sealed
from bastion.secrets.vault import Vault
from bastion.sso import saml
from bastion.sso.models import SsoConnection

SECRET_SCOPE = "sso"  # noqa: S105 - a vault scope name, not a secret
FLOW_PREFIX = "/v1/auth/sso"


def entity_id(public_url: str, connection_id: str) -> str:
    """Our SP entity id for the connection: its metadata URL."""
    return f"{public_url}{FLOW_PREFIX}/{connection_id}/saml/metadata"


def acs_url(public_url: str, connection_id: str) -> str:
    return f"{public_url}{FLOW_PREFIX}/{connection_id}/saml/acs"


# --- credentials ----------------------------------------------------------------------


def ensure_credentials(db: Session, vault: Vault, conn: SsoConnection) -> bool:
    """Give a SAML connection its SP key and certificate if it has none yet (a new
    connection, or one saved before SAML was wired); True when it got them now."""
    if conn.sp_key_secret_id is not None and conn.sp_cert_pem:
        return False
    credentials = saml.new_sp_credentials(f"Bastion SAML SP {conn.id}")
    secret_id = sealed.create(
        db,
        vault,
        conn.org_id,
        name=f"sso/{conn.id}/saml-sp-key",
        scope_type=SECRET_SCOPE,
        scope_id=conn.id,
        description="managed by Bastion SSO (SAML SP signing key)",
        value=credentials.key_pem.encode(),
    )
    sealed.destroy(db, conn.sp_key_secret_id)  # a half-set pair: the old key goes
    conn.sp_key_secret_id = secret_id
    conn.sp_cert_pem = credentials.cert_pem
    return True


def sp_credentials(db: Session, vault: Vault, conn: SsoConnection) -> saml.SpCredentials:
    """The connection's key (in clear, for signing only) and certificate. Raises
    `sealed.Unreadable` when there is none or it cannot be decrypted."""
    if conn.sp_key_secret_id is None or not conn.sp_cert_pem:
        raise sealed.Unreadable("the connection has no SP credentials")
    key_pem = sealed.read_current(db, vault, conn.sp_key_secret_id).decode()
    return saml.SpCredentials(key_pem=key_pem, cert_pem=conn.sp_cert_pem)


def public_settings(public_url: str, conn: SsoConnection) -> saml.SamlSettings:
    """Settings enough for our SP metadata (entity id, ACS URL, certificate): the key
    is not read, and the IdP is not needed."""
    if not conn.sp_cert_pem:
        raise ValueError("the connection has no SP certificate")
    return saml.SamlSettings(
        sp_entity_id=entity_id(public_url, conn.id),
        acs_url=acs_url(public_url, conn.id),
        sp=saml.SpCredentials(key_pem="", cert_pem=conn.sp_cert_pem),
        idp=saml.IdpInfo(entity_id="", sso_url="", certificates=()),
    )


# --- the identity provider's metadata --------------------------------------------------


@dataclass(frozen=True)
class Outbound:
    """How to reach the IdP's metadata URL: the instance's outbound settings."""

    allow: tuple[str, ...]
    plaintext: tuple[str, ...]
    proxy: str | None
    timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Outbound:
        return cls(
            allow=tuple(settings.outbound_allow),
            plaintext=tuple(settings.outbound_plaintext_allow),
            proxy=settings.proxy_url,
            timeout=settings.sso_http_timeout,
        )

    def __repr__(self) -> str:  # the proxy URL may carry credentials
        return "Outbound()"


def fetch(url: str, outbound: Outbound) -> tuple[str, saml.IdpInfo]:
    """The metadata at `url` and what it says, or `SamlError`."""
    xml = saml.fetch_idp_metadata(
        url,
        allow=outbound.allow,
        plaintext=outbound.plaintext,
        proxy=outbound.proxy,
        timeout=outbound.timeout,
    )
    return xml, saml.parse_idp_metadata(xml)


def set_metadata(conn: SsoConnection, values: dict[str, object], outbound: Outbound) -> None:
    """Check the IdP metadata a create or change gives (`idp_metadata_xml` parsed,
    `idp_metadata_url` fetched and parsed) and keep it: 422 naming the field when it is
    not usable. Nothing is fetched for a connection that is not SAML."""
    if conn.type != "saml":
        return
    if "idp_metadata_xml" in values and conn.idp_metadata_xml is not None:
        try:
            saml.parse_idp_metadata(conn.idp_metadata_xml)
        except saml.SamlError as exc:
            raise InvalidInput.field("idp_metadata_xml", exc.message) from None
        conn.idp_metadata_fetched = None
        conn.idp_metadata_fetched_at = None
    elif "idp_metadata_url" in values and conn.idp_metadata_url is not None:
        try:
            xml, _ = fetch(conn.idp_metadata_url, outbound)
        except saml.SamlError as exc:
            raise InvalidInput.field("idp_metadata_url", exc.message) from None
        conn.idp_metadata_fetched = xml
        conn.idp_metadata_fetched_at = utcnow()


def metadata_xml(conn: SsoConnection) -> str | None:
    """The IdP metadata in use: pasted, or last fetched from the URL."""
    return conn.idp_metadata_xml or conn.idp_metadata_fetched
