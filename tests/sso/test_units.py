"""The small parts on their own: values used once, the password gate failing closed,
and the rate limit on fetching a provider's keys again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from bastion.core.clock import clock, utcnow
from bastion.core.db import begin_write
from bastion.identity import signin_policy
from bastion.sso import onetime
from bastion.sso.oidc import RelyingParty
from tests.conftest import make_settings
from tests.sso.peers import FakeProvider


def test_a_value_is_used_once_until_it_expires(sso_app: Any) -> None:
    state = sso_app.state.bastion
    value = f"assertion-{utcnow().timestamp()}"
    with state.write_sessions() as db:
        begin_write(db)
        until = utcnow() + timedelta(seconds=60)
        assert onetime.use_once(db, "saml_assertion", value, until) is True
        assert onetime.use_once(db, "saml_assertion", value, until) is False
        assert onetime.use_once(db, "other_purpose", value, until) is True
        db.commit()
    with state.write_sessions() as db:
        begin_write(db)
        assert onetime.use_once(db, "saml_assertion", value, until) is False  # committed
        clock.advance(61)
        later = utcnow() + timedelta(seconds=60)
        assert onetime.use_once(db, "saml_assertion", value, later) is True
        db.commit()


def test_the_password_gate_fails_closed_without_sso(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signin_policy, "_GATES", [])
    found = signin_policy.enforced_for(None, "a@b.example", "org_x", True, True)  # type: ignore[arg-type]
    assert found == signin_policy.SsoEnforced("org_x", True)
    assert signin_policy.enforced_for(None, "a@b.example", "org_x", False, False) is None  # type: ignore[arg-type]


def test_unknown_key_ids_refetch_at_most_once_per_interval(
    data_dir: Path, database_url: str, fake_idp: FakeProvider
) -> None:
    rp = RelyingParty(make_settings(data_dir, database_url, sso_jwks_refetch_interval=3600))
    provider = rp.metadata(fake_idp.issuer)
    assert rp._candidates(provider.jwks_uri, "RS256", "fake-1", refresh=False)
    old = fake_idp.key
    fake_idp.key = RSAKey.generate_key(2048, parameters={"kid": "fake-9", "use": "sig"})
    try:
        # Just fetched: a forged or new kid does not make Bastion fetch again yet.
        assert rp._candidates(provider.jwks_uri, "RS256", "fake-9", refresh=True) == []
        assert rp._candidates(provider.jwks_uri, "ES256", "fake-1", refresh=False) == []
    finally:
        fake_idp.key = old
