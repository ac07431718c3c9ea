"""A software WebAuthn authenticator (and the browser around it) for the tests.

It builds what `navigator.credentials.create()` and `.get()` return, as the JSON of
`PublicKeyCredential.toJSON()`, from the server's options: an EC P-256 key made with
`cryptography`, `none` attestation, authenticator data with the RP ID hash, flags
(UP, UV, BE, AT), the signature counter and the attested credential data with the COSE
key (CBOR by `cbor2`), and an ECDSA/SHA-256 signature over authenticator data and the
hash of the client data. Nothing here comes from the server's WebAuthn library: the
server verifies what an independent implementation produced.

Every knob a test needs to make a bad response is an argument: another origin, another
RP ID, no user verification, a chosen counter, a chosen challenge, another key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ORIGIN = "http://localhost:8400"
RP_ID = "localhost"

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
ES256 = -7


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    """One credential the authenticator holds (a passkey when `user_handle` is kept)."""

    id: bytes
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: ES256,  # alg
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )


@dataclass
class SoftAuthenticator:
    origin: str = ORIGIN
    aaguid: bytes = bytes(16)
    backup_eligible: bool = False  # a synced passkey (BE): "swk"; else a device key: "hwk"
    counting: bool = True  # False: reports 0 forever, as many platform passkeys do
    credentials: dict[bytes, Credential] = field(default_factory=dict)

    # --- registration (navigator.credentials.create) ---------------------------------

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        uv: bool = True,
        up: bool = True,
    ) -> dict[str, Any]:
        """A registration response to `options` (PublicKeyCredentialCreationOptions JSON)."""
        rp = rp_id or options["rp"]["id"]
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if excluded & set(self.credentials):
            raise ValueError("InvalidStateError: a credential of this authenticator is excluded")
        credential = Credential(
            id=os.urandom(32),
            key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
        )
        self.credentials[credential.id] = credential
        attested = (
            self.aaguid
            + struct.pack(">H", len(credential.id))
            + credential.id
            + credential.cose_key()
        )
        synced = BE | BS if self.backup_eligible else 0
        flags = (UP if up else 0) | (UV if uv else 0) | AT | synced
        auth_data = self._auth_data(rp, flags, 0) + attested
        client_data = self._client_data(
            "webauthn.create", challenge or options["challenge"], origin or self.origin
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["usb", "nfc"],
            },
        }

    # --- assertion (navigator.credentials.get) -----------------------------------------

    def get(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        uv: bool = True,
        up: bool = True,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """An assertion for `options` (PublicKeyCredentialRequestOptions JSON), from the
        credential `credential_id`, else the first one the options allow (any, for a
        discoverable request)."""
        credential = self._pick(options, credential_id)
        rp = rp_id or options.get("rpId") or credential.rp_id
        if sign_count is None:
            if self.counting:
                credential.sign_count += 1
            sign_count = credential.sign_count
        flags = (UP if up else 0) | (UV if uv else 0) | (BE | BS if self.backup_eligible else 0)
        auth_data = self._auth_data(rp, flags, sign_count)
        client_data = self._client_data(
            "webauthn.get", challenge or options["challenge"], origin or self.origin
        )
        signer = key or credential.key
        signature = signer.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(
                    user_handle if user_handle is not None else credential.user_handle
                ),
            },
        }

    def _pick(self, options: dict[str, Any], credential_id: bytes | None) -> Credential:
        if credential_id is not None:
            return self.credentials[credential_id]
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        for cid, credential in self.credentials.items():
            if not allowed or cid in allowed:
                return credential
        raise LookupError("NotAllowedError: no credential of this authenticator is allowed")

    @staticmethod
    def _auth_data(rp_id: str, flags: int, sign_count: int) -> bytes:
        return (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)
        )

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()
