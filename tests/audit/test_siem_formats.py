"""SIEM wire formats: RFC 5424 syslog, octet framing, CEF, OCSF 1.1 and Splunk HEC."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.audit.models import AuditEvent
from bastion.audit.siem_formats import (
    SD_ID,
    SiemEvent,
    cef,
    event_json,
    ocsf,
    octet_frame,
    splunk_hec,
    syslog_5424,
)

TIME = datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)
BOM = b"\xef\xbb\xbf"

SYSLOG_RE = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 "
    rb"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) "
    rb"(?P<host>[!-~]{1,255}) "
    rb"(?P<app>[!-~]{1,48}) "
    rb"(?P<procid>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) "
    rb"(?P<sd>\[.*?(?<!\\)\]) "
    rb"(?P<msg>.*)$",
    re.DOTALL,
)


def make_event(**changes: Any) -> SiemEvent:
    base = SiemEvent(
        id="evt_1",
        org_id="org_1",
        seq=42,
        time=TIME,
        type="user.created",
        actor_type="user",
        actor_id="usr_admin",
        actor_ip="203.0.113.7",
        actor_user_agent="curl/8.0",
        resource_type="user",
        resource_id="usr_new",
        outcome="success",
        reason=None,
        request_id="req_1",
        metadata={"email_domain": "example.com", "roles": ["viewer"]},
        hash="ab" * 32,
    )
    return dataclasses.replace(base, **changes)


def parse_syslog(message: bytes) -> re.Match[bytes]:
    match = SYSLOG_RE.match(message)
    assert match is not None, message
    return match


def sd_params(sd: str) -> dict[str, str]:
    """Parse `[id k="v" ...]` honouring RFC 5424 escapes."""
    assert sd.startswith(f"[{SD_ID} ")
    assert sd.endswith("]")
    params = {}
    for name, raw in re.findall(r' ([a-z_]+)="((?:[^"\\\]]|\\.)*)"', sd[1:-1]):
        params[name] = re.sub(r"\\(.)", r"\1", raw)
    return params


def cef_split(record: bytes) -> tuple[list[str], dict[str, str]]:
    """Split a CEF record into its 7 header fields and its decoded extension."""
    text = record.decode()
    header: list[str] = []
    current = ""
    i = 0
    while len(header) < 7:
        ch = text[i]
        if ch == "\\":
            current += text[i + 1]
            i += 2
            continue
        if ch == "|":
            header.append(current)
            current = ""
        else:
            current += ch
        i += 1
    extension_text = text[i:]
    extension = {}
    for key, raw in re.findall(r"(\w+)=((?:[^=\\]|\\.)*?)(?= \w+=|$)", extension_text):
        extension[key] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), raw)
    return header, extension


# --- SiemEvent ----------------------------------------------------------------------


def test_from_row_reads_an_orm_row_and_its_event_metadata() -> None:
    row = AuditEvent(
        id="evt_9",
        chain="org_1",
        seq=7,
        org_id="org_1",
        time=TIME,
        type="team.member_added",
        actor_type="user",
        actor_id="usr_1",
        actor_ip=None,
        actor_user_agent=None,
        resource_type="team",
        resource_id="tm_1",
        outcome="success",
        reason=None,
        request_id="req_9",
        event_metadata={"user_id": "usr_2"},
        prev_hash="0" * 64,
        hash="f" * 64,
    )
    event = SiemEvent.from_row(row)
    assert event.metadata == {"user_id": "usr_2"}
    assert event.id == "evt_9"
    assert event.seq == 7
    assert event.time == TIME
    assert event.type == "team.member_added"
    assert event.hash == "f" * 64


def test_from_row_accepts_metadata_and_a_naive_time() -> None:
    row = SimpleNamespace(
        **{f.name: getattr(make_event(), f.name) for f in dataclasses.fields(SiemEvent)}
    )
    row.time = TIME.replace(tzinfo=None)
    row.metadata = {"k": "v"}
    event = SiemEvent.from_row(row)
    assert event.metadata == {"k": "v"}
    assert event.time == TIME
    assert event.time.tzinfo is not None


# --- syslog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "outcome", "severity"),
    [
        ("user.created", "success", 6),
        ("agent.created", "success", 6),
        ("auth.login_failed", "failure", 4),
        ("authz.denied", "denied", 4),
        ("authz.denied", "success", 5),
        ("role.updated", "success", 5),
        ("role_grant.created", "success", 5),
        ("api_key.created", "success", 5),
        ("api_key.created", "failure", 4),
    ],
)
def test_syslog_pri_is_facility_times_8_plus_severity(
    event_type: str, outcome: str, severity: int
) -> None:
    event = make_event(type=event_type, outcome=outcome)
    assert int(parse_syslog(syslog_5424(event, hostname="h"))["pri"]) == 10 * 8 + severity
    local0 = parse_syslog(syslog_5424(event, hostname="h", facility=16))
    assert int(local0["pri"]) == 16 * 8 + severity


def test_syslog_rejects_an_invalid_facility() -> None:
    with pytest.raises(ValueError, match="facility"):
        syslog_5424(make_event(), hostname="h", facility=24)


def test_syslog_header_structure() -> None:
    event = make_event(
        time=datetime(2024, 5, 1, 14, 30, 45, 123456, tzinfo=timezone(timedelta(hours=2)))
    )
    match = parse_syslog(syslog_5424(event, hostname="siem-01.example.com", app_name="bastion"))
    assert match["ts"] == b"2024-05-01T12:30:45.123456Z"
    assert match["host"] == b"siem-01.example.com"
    assert match["app"] == b"bastion"
    assert match["procid"] == b"-"
    assert match["msgid"] == b"user.created"


def test_syslog_hostname_and_msgid_are_sanitized() -> None:
    event = make_event(type="tool_call.decided.\u00e9 with spaces and a very long tail")
    match = parse_syslog(syslog_5424(event, hostname="bad host\u00e9\n" + "x" * 300))
    assert match["host"] == b"badhost" + b"x" * 248
    assert len(match["msgid"]) == 32
    assert match["msgid"] == b"tool_call.decided.withspacesanda"
    empty = parse_syslog(syslog_5424(make_event(), hostname=" \t "))
    assert empty["host"] == b"-"


def test_syslog_structured_data_escapes_quote_backslash_and_bracket() -> None:
    nasty = 'a"b\\c]d'
    event = make_event(actor_id=nasty, resource_id="r]1")
    match = parse_syslog(syslog_5424(event, hostname="h"))
    sd = match["sd"].decode()
    assert 'actor_id="a\\"b\\\\c\\]d"' in sd
    assert 'resource_id="r\\]1"' in sd
    params = sd_params(sd)
    assert params["actor_id"] == nasty
    assert params["resource_id"] == "r]1"


def test_syslog_structured_data_params_and_none_omitted() -> None:
    event = make_event(
        org_id=None,
        actor_id=None,
        actor_ip=None,
        resource_type=None,
        resource_id=None,
        request_id=None,
    )
    params = sd_params(parse_syslog(syslog_5424(event, hostname="h"))["sd"].decode())
    assert params == {
        "id": "evt_1",
        "seq": "42",
        "type": "user.created",
        "actor_type": "user",
        "outcome": "success",
        "hash": "ab" * 32,
    }
    full = sd_params(parse_syslog(syslog_5424(make_event(), hostname="h"))["sd"].decode())
    assert full["org"] == "org_1"
    assert full["ip"] == "203.0.113.7"
    assert full["request_id"] == "req_1"
    assert set(full) == {
        "id",
        "org",
        "seq",
        "type",
        "actor_type",
        "actor_id",
        "ip",
        "outcome",
        "resource_type",
        "resource_id",
        "request_id",
        "hash",
    }


def test_syslog_msg_is_bom_and_json_of_the_event() -> None:
    event = make_event(reason="caf\u00e9 \u2603", metadata={"z": 1, "a": {"nested": [1, 2]}})
    msg = parse_syslog(syslog_5424(event, hostname="h"))["msg"]
    assert msg.startswith(BOM)
    body = msg[len(BOM) :]
    assert json.loads(body.decode("utf-8")) == event_json(event)
    assert b"\n" not in body
    assert (
        body
        == json.dumps(
            event_json(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )


def test_octet_frame_prefixes_the_byte_length() -> None:
    message = syslog_5424(make_event(reason="\u00e9\u00e9"), hostname="h")
    framed = octet_frame(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(message)
    assert rest == message
    assert octet_frame(b"") == b"0 "
    assert octet_frame("\u00e9".encode()) == b"2 \xc3\xa9"


# --- CEF ----------------------------------------------------------------------------


def test_cef_header_and_extensions() -> None:
    header, ext = cef_split(cef(make_event(), version="1.2.3"))
    assert header == [
        "CEF:0",
        "Bastion",
        "Bastion",
        "1.2.3",
        "user.created",
        "user created",
        "3",
    ]
    assert ext == {
        "rt": str(int(TIME.timestamp() * 1000)),
        "suser": "usr_admin",
        "suid": "usr_admin",
        "src": "203.0.113.7",
        "requestClientApplication": "curl/8.0",
        "outcome": "success",
        "externalId": "evt_1",
        "cs1Label": "org",
        "cs1": "org_1",
        "cs2Label": "resourceType",
        "cs2": "user",
        "cs3Label": "resourceId",
        "cs3": "usr_new",
        "cs4Label": "requestId",
        "cs4": "req_1",
        "cs5Label": "hash",
        "cs5": "ab" * 32,
    }


@pytest.mark.parametrize(
    ("event_type", "outcome", "severity"),
    [
        ("user.created", "success", "3"),
        ("auth.login_failed", "failure", "7"),
        ("authz.denied", "denied", "7"),
        ("role.updated", "success", "5"),
        ("api_key.created", "success", "5"),
        ("authz.denied", "success", "5"),
    ],
)
def test_cef_severity(event_type: str, outcome: str, severity: str) -> None:
    header, _ = cef_split(cef(make_event(type=event_type, outcome=outcome), version="1"))
    assert header[6] == severity


def test_cef_name_is_the_type_in_words() -> None:
    header, _ = cef_split(cef(make_event(type="tool_call.decided"), version="1"))
    assert header[4:6] == ["tool_call.decided", "tool call decided"]


def test_cef_header_escapes_pipes_and_backslashes() -> None:
    record = cef(make_event(), vendor="Ac|me\\", product="B|", version="1|2")
    assert record.startswith(b"CEF:0|Ac\\|me\\\\|B\\||1\\|2|user.created|")
    header, _ = cef_split(record)
    assert header[1:4] == ["Ac|me\\", "B|", "1|2"]
    assert b"\n" not in cef(make_event(), version="1\r\n2")


def test_cef_extension_escapes_equals_backslash_and_newlines() -> None:
    event = make_event(reason="a=b\\c\nd\re", actor_user_agent="UA|x=1")
    record = cef(event, version="1")
    assert b"reason=a\\=b\\\\c\\nd\\re " in record
    assert b"requestClientApplication=UA|x\\=1 " in record
    assert b"\n" not in record
    assert b"\r" not in record
    _, ext = cef_split(record)
    assert ext["reason"] == "a=b\\c\nd\re"
    assert ext["requestClientApplication"] == "UA|x=1"


def test_cef_omits_unset_values() -> None:
    event = make_event(
        org_id=None,
        actor_id=None,
        actor_ip=None,
        actor_user_agent=None,
        resource_type=None,
        resource_id=None,
        request_id=None,
    )
    _, ext = cef_split(cef(event, version="1"))
    assert set(ext) == {"rt", "outcome", "externalId", "cs5Label", "cs5"}


# --- OCSF ---------------------------------------------------------------------------


_NAMES: dict[str, dict[str, Any]] = {
    "team.member_added": {"user_id": "usr_2"},
    "team.member_removed": {"user_id": "usr_2"},
    "role.created": {"name": "support", "permissions": ["users:read"]},
    "role.updated": {"permissions": ["users:read"]},
}


@pytest.mark.parametrize(
    ("event_type", "outcome", "class_uid", "category_uid", "activity_id"),
    [
        ("auth.login_succeeded", "success", 3002, 3, 1),
        ("auth.login_failed", "failure", 3002, 3, 1),
        ("auth.login_throttled", "denied", 3002, 3, 1),
        ("auth.logout", "success", 3002, 3, 2),
        ("auth.credential_rejected", "failure", 3002, 3, 99),
        ("auth.password_set", "success", 3002, 3, 99),
        ("user.created", "success", 3001, 3, 1),
        ("user.deleted", "success", 3001, 3, 6),
        ("user.updated", "success", 3001, 3, 99),
        ("service_account.created", "success", 3001, 3, 1),
        ("api_key.created", "success", 3001, 3, 1),
        ("api_key.revoked", "success", 3001, 3, 6),
        ("api_key.rotated", "success", 3001, 3, 99),
        # A team or role event is Group Management when it names a member or privileges
        # (the class requires one of them); otherwise it is an operation on the API.
        ("team.created", "success", 6003, 6, 1),
        ("team.deleted", "success", 6003, 6, 4),
        ("role.deleted", "success", 6003, 6, 4),
        ("team.member_added", "success", 3006, 3, 3),
        ("team.member_removed", "success", 3006, 3, 4),
        ("role.created", "success", 3006, 3, 6),
        ("role.updated", "success", 3006, 3, 99),
        ("role_grant.created", "success", 3006, 3, 1),
        ("role_grant.revoked", "success", 3006, 3, 2),
        ("authz.denied", "denied", 6003, 6, 99),
        ("secret.revealed", "success", 6003, 6, 2),
        ("audit.exported", "success", 6003, 6, 2),
        ("agent.created", "success", 6003, 6, 1),
        ("tool_call.decided", "success", 6003, 6, 3),
        ("approval.decided", "success", 6003, 6, 3),
        ("org.updated", "success", 6003, 6, 3),
        ("audit.purged", "success", 6003, 6, 4),
        ("session.revoked", "success", 6003, 6, 4),
        ("webhook.delivered", "success", 6003, 6, 99),
    ],
)
def test_ocsf_class_and_activity(
    event_type: str, outcome: str, class_uid: int, category_uid: int, activity_id: int
) -> None:
    out = ocsf(make_event(type=event_type, outcome=outcome, metadata=_NAMES.get(event_type, {})))
    assert out["class_uid"] == class_uid
    assert out["category_uid"] == category_uid
    assert out["activity_id"] == activity_id
    assert out["type_uid"] == class_uid * 100 + activity_id
    assert isinstance(out["class_name"], str)
    assert isinstance(out["category_name"], str)
    assert isinstance(out["activity_name"], str)
    assert out["message"] == event_type


@pytest.mark.parametrize(
    "event_type",
    ["auth.logout", "user.created", "team.member_added", "authz.denied", "agent.created"],
)
@pytest.mark.parametrize("outcome", ["success", "failure", "denied"])
def test_ocsf_always_has_the_required_base_fields(event_type: str, outcome: str) -> None:
    minimal = make_event(
        type=event_type,
        outcome=outcome,
        org_id=None,
        actor_id=None,
        actor_ip=None,
        actor_user_agent=None,
        resource_type=None,
        resource_id=None,
        request_id=None,
        metadata={},
        actor_type="anonymous",
    )
    for event in (make_event(type=event_type, outcome=outcome), minimal):
        out = ocsf(event)
        for key in ("class_uid", "category_uid", "activity_id", "type_uid", "severity_id"):
            assert isinstance(out[key], int), key
        assert out["time"] == int(TIME.timestamp() * 1000)
        assert out["metadata"]["version"] == "1.1.0"
        assert out["metadata"]["product"] == {"name": "Bastion", "vendor_name": "Bastion"}
        assert out["metadata"]["uid"] == "evt_1"
        assert "user" in out["actor"]
        assert None not in _leaves(out)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_ocsf_status_and_severity() -> None:
    ok = ocsf(make_event())
    assert (ok["severity_id"], ok["status"], ok["status_id"]) == (1, "Success", 1)
    assert "status_detail" not in ok
    failed = ocsf(make_event(type="auth.login_failed", outcome="failure", reason="bad_credentials"))
    assert (failed["severity_id"], failed["status"], failed["status_id"]) == (3, "Failure", 2)
    assert failed["status_detail"] == "bad_credentials"
    denied = ocsf(make_event(type="authz.denied", outcome="denied"))
    assert (denied["severity_id"], denied["status"], denied["status_id"]) == (3, "Failure", 2)
    assert denied["status_detail"] == "denied"


def test_ocsf_common_fields() -> None:
    out = ocsf(make_event())
    assert out["metadata"] == {
        "version": "1.1.0",
        "uid": "evt_1",
        "product": {"name": "Bastion", "vendor_name": "Bastion"},
        "event_code": "user.created",
        "sequence": 42,
        "correlation_uid": "req_1",
        "tenant_uid": "org_1",
    }
    assert out["actor"] == {"user": {"uid": "usr_admin", "type": "user", "type_id": 1}}
    assert out["src_endpoint"] == {"ip": "203.0.113.7"}
    assert out["http_request"] == {"user_agent": "curl/8.0"}
    assert out["unmapped"] == {"email_domain": "example.com", "roles": ["viewer"]}
    bare = ocsf(make_event(actor_ip=None, actor_user_agent=None, metadata={}))
    assert "src_endpoint" not in bare
    assert "http_request" not in bare
    assert "unmapped" not in bare


def test_ocsf_class_objects() -> None:
    account = ocsf(make_event(type="user.deleted"))
    assert account["user"] == {"uid": "usr_new", "type": "user"}

    group = ocsf(
        make_event(
            type="team.member_added",
            resource_type="team",
            resource_id="tm_1",
            metadata={"user_id": "usr_2"},
        )
    )
    assert group["group"] == {"uid": "tm_1", "type": "team"}
    assert group["user"] == {"uid": "usr_2"}
    assert "src_endpoint" not in group  # not attributes of Group Management …
    assert "http_request" not in group
    assert group["unmapped"]["src_endpoint"] == {"ip": "203.0.113.7"}  # … kept here
    assert group["metadata"]["profiles"] == ["host"]  # `actor` comes with the host profile

    grant = ocsf(make_event(type="role_grant.created", metadata={"role": "admin"}))
    assert grant["privileges"] == ["admin"]
    assert grant["group"] == {"name": "admin", "type": "role"}
    assert grant["user"] == {"uid": "usr_new"}

    api = ocsf(make_event(type="secret.revealed", resource_type="secret", resource_id="sec_1"))
    assert api["api"] == {"operation": "secret.revealed"}
    assert api["resources"] == [{"uid": "sec_1", "type": "secret"}]

    login = ocsf(
        make_event(
            type="auth.login_failed", outcome="failure", actor_type="anonymous", actor_id=None
        )
    )
    assert login["user"] == {"uid": "usr_new", "type": "user"}
    assert login["actor"]["user"]["name"] == "anonymous"  # User needs account, name or uid
    assert login["service"] == {"name": "Bastion"}
    unknown = ocsf(
        make_event(
            type="auth.login_failed",
            outcome="failure",
            actor_type="anonymous",
            actor_id=None,
            resource_type=None,
            resource_id=None,
        )
    )
    assert unknown["user"]["type_id"] == 0


# --- Splunk HEC and canonical JSON --------------------------------------------------


def test_splunk_hec_shape() -> None:
    event = make_event()
    payload = splunk_hec(event)
    assert payload == {
        "time": pytest.approx(TIME.timestamp()),
        "source": "bastion",
        "sourcetype": "bastion:audit",
        "event": event_json(event),
    }
    assert isinstance(payload["time"], float)
    assert "host" not in payload
    assert "index" not in payload
    indexed = splunk_hec(event, index="security", source="s", sourcetype="st")
    assert (indexed["index"], indexed["source"], indexed["sourcetype"]) == ("security", "s", "st")


def test_event_json_shape() -> None:
    assert event_json(make_event()) == {
        "id": "evt_1",
        "org_id": "org_1",
        "seq": 42,
        "time": "2024-05-01T12:30:45.123456Z",
        "type": "user.created",
        "actor": {
            "type": "user",
            "id": "usr_admin",
            "ip": "203.0.113.7",
            "user_agent": "curl/8.0",
        },
        "resource": {"type": "user", "id": "usr_new"},
        "outcome": "success",
        "reason": None,
        "request_id": "req_1",
        "metadata": {"email_domain": "example.com", "roles": ["viewer"]},
        "hash": "ab" * 32,
    }


def test_json_payloads_round_trip_through_json_dumps() -> None:
    event = make_event(
        metadata={"when": TIME, "tags": ("a", "b"), "nested": {"n": 1.5, "ok": True}},
        reason="\u00e9",
    )
    for payload in (event_json(event), ocsf(event), splunk_hec(event, index="i")):
        assert json.loads(json.dumps(payload)) == payload
    assert event_json(event)["metadata"] == {
        "when": "2024-05-01T12:30:45.123456Z",
        "tags": ["a", "b"],
        "nested": {"n": 1.5, "ok": True},
    }


def test_formatters_are_deterministic() -> None:
    event = make_event()
    assert syslog_5424(event, hostname="h") == syslog_5424(event, hostname="h")
    assert cef(event, version="1") == cef(event, version="1")
    assert ocsf(event) == ocsf(event)
