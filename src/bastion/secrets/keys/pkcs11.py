"""PKCS#11: the customer's key is an AES key in an HSM (or SoftHSM2), found by token and
key label, used with AES-GCM (`CKM_AES_GCM`) and the context as associated data. The
key is created non-extractable by the customer; Bastion never sees it.

Which PKCS#11 libraries may be loaded is the operator's decision, not an organisation's
(loading a library runs its code in the server): `BASTION_PKCS11_LIBRARIES` lists them,
and a configuration naming another is refused. Needs the `cmk` extra (`python-pkcs11`).

A wrapped value is the 12-byte IV followed by ciphertext and tag. PKCS#11 keys have no
versions, so `rewrap` re-encrypts under a fresh IV inside one session (the plaintext is
in this process's memory for that moment). A missing key is `destroyed`; a wrong PIN,
a missing token or a failing library is `key_unavailable`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from bastion.secrets.keys import (
    KeyContext,
    KeyDestroyedError,
    KeyUnavailableError,
    WrappedValueRejected,
)

IV_BYTES = 12
TAG_BITS = 128


def _module() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise KeyUnavailableError("pkcs11_support_not_installed") from None
    return pkcs11


class Pkcs11Provider:
    name = "pkcs11"

    def __init__(self, *, library: str, token_label: str, pin: str, key_label: str) -> None:
        self._library = library
        self._token_label = token_label
        self._pin = pin
        self._key_label = key_label
        self._session: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the PIN
        return f"Pkcs11Provider(token={self._token_label!r}, key={self._key_label!r})"

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None

    def _open(self) -> Any:
        p11 = _module()
        if self._session is not None:
            return self._session
        try:
            token = p11.lib(self._library).get_token(token_label=self._token_label)
            try:
                self._session = token.open(user_pin=self._pin)
            except p11.exceptions.UserAlreadyLoggedIn:
                # Another session of this process is logged in to the token (login
                # state is per application and token): a new one shares it.
                self._session = token.open()
        except p11.exceptions.PinIncorrect:
            raise KeyUnavailableError("access_denied") from None
        except (p11.exceptions.NoSuchToken, p11.exceptions.MultipleTokensReturned):
            raise KeyUnavailableError("token_not_found") from None
        except (p11.exceptions.PKCS11Error, OSError, RuntimeError):
            raise KeyUnavailableError("hsm_error") from None
        return self._session

    def _run(self, work: Any) -> Any:
        p11 = _module()
        with self._lock:
            for attempt in (1, 2):
                session = self._open()
                try:
                    key = session.get_key(
                        object_class=p11.ObjectClass.SECRET_KEY, label=self._key_label
                    )
                    return work(p11, session, key)
                except p11.exceptions.NoSuchKey:
                    raise KeyDestroyedError("key_not_found") from None
                except p11.exceptions.MultipleObjectsReturned:
                    raise KeyUnavailableError("key_label_ambiguous") from None
                except (WrappedValueRejected, KeyUnavailableError):
                    raise
                except (p11.exceptions.SessionHandleInvalid, p11.exceptions.SessionClosed):
                    self._drop()  # the HSM ended the session: open a new one once
                    if attempt == 2:
                        raise KeyUnavailableError("hsm_error") from None
                except (p11.exceptions.UserNotLoggedIn, p11.exceptions.PinIncorrect):
                    self._drop()
                    raise KeyUnavailableError("access_denied") from None
                except (p11.exceptions.PKCS11Error, RuntimeError):
                    self._drop()
                    raise KeyUnavailableError("hsm_error") from None
        raise KeyUnavailableError("hsm_error")

    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        def work(p11: Any, session: Any, key: Any) -> bytes:
            iv = bytes(session.generate_random(IV_BYTES * 8))
            sealed = key.encrypt(
                plaintext,
                mechanism=p11.Mechanism.AES_GCM,
                mechanism_param=p11.GCMParams(iv, context.encoded(), TAG_BITS),
            )
            return iv + bytes(sealed)

        result: bytes = self._run(work)
        return result

    def unwrap(self, blob: bytes, context: KeyContext) -> bytes:
        if len(blob) <= IV_BYTES:
            raise WrappedValueRejected("not a wrapped value")

        def work(p11: Any, session: Any, key: Any) -> bytes:
            try:
                return bytes(
                    key.decrypt(
                        blob[IV_BYTES:],
                        mechanism=p11.Mechanism.AES_GCM,
                        mechanism_param=p11.GCMParams(blob[:IV_BYTES], context.encoded(), TAG_BITS),
                    )
                )
            except (
                p11.exceptions.EncryptedDataInvalid,
                p11.exceptions.EncryptedDataLenRange,
                p11.exceptions.GeneralError,  # SoftHSM2's answer to a tag that fails
            ):
                raise WrappedValueRejected("the wrapped value does not authenticate") from None

        result: bytes = self._run(work)
        return result

    def rewrap(self, blob: bytes, context: KeyContext) -> bytes:
        return self.wrap(self.unwrap(blob, context), context)

    def probe(self) -> None:
        self._run(lambda p11, session, key: None)
