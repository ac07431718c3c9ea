"""The service provider's signing key and certificate, one pair per connection."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bastion.core.clock import utcnow

CERT_VALIDITY = timedelta(days=3650)  # IdPs pin the certificate; rotating it is a re-setup
_CN_MAX = 64  # RFC 5280 upper bound of a commonName


@dataclass(frozen=True)
class SpCredentials:
    """The SP's private key (PKCS#8 PEM, sealed in the vault by the caller; never in a
    repr, a log or an error) and its self-signed certificate (PEM, published in the SP
    metadata so the IdP can verify our AuthnRequests)."""

    key_pem: str = field(repr=False)
    cert_pem: str


def new_sp_credentials(common_name: str) -> SpCredentials:
    """A fresh RSA-2048 key and a self-signed certificate for it, valid ten years.

    RSA rather than EC: Entra ID, Google Workspace and OneLogin accept only RSA SP
    certificates. The certificate is a key container (IdPs do not check its chain or,
    by default, its dates); the subject is `common_name`, cut to 64 characters."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_CN_MAX] or "bastion")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SpCredentials(
        key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode()
    )


def cert_body(cert_pem: str) -> str:
    """The base64 DER of a PEM certificate, as `ds:X509Certificate` carries it."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
