"""Every key provider behind one interface, against real peers: the instance root key,
OpenBao Transit (dev server) and a SoftHSM2 token over PKCS#11. Wrap/unwrap round
trips, the context binding (a blob moved to another organisation or purpose never
unwraps), rewrap, probe, and what revocation and destruction look like."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.core.keyring import ROOT_KEY_FILE
from bastion.secrets.cmk import ProviderPolicy, build_provider
from bastion.secrets.keys import (
    CustomerKeyProvider,
    KeyContext,
    KeyDestroyedError,
    KeyUnavailableError,
    WrappedValueRejected,
)
from bastion.secrets.keys.local import InstanceKeyProvider
from bastion.secrets.vault import LocalKeyProvider
from tests.secrets.keypeers import OpenBao, SoftHsm

KEY = bytes(range(32))
A = KeyContext("org_a", "org-data-key|1")
A2 = KeyContext("org_a", "org-data-key|2")
B = KeyContext("org_b", "org-data-key|1")
LOOPBACK = ProviderPolicy(allow=("127.0.0.0/8",), plaintext=("127.0.0.0/8",))


def _contract(provider: CustomerKeyProvider) -> None:
    blob = provider.wrap(KEY, A)
    assert KEY not in blob
    assert provider.unwrap(blob, A) == KEY
    assert provider.wrap(KEY, A) != blob  # fresh nonce each time
    for other in (B, A2):  # another organisation, another purpose
        with pytest.raises(WrappedValueRejected):
            provider.unwrap(blob, other)
    assert provider.unwrap(provider.rewrap(blob, A), A) == KEY
    provider.probe()


def test_instance_root_key(data_dir: Path) -> None:
    _contract(InstanceKeyProvider(LocalKeyProvider(data_dir / ROOT_KEY_FILE)))


def test_vault_transit(openbao: OpenBao) -> None:
    key = openbao.new_key()
    provider = build_provider(
        "vault_transit",
        openbao.config(key, openbao.call("POST", "auth/token/create", {})["auth"]["client_token"]),
        LOOPBACK,
    )
    _contract(provider)


def test_vault_transit_rewrap_stays_inside_vault(openbao: OpenBao) -> None:
    key = openbao.new_key()
    provider = build_provider(
        "vault_transit", openbao.config(key, openbao.token_for(key)), LOOPBACK
    )
    blob = provider.wrap(KEY, A)
    assert blob.startswith(b"vault:v1:")
    openbao.rotate_key(key)
    moved = provider.rewrap(blob, A)
    assert moved.startswith(b"vault:v2:")  # Transit's own rewrap: no plaintext out
    assert provider.unwrap(moved, A) == KEY
    with pytest.raises(WrappedValueRejected):
        provider.unwrap(moved, B)


def test_vault_transit_revoked_token_then_deleted_key(openbao: OpenBao) -> None:
    key = openbao.new_key()
    token = openbao.token_for(key)
    provider = build_provider("vault_transit", openbao.config(key, token), LOOPBACK)
    blob = provider.wrap(KEY, A)
    openbao.revoke(token)
    with pytest.raises(KeyUnavailableError) as revoked:
        provider.unwrap(blob, A)
    assert (revoked.value.status, revoked.value.reason) == ("key_unavailable", "access_denied")
    assert not isinstance(revoked.value, KeyDestroyedError)
    # A token that could not create the key cannot bring it back after deletion either.
    openbao.delete_key(key)
    admin = build_provider("vault_transit", openbao.config(key, openbao.token_for(key)), LOOPBACK)
    with pytest.raises(KeyDestroyedError) as gone:
        admin.unwrap(blob, A)
    assert (gone.value.status, gone.value.reason) == ("destroyed", "key_not_found")
    with pytest.raises(KeyUnavailableError):
        admin.wrap(KEY, A)  # no `create` capability: the key is not silently re-made


def test_vault_transit_unreachable_and_refused_destination(openbao: OpenBao) -> None:
    from tests.receivers import free_port

    down = build_provider(
        "vault_transit",
        {"address": f"http://127.0.0.1:{free_port()}", "token": "t", "key_name": "k"},
        LOOPBACK,
    )
    with pytest.raises(KeyUnavailableError) as unreachable:
        down.unwrap(b"vault:v1:xx", A)
    assert unreachable.value.reason == "unreachable"
    # Outside the operator's allowance (SSRF guard): refused, nothing sent.
    guarded = build_provider("vault_transit", openbao.config("k", "t"), ProviderPolicy())
    with pytest.raises(KeyUnavailableError) as refused:
        guarded.probe()
    assert refused.value.reason == "destination_refused"


def test_pkcs11_softhsm(softhsm: SoftHsm) -> None:
    label = softhsm.new_key()
    policy = ProviderPolicy(pkcs11_libraries=(softhsm.library,))
    provider = build_provider("pkcs11", softhsm.config(label), policy)
    _contract(provider)
    blob = provider.wrap(KEY, A)
    softhsm.destroy_key(label)
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(blob, A)
    with pytest.raises(KeyDestroyedError):
        provider.probe()
    provider.close()


def test_pkcs11_library_must_be_allowed_by_the_operator(softhsm: SoftHsm) -> None:
    from bastion.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        build_provider("pkcs11", softhsm.config("k"), ProviderPolicy())
    assert refused.value.errors[0].field == "config.library"
    with pytest.raises(InvalidInput):
        build_provider(
            "pkcs11",
            {**softhsm.config("k"), "library": "/opt/elsewhere/evil.so"},
            ProviderPolicy(pkcs11_libraries=(softhsm.library,)),
        )
