"""IdP metadata (from samlify, pasted XML and fetched from a URL), certificate rollover,
and our SP metadata."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from lxml import etree

from bastion.core.clock import utcnow
from bastion.sso.saml import (
    SamlError,
    SamlSettings,
    SpCredentials,
    authn_request,
    fetch_idp_metadata,
    parse_idp_metadata,
    parse_response,
    sp_metadata,
)
from bastion.sso.saml.metadata import MAX_METADATA_BYTES
from tests.sso.saml.conftest import IDP_ENTITY_ID, IDP_SSO_URL, Idp, make_settings

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"


def _same_cert(a: str, b: str) -> bool:
    return x509.load_pem_x509_certificate(a.encode()) == x509.load_pem_x509_certificate(b.encode())


def test_samlify_metadata(idp: Idp) -> None:
    info = parse_idp_metadata(idp.metadata((idp.keys.primary,)))
    assert info.entity_id == IDP_ENTITY_ID
    assert info.sso_url == IDP_SSO_URL
    assert len(info.certificates) == 1
    assert _same_cert(info.certificates[0], idp.keys.primary.cert_pem)


def test_rollover_two_certificates(idp: Idp, sp_credentials: SpCredentials) -> None:
    """During a rollover the metadata lists the old and the new certificate; a response
    signed with the new key verifies, one signed with an unlisted key does not."""
    info = parse_idp_metadata(idp.metadata((idp.keys.primary, idp.keys.secondary)))
    assert len(info.certificates) == 2
    settings = make_settings(sp_credentials, info.certificates)
    for key, accepted in (
        (idp.keys.secondary, True),
        (idp.keys.primary, True),
        (idp.keys.rogue, False),
    ):
        redirect = authn_request(settings, "")
        response = idp.login(settings, redirect.url, key=key)["saml_response"]
        if accepted:
            parse_response(
                settings, response, expected_request_id=redirect.request_id, now=utcnow()
            )
        else:
            with pytest.raises(SamlError) as caught:
                parse_response(
                    settings, response, expected_request_id=redirect.request_id, now=utcnow()
                )
            assert caught.value.code == "signature_invalid"
    # Before the rollover (old certificate only), the new key is not trusted yet.
    old_only = make_settings(sp_credentials, (idp.keys.primary.cert_pem,))
    redirect = authn_request(old_only, "")
    response = idp.login(old_only, redirect.url, key=idp.keys.secondary)["saml_response"]
    with pytest.raises(SamlError, match="signature_invalid"):
        parse_response(old_only, response, expected_request_id=redirect.request_id, now=utcnow())


def _metadata(body: str, entity_id: str = IDP_ENTITY_ID) -> str:
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="{entity_id}">'
        f"{body}</md:EntityDescriptor>"
    )


def _idp(cert_body: str, sso: str = IDP_SSO_URL, use: str = ' use="signing"') -> str:
    return (
        '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"<md:KeyDescriptor{use}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_body}"
        "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        f'Location="{sso}"/></md:IDPSSODescriptor>'
    )


def _body(creds: SpCredentials) -> str:
    return "".join(creds.cert_pem.strip().splitlines()[1:-1])


def test_key_descriptor_without_use_is_for_signing(idp: Idp) -> None:
    info = parse_idp_metadata(_metadata(_idp(_body(idp.keys.primary), use="")))
    assert len(info.certificates) == 1


def test_encryption_only_certificate_is_not_for_signing(idp: Idp) -> None:
    with pytest.raises(SamlError, match="no signing certificate"):
        parse_idp_metadata(_metadata(_idp(_body(idp.keys.primary), use=' use="encryption"')))


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        ("", "invalid_metadata"),
        ("not xml", "invalid_metadata"),
        ("<a><b></a>", "invalid_metadata"),
        ('<!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>', "dtd_forbidden"),
        (f'<md:EntityDescriptor xmlns:md="{MD}" entityID="x"/>', "invalid_metadata"),
        ("<EntityDescriptor/>", "invalid_metadata"),
    ],
)
def test_invalid_metadata(xml: str, code: str) -> None:
    with pytest.raises(SamlError) as caught:
        parse_idp_metadata(xml)
    assert caught.value.code == code


def test_incomplete_metadata(idp: Idp) -> None:
    body = _body(idp.keys.primary)
    for xml, message in [
        (_metadata(_idp(body), entity_id=""), "entityID"),
        (_metadata(_idp(body, sso="http://idp.example.test/sso")), "https"),
        (_metadata(_idp("bm90IGEgY2VydA==")), "X.509"),
        (_metadata(_idp("%%%")), "X.509"),
        (_metadata(_idp(body).replace("HTTP-Redirect", "HTTP-POST")), "HTTP-Redirect"),
        (
            f'<md:EntitiesDescriptor xmlns:md="{MD}">'
            + _metadata(_idp(body)).replace(f' xmlns:md="{MD}"', "")
            + _metadata(_idp(body), entity_id="https://other").replace(f' xmlns:md="{MD}"', "")
            + "</md:EntitiesDescriptor>",
            "several",
        ),
    ]:
        with pytest.raises(SamlError, match=message) as caught:
            parse_idp_metadata(xml)
        assert caught.value.code == "invalid_metadata"


def test_sp_metadata(settings: SamlSettings) -> None:
    root = etree.fromstring(sp_metadata(settings).encode())
    assert root.get("entityID") == settings.sp_entity_id
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    assert descriptor is not None
    assert descriptor.get("AuthnRequestsSigned") == "true"
    assert descriptor.get("WantAssertionsSigned") == "true"
    acs = descriptor.find(f"{{{MD}}}AssertionConsumerService")
    assert acs is not None
    assert acs.get("Location") == settings.acs_url
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    cert = descriptor.find(f".//{{{DS}}}X509Certificate")
    assert cert is not None
    assert cert.text == _body(settings.sp)
    assert "PRIVATE" not in sp_metadata(settings)


class _MetadataServer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metadata"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[_MetadataServer] = []

    def start(status: int, body: bytes, headers: dict[str, str] | None = None) -> _MetadataServer:
        servers.append(_MetadataServer(status, body, headers))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


LOOPBACK = {"allow": ["127.0.0.0/8"], "plaintext": ["127.0.0.0/8"]}


def test_fetch_metadata(idp: Idp, serve: Any) -> None:
    xml = idp.metadata((idp.keys.primary, idp.keys.secondary))
    server = serve(200, xml.encode())
    fetched = fetch_idp_metadata(server.url, **LOOPBACK)
    assert len(parse_idp_metadata(fetched).certificates) == 2


def test_fetch_goes_through_the_ssrf_guard(serve: Any) -> None:
    server = serve(200, b"<x/>")
    with pytest.raises(SamlError, match="BASTION_OUTBOUND_ALLOW") as caught:
        fetch_idp_metadata(server.url.replace("http://", "https://"))
    assert caught.value.code == "metadata_fetch_failed"
    with pytest.raises(SamlError, match="not encrypted"):  # http:// needs its own allowance
        fetch_idp_metadata(server.url, allow=["127.0.0.0/8"])
    assert server.requests == 0


@pytest.mark.parametrize(
    ("status", "body", "headers", "message"),
    [
        (404, b"nope", None, "HTTP 404"),
        (302, b"", {"location": "http://169.254.169.254/"}, "HTTP 302"),
        (200, b"<x>" + b"a" * MAX_METADATA_BYTES + b"</x>", None, "larger"),
        (200, b"\xff\xfe<x/>", None, "UTF-8"),
    ],
)
def test_fetch_failures(
    serve: Any, status: int, body: bytes, headers: dict[str, str] | None, message: str
) -> None:
    server = serve(status, body, headers)
    with pytest.raises(SamlError, match=message) as caught:
        fetch_idp_metadata(server.url, **LOOPBACK)
    assert caught.value.code == "metadata_fetch_failed"


def test_fetch_refuses_other_schemes() -> None:
    for url in ("file:///etc/passwd", "ftp://idp.example.test/md", "not a url"):
        with pytest.raises(SamlError) as caught:
            fetch_idp_metadata(url)
        assert caught.value.code == "metadata_fetch_failed"


def test_entities_descriptor_with_one_idp(idp: Idp) -> None:
    """An aggregate holding a single IdP (and an SP, which is not an IdP) is accepted."""
    entity = _metadata(_idp(_body(idp.keys.primary))).replace(f' xmlns:md="{MD}"', "")
    sp_only = (
        '<md:EntityDescriptor entityID="https://sp.example.test"><md:SPSSODescriptor '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></md:EntityDescriptor>'
    )
    xml = f'<md:EntitiesDescriptor xmlns:md="{MD}">{sp_only}{entity}</md:EntitiesDescriptor>'
    assert parse_idp_metadata(xml).entity_id == IDP_ENTITY_ID
