"""`Principal.acting_as`: the per-request copy of a cached principal."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime

from bastion.core.context import Actor
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import Principal


def test_acting_as_is_replace_of_the_actor_alone() -> None:
    cached = Principal(
        principal_type="user",
        id="usr_1",
        org_id="org_1",
        role="admin",
        credential=CredentialKind.SESSION,
        role_permissions=frozenset({Permission.AUDIT_READ}),
        user_id="usr_1",
        session_id="ses_1",
        temporary={Permission.AUDIT_READ: datetime(2027, 1, 1, tzinfo=UTC)},
        amr=("pwd", "otp"),
        auth_time=datetime(2026, 12, 7, tzinfo=UTC),
        step_up_max_age=300,
        mfa_pending=True,
        step_up_refused=True,
    )
    actor = Actor("user", "usr_1", "192.0.2.1", "curl", "req_1")
    copy = cached.acting_as(actor)
    expected = replace(cached, actor=actor)
    for f in fields(Principal):  # every field, those left out of == included
        assert getattr(copy, f.name) == getattr(expected, f.name), f.name
    assert copy.actor is actor
    assert cached.actor != actor  # the cached one is untouched
    assert copy.permissions == expected.permissions
