"""SP-initiated sign-in: a signed AuthnRequest for the HTTP-Redirect binding.

SAML bindings §3.4.4.1: the request is DEFLATE-compressed, base64-encoded and put in the
query; the signature covers the octets `SAMLRequest=…&RelayState=…&SigAlg=…` exactly as
URL-encoded in the query (no XML signature in the request itself), and travels in
`Signature`. The request ID is fresh per call (or the caller's own, e.g. derived from
its sign-in state so that nothing needs storing): the caller passes it to
`parse_response` as `expected_request_id`.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote_plus

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree

from bastion.core.clock import utcnow
from bastion.core.crypto import random_bytes
from bastion.sso.saml._xml import BINDING_POST, NAMEID_UNSPECIFIED, SAML, SAMLP, saml_time
from bastion.sso.saml.errors import SamlError
from bastion.sso.saml.settings import SamlSettings

SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SIG_ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
MAX_RELAY_STATE = 80  # bytes (SAML bindings §3.4.3)


@dataclass(frozen=True)
class AuthnRedirect:
    """Where to send the browser (302), and the request's ID to expect back."""

    url: str
    request_id: str


def new_request_id() -> str:
    """A fresh xs:ID (an NCName: it must not start with a digit), 160 random bits."""
    return "_" + random_bytes(20).hex()


def _request_xml(settings: SamlSettings, request_id: str) -> bytes:
    samlp = f"{{{SAMLP}}}"
    request = etree.Element(
        samlp + "AuthnRequest",
        nsmap={"samlp": SAMLP, "saml": SAML},
        ID=request_id,
        Version="2.0",
        IssueInstant=saml_time(utcnow()),
        Destination=settings.idp.sso_url,
        ProtocolBinding=BINDING_POST,
        AssertionConsumerServiceURL=settings.acs_url,
    )
    etree.SubElement(request, f"{{{SAML}}}Issuer").text = settings.sp_entity_id
    etree.SubElement(request, samlp + "NameIDPolicy", Format=NAMEID_UNSPECIFIED, AllowCreate="true")
    return etree.tostring(request)


def _signer(key_pem: str) -> tuple[str, Callable[[bytes], bytes]]:
    """(SigAlg URI, signing function) for the SP key: RSASSA-PKCS1-v1_5 with SHA-256
    for RSA, ECDSA with SHA-256 (r||s, as XML-DSig encodes it) for P-256."""
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SamlError("invalid_credentials", "the SP private key cannot be read") from None
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key
        return SIG_RSA_SHA256, lambda octets: rsa_key.sign(
            octets, padding.PKCS1v15(), hashes.SHA256()
        )
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        ec_key = key

        def sign_ec(octets: bytes) -> bytes:
            r, s = decode_dss_signature(ec_key.sign(octets, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return SIG_ECDSA_SHA256, sign_ec
    raise SamlError("invalid_credentials", "the SP key is neither RSA nor EC P-256")


_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{15,255}")


def authn_request(
    settings: SamlSettings, relay_state: str, *, request_id: str | None = None
) -> AuthnRedirect:
    """A signed AuthnRequest as an HTTP-Redirect URL to the IdP's SSO endpoint, carrying
    `relay_state` (opaque, at most 80 bytes: the caller's handle on its sign-in state).
    `request_id`, when given, must be an unguessable xs:ID (an NCName of 16 to 256
    characters); otherwise a fresh one is made."""
    if len(relay_state.encode()) > MAX_RELAY_STATE:
        raise SamlError("invalid_relay_state", f"RelayState is longer than {MAX_RELAY_STATE} bytes")
    if request_id is None:
        request_id = new_request_id()
    elif not _NCNAME.fullmatch(request_id):
        raise ValueError("request_id must be an xs:ID of 16 to 256 characters")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw DEFLATE, no zlib header
    deflated = compressor.compress(_request_xml(settings, request_id)) + compressor.flush()
    query = "SAMLRequest=" + quote_plus(base64.b64encode(deflated).decode())
    if relay_state:
        query += "&RelayState=" + quote_plus(relay_state)
    sig_alg, sign = _signer(settings.sp.key_pem)
    query += "&SigAlg=" + quote_plus(sig_alg)
    signature = sign(query.encode())
    query += "&Signature=" + quote_plus(base64.b64encode(signature).decode())
    separator = "&" if "?" in settings.idp.sso_url else "?"
    return AuthnRedirect(url=settings.idp.sso_url + separator + query, request_id=request_id)
