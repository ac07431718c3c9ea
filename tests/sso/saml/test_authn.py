"""Our AuthnRequest, read back independently of samlify: the redirect URL's parts, the
inflated XML, and the query signature verified with the certificate alone."""

from __future__ import annotations

import base64
import dataclasses
import zlib
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from bastion.sso.saml import (
    SamlError,
    SamlSettings,
    SpCredentials,
    authn_request,
    new_sp_credentials,
)
from bastion.sso.saml.authn import SIG_ECDSA_SHA256, SIG_RSA_SHA256

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"


def _split(url: str) -> tuple[str, dict[str, str], bytes, bytes]:
    """(endpoint, parameters, signed octets, signature) of a redirect URL."""
    parts = urlsplit(url)
    raw = parts.query.split("&")
    signed = "&".join(p for p in raw if not p.startswith("Signature=")).encode()
    params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return (
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        params,
        signed,
        base64.b64decode(params["Signature"]),
    )


def test_request_shape_and_rsa_signature(settings: SamlSettings) -> None:
    redirect = authn_request(settings, "state with spaces/&=")
    endpoint, params, signed, signature = _split(redirect.url)
    assert endpoint == settings.idp.sso_url
    assert params["RelayState"] == "state with spaces/&="
    assert params["SigAlg"] == SIG_RSA_SHA256
    assert [unquote_plus(p.split("=", 1)[0]) for p in signed.decode().split("&")] == [
        "SAMLRequest",
        "RelayState",
        "SigAlg",
    ]
    public = x509.load_pem_x509_certificate(settings.sp.cert_pem.encode()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    xml = zlib.decompress(base64.b64decode(params["SAMLRequest"]), -15)
    request = etree.fromstring(xml)
    assert request.tag == f"{{{SAMLP}}}AuthnRequest"
    assert request.get("ID") == redirect.request_id
    assert request.get("Version") == "2.0"
    assert request.get("Destination") == settings.idp.sso_url
    assert request.get("AssertionConsumerServiceURL") == settings.acs_url
    assert request.get("ProtocolBinding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    assert request.findtext(f"{{{SAML}}}Issuer") == settings.sp_entity_id
    assert redirect.request_id[0] == "_"
    assert len(redirect.request_id) == 41


def test_ec_p256_key(settings: SamlSettings) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ec_settings = dataclasses.replace(
        settings, sp=SpCredentials(key_pem=pem, cert_pem=settings.sp.cert_pem)
    )
    _, params, signed, signature = _split(authn_request(ec_settings, "").url)
    assert params["SigAlg"] == SIG_ECDSA_SHA256
    assert "RelayState" not in params
    assert len(signature) == 64  # r || s, as XML-DSig encodes ECDSA
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.public_key().verify(der, signed, ec.ECDSA(hashes.SHA256()))


def test_sso_url_with_a_query(settings: SamlSettings) -> None:
    idp = dataclasses.replace(settings.idp, sso_url="https://idp.example.test/sso?tenant=acme")
    url = authn_request(dataclasses.replace(settings, idp=idp), "x").url
    assert url.startswith("https://idp.example.test/sso?tenant=acme&SAMLRequest=")


def test_relay_state_limit(settings: SamlSettings) -> None:
    authn_request(settings, "r" * 80)
    with pytest.raises(SamlError) as caught:
        authn_request(settings, "r" * 81)
    assert caught.value.code == "invalid_relay_state"


def test_unusable_key(settings: SamlSettings) -> None:
    for pem in ("not a key", new_sp_credentials("x").cert_pem):
        broken = dataclasses.replace(
            settings, sp=SpCredentials(key_pem=pem, cert_pem=settings.sp.cert_pem)
        )
        with pytest.raises(SamlError) as caught:
            authn_request(broken, "")
        assert caught.value.code == "invalid_credentials"
        assert pem not in str(caught.value)


def test_credentials() -> None:
    creds = new_sp_credentials("acme " * 30)
    assert "PRIVATE KEY" not in repr(creds)
    cert = x509.load_pem_x509_certificate(creds.cert_pem.encode())
    key = serialization.load_pem_private_key(creds.key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert cert.public_key() == key.public_key()
    assert 3649 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 3651
    assert new_sp_credentials("acme").key_pem != creds.key_pem


def test_a_request_id_of_the_callers(settings: SamlSettings) -> None:
    """The flow derives the ID from its state: it is used as given, if an xs:ID."""
    chosen = "_" + "ab12" * 16
    redirect = authn_request(settings, "state", request_id=chosen)
    assert redirect.request_id == chosen
    _, params, _, _ = _split(redirect.url)
    xml = zlib.decompress(base64.b64decode(params["SAMLRequest"]), -15)
    assert etree.fromstring(xml).get("ID") == chosen
    for bad in ("1abcdefghijklmnopq", "_short", "_has space in it....", "_" + "a" * 300):
        with pytest.raises(ValueError, match="xs:ID"):
            authn_request(settings, "state", request_id=bad)
