"""Every OCSF event Bastion emits validates against the official OCSF 1.1.0 schema.

The schema is OCSF's own export for 1.1.0 (Apache-2.0, shipped with its licence in the
`ocsf-json-schema` package), turned into JSON Schema with the class's constraints
(`at_least_one`, `just_one`) and the profiles the event declares in
`metadata.profiles`. Each event type is tried in the shapes it takes: a person acting
from an address, an anonymous failure with no address, a system job, and with the
member, role or permissions the event may name; then the events a real run of the app
wrote to its audit log.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.audit.siem_formats import SiemEvent, ocsf
from bastion.core.events import EventType
from tests.factories import Factory

if os.environ.get("CI") != "true":
    pytest.importorskip(
        "ocsf_json_schema", reason="pip install -e '.[test]' (ocsf-json-schema) to run"
    )
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

_SCHEMA = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.1.0"))
_VALIDATORS: dict[tuple[int, tuple[str, ...]], jsonschema.Draft202012Validator] = {}


def _errors(event: dict[str, Any]) -> list[str]:
    profiles = tuple(sorted(event["metadata"].get("profiles", [])))
    key = (event["class_uid"], profiles)
    if key not in _VALIDATORS:
        name = _SCHEMA.lookup_class_name_from_uid(class_uid=event["class_uid"])
        schema = _SCHEMA.get_class_schema(name, list(profiles))
        _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message[:200]}"
        for e in _VALIDATORS[key].iter_errors(event)
    ]


def _event(event_type: str, **changes: Any) -> SiemEvent:
    values: dict[str, Any] = {
        "id": "evt_1",
        "org_id": "org_1",
        "seq": 7,
        "time": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "type": event_type,
        "actor_type": "user",
        "actor_id": "usr_1",
        "actor_ip": "203.0.113.5",
        "actor_user_agent": "curl/8.0",
        "resource_type": event_type.split(".", maxsplit=1)[0],
        "resource_id": "res_1",
        "outcome": "success",
        "reason": None,
        "request_id": "req_1",
        "metadata": {},
        "hash": "ab" * 32,
    }
    values.update(changes)
    return SiemEvent(**values)


SHAPES: dict[str, dict[str, Any]] = {
    "person": {},
    "anonymous failure": {
        "outcome": "failure",
        "reason": "invalid_credentials",
        "actor_type": "anonymous",
        "actor_id": None,
        "actor_ip": None,
        "actor_user_agent": None,
        "resource_type": None,
        "resource_id": None,
    },
    "denied": {"outcome": "denied", "actor_type": "api_key", "actor_id": "key_1"},
    "system job": {"actor_type": "system", "actor_id": None, "actor_ip": None},
    "names a member": {"metadata": {"user_id": "usr_2"}},
    "role grant": {"resource_type": "user", "resource_id": "usr_2", "metadata": {"role": "x"}},
    "grant revoked": {
        "resource_type": "user",
        "resource_id": "usr_2",
        "metadata": {"grant_id": "g"},
    },
    "role with permissions": {"metadata": {"name": "support", "permissions": ["users:read"]}},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_event_type_validates_against_ocsf_1_1_0(shape: str) -> None:
    failures = {}
    for event_type in EventType:
        out = ocsf(_event(event_type.value, **SHAPES[shape]))
        errors = _errors(out)
        if errors:
            failures[f"{event_type.value} ({out['class_uid']})"] = errors
    assert failures == {}


def test_the_classes_emitted_are_the_four_mapped() -> None:
    emitted = {
        ocsf(_event(t.value, **shape))["class_uid"] for t in EventType for shape in SHAPES.values()
    }
    assert emitted == {3001, 3002, 3006, 6003}


def test_a_schema_violation_is_caught() -> None:
    """The check can fail: the attributes issue 20 found are rejected by the schema."""
    group = ocsf(_event("team.member_added", metadata={"user_id": "usr_2"}))
    assert _errors(group) == []
    assert _errors({**group, "src_endpoint": {"ip": "203.0.113.5"}})
    assert _errors({k: v for k, v in group.items() if k != "user"})  # privileges or user
    no_profile = {**group, "metadata": {**group["metadata"], "profiles": []}}
    assert _errors(no_profile)  # `actor` needs the host profile
    login = ocsf(_event("auth.login_failed", **SHAPES["anonymous failure"]))
    assert _errors(login) == []
    assert _errors({k: v for k, v in login.items() if k != "service"})
    assert _errors({**login, "actor": {"user": {"type": "anonymous"}}})


def test_events_a_real_run_wrote_validate(app: FastAPI, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "viewer")
    client = factory.client
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "eng"}, headers=org.headers)
    team_id = team.json()["id"]
    client.put(f"/v1/orgs/{org.id}/teams/{team_id}/members/{member.user_id}", headers=org.headers)
    client.post("/v1/auth/login", json={"email": member.email, "password": "wrong password!"})
    client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12})
    with app.state.bastion.sessions() as db:
        rows = db.scalars(select(AuditEvent).where(AuditEvent.org_id == org.id)).all()
        events = [ocsf(SiemEvent.from_row(row)) for row in rows]
    assert {e["class_uid"] for e in events} >= {3001, 3006, 6003}
    failures = {e["metadata"]["event_code"]: _errors(e) for e in events if _errors(e)}
    assert failures == {}
