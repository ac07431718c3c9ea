"""The instance signing keys: one versioned set of Ed25519 keys for every signature
Bastion makes that others check: audit checkpoints, OAuth access tokens (JWTs) and
compliance reports.

The keys live in one keyring file of the data directory (`audit-signing.key`, the
name it had when it signed checkpoints alone, so existing instances need nothing), made by
`bastion init` and rotated by `bastion keys rotate-signing`: a new version becomes the
active one, older versions stay, so whatever they signed keeps verifying and their
public keys stay published. A running process follows the file (`LiveKeyring`).

Each version has a `kid`: the RFC 7638 thumbprint of its public JWK, the same in every
process and across restarts. `jwks()` is the JSON Web Key Set published at
`GET /.well-known/jwks.json`: every version still in the keyring (an audit checkpoint or
a report signed years ago is checked with it), each `{"kty": "OKP", "crv": "Ed25519",
"x", "kid", "use": "sig", "alg": "EdDSA"}`.

JWS: `sign_jws` signs compact JWS with the active key, `EdDSA` only; `verify_jws`
accepts exactly `EdDSA` with a `kid` of this set (never `none`, never an HMAC keyed with
a public key, never a key the token brings along) and leaves the claims to the caller.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from joserfc.util import to_bytes

from bastion.core.crypto import ed25519_public_key, ed25519_sign
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, Keyring, LiveKeyring

# The one keyring file of the instance signing keys (Ed25519 seeds).
SIGNING_KEY_FILE = AUDIT_SIGNING_KEY_FILE

JWS_ALGORITHM = "EdDSA"  # RFC 8037: Ed25519 in JOSE
MAX_JWS_BYTES = 8192  # far above any token Bastion issues; refused before parsing


@dataclass(frozen=True)
class PublishedKey:
    """A signing key as anyone checking Bastion's signatures needs it: its version (what
    an audit checkpoint names in `key_version`), its `kid` (what a JWT or a report
    names), the Ed25519 public key (hex) and when it signed: from `valid_from` until the
    next version replaced it (`valid_until`, None while active). Times are unknown
    (None) for keys made before they were recorded."""

    key_version: int
    kid: str
    algorithm: str
    public_key: str
    status: str  # "active" | "previous"
    valid_from: datetime | None
    valid_until: datetime | None


class SignatureRefused(Exception):
    """A JWS that is not ours: malformed, another algorithm, an unknown `kid`, a bad
    signature. One exception whatever the reason; the reason is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(public_key: bytes) -> dict[str, str | list[str]]:
    """The members RFC 8037 defines for an Ed25519 public key."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(public_key)}


def thumbprint(public_key: bytes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    return str(OKPKey.import_key(public_jwk(public_key)).thumbprint())


class _EdDSAOnly(JWSRegistry):
    """A JWS registry that knows one algorithm, EdDSA, whatever the token says; RFC 9864
    deprecates `EdDSA` for the fully specified `Ed25519`, which is the same signature:
    `EdDSA` is what verifiers implement today, so it is named, without the warning."""

    def get_alg(self, name: str) -> Any:
        if name != JWS_ALGORITHM:
            raise JoseError(f"algorithm {name!r} is not accepted")
        return self.algorithms[JWS_ALGORITHM]


_REGISTRY = _EdDSAOnly(algorithms=[JWS_ALGORITHM])


@dataclass(frozen=True)
class _Derived:
    """What one reading of the keyring file gives: replaced whole, never mixed."""

    keys: Keyring
    kids: dict[int, str]  # version -> kid
    private: dict[int, OKPKey] = field(repr=False)  # version -> signing key
    public: dict[str, tuple[int, OKPKey]] = field(repr=False)  # kid -> (version, key)


def _derive(keys: Keyring) -> _Derived:
    kids: dict[int, str] = {}
    private: dict[int, OKPKey] = {}
    public: dict[str, tuple[int, OKPKey]] = {}
    for version, seed in keys.versions.items():
        raw = ed25519_public_key(seed)
        kid = thumbprint(raw)
        kids[version] = kid
        jwk = public_jwk(raw)
        private[version] = OKPKey.import_key({**jwk, "d": _b64url(seed)})
        public[kid] = (version, OKPKey.import_key(jwk))
    return _Derived(keys, kids, private, public)


class InstanceSigner:
    """Signs with the active key version; verifies with any version it knows.

    Follows its key file: after `bastion keys rotate-signing` in another process, the
    next signature uses the new version and signatures made with it verify, without a
    restart (within `keyring.RECHECK_SECONDS`; at once for a `kid` not seen yet)."""

    ALGORITHM = "Ed25519"

    def __init__(self, keys: Keyring) -> None:
        self._live = LiveKeyring(keys)
        self._derived = _derive(keys)

    def __repr__(self) -> str:
        return f"InstanceSigner({self._live.current()!r})"

    # --- the keys ---------------------------------------------------------------------

    @property
    def keys(self) -> Keyring:
        return self._live.current(recheck=True)

    def _current(self, *, recheck: bool = False) -> _Derived:
        keys = self._live.current(recheck=recheck)
        derived = self._derived
        if keys is not derived.keys:  # the file changed: derive afresh
            derived = self._derived = _derive(keys)
        return derived

    @property
    def public_keys(self) -> dict[int, bytes]:
        return {version: ed25519_public_key(seed) for version, seed in self.keys.versions.items()}

    def kid(self, version: int) -> str:
        return self._current().kids[version]

    def version_of(self, kid: str) -> int | None:
        """The key version a `kid` names; None when it is none of ours."""
        found = self._lookup(kid)
        return found[0] if found is not None else None

    def _lookup(self, kid: str) -> tuple[int, OKPKey] | None:
        """(version, public key) of a `kid`, looked up again in the key file when unknown:
        another process may have rotated just now."""
        found = self._current().public.get(kid)
        if found is None:
            found = self._current(recheck=True).public.get(kid)
        return found

    def sign(self, message: bytes) -> tuple[int, bytes]:
        keys = self.keys
        return keys.active, ed25519_sign(keys.key(), message)

    def published(self) -> list[PublishedKey]:
        """Every version's public key with its validity, oldest first."""
        derived = self._current(recheck=True)
        keys = derived.keys
        versions = sorted(keys.versions)
        since = {v: _instant(keys.created.get(v)) for v in versions}
        return [
            PublishedKey(
                key_version=version,
                kid=derived.kids[version],
                algorithm=self.ALGORITHM,
                public_key=ed25519_public_key(keys.versions[version]).hex(),
                status="active" if version == keys.active else "previous",
                valid_from=since[version],
                valid_until=(
                    None
                    if version == keys.active
                    else next((since[v] for v in versions if v > version), None)
                ),
            )
            for version in versions
        ]

    def replaced_at(self, version: int) -> datetime | None:
        """When a newer version replaced `version` (None while it is active, or unknown)."""
        for key in self.published():
            if key.key_version == version:
                return key.valid_until
        return None

    def jwks(self) -> dict[str, list[dict[str, str | list[str]]]]:
        """The JSON Web Key Set of every version, the active one first."""
        derived = self._current(recheck=True)
        keys = derived.keys
        order = [keys.active, *sorted((v for v in keys.versions if v != keys.active), reverse=True)]
        return {
            "keys": [
                {
                    **public_jwk(ed25519_public_key(keys.versions[version])),
                    "kid": derived.kids[version],
                    "use": "sig",
                    "alg": JWS_ALGORITHM,
                }
                for version in order
            ]
        }

    # --- JWS ----------------------------------------------------------------------------

    def sign_jws(self, payload: Mapping[str, Any], typ: str) -> tuple[str, str]:
        """A compact JWS of `payload` (JSON) with the active key: (token, kid)."""
        derived = self._current(recheck=True)
        active = derived.keys.active
        kid = derived.kids[active]
        header = {"alg": JWS_ALGORITHM, "kid": kid, "typ": typ}
        body = json.dumps(dict(payload), separators=(",", ":"), sort_keys=True).encode()
        token = jws.serialize_compact(header, body, derived.private[active], registry=_REGISTRY)
        return token, kid

    def verify_jws(self, token: str, typ: str) -> tuple[int, dict[str, Any]]:
        """(key version, payload) of a compact JWS this instance signed, with header
        `typ`. Raises `SignatureRefused` for anything else."""
        if len(token) > MAX_JWS_BYTES:
            raise SignatureRefused("too_large")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise SignatureRefused("malformed")
        try:
            header = json.loads(_b64url_decode(parts[0]))
        except (ValueError, UnicodeDecodeError):
            raise SignatureRefused("malformed") from None
        if not isinstance(header, dict):
            raise SignatureRefused("malformed")
        if header.get("alg") != JWS_ALGORITHM:
            raise SignatureRefused("algorithm")
        if header.get("typ") != typ:
            raise SignatureRefused("type")
        if set(header) - {"alg", "kid", "typ"}:  # no jwk, jku, x5u, crit, b64 ...
            raise SignatureRefused("header")
        kid = header.get("kid")
        found = self._lookup(kid) if isinstance(kid, str) else None
        if found is None:
            raise SignatureRefused("unknown_kid")
        version, key = found
        try:
            verified = jws.deserialize_compact(to_bytes(token), key, registry=_REGISTRY)
            payload = json.loads(verified.payload)
        except (JoseError, ValueError, UnicodeDecodeError):
            raise SignatureRefused("signature") from None
        if not isinstance(payload, dict):
            raise SignatureRefused("malformed")
        return version, payload


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
