"""The server's TLS settings, stated here rather than left to whatever the installed
Python, OpenSSL and uvicorn default to: TLS 1.2 at least, TLS 1.3 whenever the client
offers it, and for TLS 1.2 only forward-secret (ECDHE) key exchange with AEAD ciphers
(AES-GCM, ChaCha20-Poly1305). TLS 1.3's own suites are all AEAD and forward-secret.
Anchor: Mozilla's "intermediate" server configuration."""

from __future__ import annotations

import os
import ssl
from typing import Final

__all__ = ["TLS12_CIPHERS", "server_context"]

# OpenSSL names; TLS 1.2 only (TLS 1.3 suites are configured apart and are all AEAD).
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def server_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """An SSL context for serving: the certificate chain, TLS 1.2 minimum, ECDHE + AEAD
    for TLS 1.2, no compression or renegotiation, the server's cipher order."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(certfile, keyfile)
    return context
