"""The only module that does security randomness, keyed hashes and secret comparison.

Everything else imports these functions; no other module imports `hmac`, `hashlib`
or `secrets` for security purposes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag as _InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def random_bytes(n: int) -> bytes:
    return os.urandom(n)  # what secrets.token_bytes calls, two Python calls shorter


def random_token(nbytes: int = 32) -> str:
    """URL-safe random text with `nbytes` of entropy."""
    return secrets.token_urlsafe(nbytes)


def random_base32(length: int) -> str:
    """`length` Crockford base32 characters, 5 random bits each, straight from the OS
    generator (for secrets such as recovery codes; a label uses `label_base32`)."""
    value = secrets.randbits(5 * length)
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(chars)


def label_base32(length: int) -> str:
    """`length` Crockford base32 characters for a label that is not a secret (a request
    id): from `random_int_bits`'s pool, without a call into the OS per request."""
    value = random_int_bits(5 * length)
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(chars)


class _Pool(threading.local):
    data = b""
    at = 0
    generation = -1


_POOL = _Pool()
_POOL_BYTES = 4096
# The process's generation: a forked child never goes on with its parent's bytes.
_GENERATION = [0]


def _forked() -> None:
    _GENERATION[0] += 1


os.register_at_fork(after_in_child=_forked)


def random_int_bits(bits: int) -> int:
    """Random bits for identifiers (not for secrets: those come from `secrets`), from
    the operating system's generator read 4 KiB at a time per thread. Every audit event
    takes an id inside the group-commit writer, and each `os.urandom` call gives up the
    interpreter lock, which the writer then waits to get back from a busy event loop;
    no byte is ever handed out twice."""
    need = (bits + 7) // 8
    pool, generation = _POOL, _GENERATION[0]
    if pool.generation != generation or pool.at + need > len(pool.data):
        pool.data, pool.at, pool.generation = os.urandom(_POOL_BYTES), 0, generation
    chunk = pool.data[pool.at : pool.at + need]
    pool.at += need
    return int.from_bytes(chunk, "big") >> (need * 8 - bits)


def hmac_sha256(key: bytes, message: bytes | str) -> bytes:
    if isinstance(message, str):
        message = message.encode()
    return hmac.digest(key, message, "sha256")  # one-shot OpenSSL call


def hmac_sha256_hex(key: bytes, message: bytes | str) -> str:
    return hmac_sha256(key, message).hex()


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def digest(name: str, data: bytes | str) -> bytes:
    """A SHA-2 digest by name (`sha256`, `sha384`, `sha512`), e.g. an OpenID Connect
    `at_hash`, which halves the digest its ID token's algorithm names."""
    if name not in ("sha256", "sha384", "sha512"):
        raise ValueError(f"unsupported digest {name!r}")
    if isinstance(data, str):
        data = data.encode()
    return hashlib.new(name, data).digest()


def sha1_digest(data: bytes | str) -> bytes:
    """SHA-1, only to look a candidate password up in a published list of breached ones
    (their format: Have I Been Pwned, `bastion.identity.breached`); never for integrity,
    signatures or anything stored about a secret."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data, usedforsecurity=False).digest()


def constant_time_equals(a: bytes | str, b: bytes | str) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    """A separate key per purpose (HKDF-SHA256), so one secret never serves two uses."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=b"bastion:" + purpose.encode()
    ).derive(master)


def aead_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce; returns nonce || ciphertext+tag."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Raises `cryptography.exceptions.InvalidTag` when the key, data or blob is wrong."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key).decrypt(blob[:12], blob[12:], associated_data)


InvalidTag = _InvalidTag


def siv_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-SIV (RFC 5297): deterministic authenticated encryption, for values that
    must encrypt to the same token each time (privacy tokenization). Returns tag || ct."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    return AESSIV(key).encrypt(plaintext, [associated_data])


def siv_decrypt(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Raises `InvalidTag` when the key, data or blob is wrong."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    return AESSIV(key).decrypt(blob, [associated_data])


def aes256_gcm(key: bytes) -> AESGCM:
    """A ready AES-256-GCM cipher for a key used on a hot path (the vault's cached data
    keys), called as `.encrypt(nonce, data, aad)` / `.decrypt(nonce, ct_and_tag, aad)`
    with a fresh `random_bytes(12)` nonce per encryption, in `Aead`'s format
    (nonce || ct+tag). `Aead` does the same behind one more call; this skips it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(key) != 32:
        raise ValueError("AES-256-GCM takes a 32-byte key")
    return AESGCM(key)


class Aead:
    """AES-256-GCM bound to one key, for a key used many times (the vault's cached data
    keys): the cipher is set up once. Same format as `aead_encrypt`: nonce || ct+tag."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._cipher = AESGCM(key)

    def __repr__(self) -> str:
        return "Aead(<key>)"

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._cipher.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        """Raises `cryptography.exceptions.InvalidTag` when the key, data or blob is wrong."""
        return self._cipher.decrypt(blob[:12], blob[12:], associated_data)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_public_key(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
