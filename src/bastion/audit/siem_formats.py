"""Wire formats for shipping audit events to SIEM sinks: pure functions, no I/O.

One `SiemEvent` (built from an `AuditEvent` row with `SiemEvent.from_row`) becomes:

* `syslog_5424` - an RFC 5424 syslog message (framed for TCP/TLS with `octet_frame`);
* `cef` - an ArcSight Common Event Format record;
* `ocsf` - an OCSF 1.1.0 event (a JSON-able dict);
* `splunk_hec` - a Splunk HTTP Event Collector payload (a JSON-able dict);
* `event_json` - the canonical JSON-able dict that the others embed.

Everything here is deterministic: the same event always yields the same bytes, so a
sink may retry a delivery or de-duplicate on the output.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "OCSF_VERSION",
    "SD_ID",
    "SiemEvent",
    "cef",
    "event_json",
    "ocsf",
    "octet_frame",
    "splunk_hec",
    "syslog_5424",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Event domains (the part of the type before the first ".") that change who may do what;
# their successes are raised a notch above routine activity in syslog and CEF.
_PRIVILEGE_DOMAINS: Final = frozenset({"authz", "role", "role_grant", "api_key"})


@dataclass(frozen=True, slots=True)
class SiemEvent:
    """One audit event, detached from the database, as the SIEM formatters read it.

    `time` is a timezone-aware UTC datetime (a naive one is read as UTC, as SQLite hands
    them back). `metadata` holds JSON-able values.
    """

    id: str
    org_id: str | None
    seq: int
    time: datetime
    type: str
    actor_type: str
    actor_id: str | None
    actor_ip: str | None
    actor_user_agent: str | None
    resource_type: str | None
    resource_id: str | None
    outcome: str
    reason: str | None
    request_id: str | None
    metadata: Mapping[str, Any]
    hash: str

    @classmethod
    def from_row(cls, row: Any) -> SiemEvent:
        """Copy the attributes of an audit event object (an `AuditEvent` ORM row or anything
        shaped like it). The metadata is read from `event_metadata` (the ORM attribute)
        and otherwise from `metadata`; on an ORM class `metadata` is SQLAlchemy's table
        registry, so only a mapping found there is taken as the event's metadata."""
        raw_metadata = getattr(row, "event_metadata", None)
        if not isinstance(raw_metadata, Mapping):
            raw_metadata = getattr(row, "metadata", None)
        metadata: dict[str, Any] = dict(raw_metadata) if isinstance(raw_metadata, Mapping) else {}
        return cls(
            id=str(row.id),
            org_id=row.org_id,
            seq=int(row.seq),
            time=_utc(row.time),
            type=str(row.type),
            actor_type=str(row.actor_type),
            actor_id=row.actor_id,
            actor_ip=row.actor_ip,
            actor_user_agent=row.actor_user_agent,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            outcome=str(row.outcome),
            reason=row.reason,
            request_id=row.request_id,
            metadata=metadata,
            hash=str(row.hash),
        )


# --- shared helpers -----------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a "Z", e.g. 2024-05-01T12:00:00.000000Z."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch_ms(value: datetime) -> int:
    """Whole milliseconds since the Unix epoch (exact integer arithmetic, no float)."""
    return (_utc(value) - _EPOCH) // timedelta(milliseconds=1)


def _domain(event_type: str) -> str:
    """The part of an event type before the first dot: "team" for "team.member_added"."""
    return event_type.split(".", 1)[0]


def _verb(event_type: str) -> str:
    """The part of an event type after the last dot: "member_added" for "team.member_added"."""
    return event_type.rsplit(".", 1)[-1]


def _is_privilege_change(event: SiemEvent) -> bool:
    return event.outcome == "success" and _domain(event.type) in _PRIVILEGE_DOMAINS


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON types: mappings become dicts with string keys, sequences
    become lists, datetimes RFC 3339 strings, anything else unknown its `str()`."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    return str(value)


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _printable_ascii(text: str, limit: int) -> str:
    """Only the characters RFC 5424 allows in header fields (US-ASCII 33..126), cut to
    `limit`, or the NILVALUE "-" when nothing is left."""
    kept = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return kept or "-"


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


# --- canonical JSON -----------------------------------------------------------------


def event_json(event: SiemEvent) -> dict[str, Any]:
    """The canonical JSON-able form of an event, embedded by the syslog and Splunk formats.

    Same shape as the audit export (`actor` and `resource` nested), plus `org_id`; unset
    values are kept as None so every document has every key."""
    return {
        "id": event.id,
        "org_id": event.org_id,
        "seq": event.seq,
        "time": _rfc3339(event.time),
        "type": event.type,
        "actor": {
            "type": event.actor_type,
            "id": event.actor_id,
            "ip": event.actor_ip,
            "user_agent": event.actor_user_agent,
        },
        "resource": {"type": event.resource_type, "id": event.resource_id},
        "outcome": event.outcome,
        "reason": event.reason,
        "request_id": event.request_id,
        "metadata": _jsonable(event.metadata),
        "hash": event.hash,
    }


# --- RFC 5424 syslog ----------------------------------------------------------------

# The SD-ID of Bastion's structured-data element. 32473 is the Private Enterprise Number
# that RFC 5612 reserves for documentation; a deployment with a registered PEN swaps it.
SD_ID: Final = "bastion@32473"

_SEVERITY_WARNING: Final = 4
_SEVERITY_NOTICE: Final = 5
_SEVERITY_INFORMATIONAL: Final = 6
_BOM: Final = b"\xef\xbb\xbf"


def _syslog_severity(event: SiemEvent) -> int:
    if event.outcome != "success":
        return _SEVERITY_WARNING
    if _is_privilege_change(event):
        return _SEVERITY_NOTICE
    return _SEVERITY_INFORMATIONAL


def _sd_escape(value: str) -> str:
    """Escape a PARAM-VALUE per RFC 5424 section 6.3.3: backslash, quote and ']'."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _structured_data(event: SiemEvent) -> str:
    params: list[tuple[str, str | int | None]] = [
        ("id", event.id),
        ("org", event.org_id),
        ("seq", event.seq),
        ("type", event.type),
        ("actor_type", event.actor_type),
        ("actor_id", event.actor_id),
        ("ip", event.actor_ip),
        ("outcome", event.outcome),
        ("resource_type", event.resource_type),
        ("resource_id", event.resource_id),
        ("request_id", event.request_id),
        ("hash", event.hash),
    ]
    rendered = "".join(
        f' {name}="{_sd_escape(str(value))}"' for name, value in params if value is not None
    )
    return f"[{SD_ID}{rendered}]"


def syslog_5424(
    event: SiemEvent,
    *,
    hostname: str,
    app_name: str = "bastion",
    facility: int = 10,
    message: bytes | None = None,
) -> bytes:
    """The event as one RFC 5424 message:
    `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [bastion@32473 ...] BOM{json}`.

    PRI is `facility * 8 + severity` (default facility 10, authpriv). Severity is 6
    (informational) for a success, 5 (notice) for a successful authz/role/role grant/API
    key change and 4 (warning) for a failure or denial. MSGID is the event type; the
    structured data repeats the searchable fields; MSG is the whole event as compact,
    key-sorted UTF-8 JSON behind a byte-order mark, unless `message` (e.g. a CEF record)
    is given. No trailing newline: frame the
    result with `octet_frame` for TCP or TLS transport.
    """
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be 0..23, not {facility}")
    pri = facility * 8 + _syslog_severity(event)
    header = " ".join(
        [
            f"<{pri}>1",
            _rfc3339(event.time),
            _printable_ascii(hostname, 255),
            _printable_ascii(app_name, 48),
            "-",  # PROCID
            _printable_ascii(event.type, 32),  # MSGID
            _structured_data(event),
        ]
    )
    body = message if message is not None else _BOM + _compact_json(event_json(event))
    return header.encode() + b" " + body


def octet_frame(message: bytes) -> bytes:
    """Octet-counting framing (RFC 6587 section 3.4.1, RFC 5425): `LEN SP MESSAGE`."""
    return b"%d " % len(message) + message


# --- ArcSight CEF -------------------------------------------------------------------

_CEF_SEVERITY_LOW: Final = 3
_CEF_SEVERITY_MEDIUM: Final = 5
_CEF_SEVERITY_HIGH: Final = 7


def _cef_severity(event: SiemEvent) -> int:
    if event.outcome != "success":
        return _CEF_SEVERITY_HIGH
    if _is_privilege_change(event):
        return _CEF_SEVERITY_MEDIUM
    return _CEF_SEVERITY_LOW


def _cef_header(value: str) -> str:
    """Escape a CEF header field: backslash and pipe. A header may not span lines, so a
    CR or LF (which would split the record on a line-based transport) becomes a space."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|")
    return escaped.replace("\r", " ").replace("\n", " ")


def _cef_extension(value: str) -> str:
    """Escape a CEF extension value: backslash, equals sign, and CR/LF as `\\r`/`\\n`."""
    return (
        value.replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def cef(
    event: SiemEvent, *, vendor: str = "Bastion", product: str = "Bastion", version: str
) -> bytes:
    """The event as an ArcSight CEF record (UTF-8, no trailing newline):
    `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`.

    SignatureID is the event type and Name the type in words. Severity is 3 for a
    success, 5 for a successful authz/role/role grant/API key change and 7 for a failure
    or denial. Extensions: rt (epoch ms), suser and suid (actor id), src (actor IP),
    requestClientApplication (user agent), outcome, reason, externalId (event id) and the
    custom strings cs1 org, cs2 resourceType, cs3 resourceId, cs4 requestId, cs5 hash.
    Unset values are left out.
    """
    name = event.type.replace(".", " ").replace("_", " ")
    header = [
        "CEF:0",
        _cef_header(vendor),
        _cef_header(product),
        _cef_header(version),
        _cef_header(event.type),
        _cef_header(name),
        str(_cef_severity(event)),
    ]
    pairs: list[tuple[str, str | None]] = [
        ("rt", str(_epoch_ms(event.time))),
        ("suser", event.actor_id),
        ("suid", event.actor_id),
        ("src", event.actor_ip),
        ("requestClientApplication", event.actor_user_agent),
        ("outcome", event.outcome),
        ("reason", event.reason),
        ("externalId", event.id),
    ]
    custom = [
        ("org", event.org_id),
        ("resourceType", event.resource_type),
        ("resourceId", event.resource_id),
        ("requestId", event.request_id),
        ("hash", event.hash),
    ]
    for number, (label, value) in enumerate(custom, start=1):
        if value is not None:
            pairs += [(f"cs{number}Label", label), (f"cs{number}", value)]
    extension = " ".join(
        f"{key}={_cef_extension(value)}" for key, value in pairs if value is not None
    )
    return ("|".join(header) + "|" + extension).encode()


# --- OCSF 1.1.0 ---------------------------------------------------------------------

OCSF_VERSION: Final = "1.1.0"

_IAM: Final = (3, "Identity & Access Management")
_APPLICATION: Final = (6, "Application Activity")

_ACCOUNT_CHANGE: Final = (3001, "Account Change")
_AUTHENTICATION: Final = (3002, "Authentication")
_GROUP_MANAGEMENT: Final = (3006, "Group Management")
_API_ACTIVITY: Final = (6003, "API Activity")

_OTHER: Final = 99

_ACTIVITY_NAMES: Final[dict[int, dict[int, str]]] = {
    3001: {
        1: "Create",
        2: "Enable",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        7: "Attach Policy",
        8: "Detach Policy",
        9: "Lock",
        _OTHER: "Other",
    },
    3002: {1: "Logon", 2: "Logoff", _OTHER: "Other"},
    3006: {
        1: "Assign Privileges",
        2: "Revoke Privileges",
        3: "Add User",
        4: "Remove User",
        5: "Delete",
        6: "Create",
        _OTHER: "Other",
    },
    6003: {1: "Create", 2: "Read", 3: "Update", 4: "Delete", _OTHER: "Other"},
}

# Activity ids by the verb of the event type (the part after the last dot).
_ACCOUNT_VERBS: Final = {
    "created": 1,
    "enabled": 2,
    "password_changed": 3,
    "password_reset": 4,
    "disabled": 5,
    "deleted": 6,
    "revoked": 6,
    "locked": 9,
}
_GROUP_VERBS: Final = {"member_added": 3, "member_removed": 4, "deleted": 5, "created": 6}
# A role grant gives a user a role's privileges; ending it, however named, takes them away.
_GRANT_VERBS: Final = {"created": 1, "revoked": 2, "deleted": 2}
_API_VERBS: Final = {
    "created": 1,
    "revealed": 2,
    "exported": 2,
    "read": 2,
    "updated": 3,
    "decided": 3,
    "rotated": 3,
    "deleted": 4,
    "revoked": 4,
    "purged": 4,
}

_ACCOUNT_DOMAINS: Final = frozenset({"user", "service_account", "api_key"})
_GROUP_DOMAINS: Final = frozenset({"team", "role", "role_grant"})

_USER_TYPE_IDS: Final = {"user": 1, "system": 3}


@dataclass(frozen=True, slots=True)
class _OcsfClass:
    category: tuple[int, str]
    event_class: tuple[int, str]
    activity_id: int


def _ocsf_class(event_type: str, members_or_privileges: bool = False) -> _OcsfClass:
    """The OCSF category, class and activity for an event type. A team or role event is
    Group Management only when it names a member or privileges (the class requires one
    of `user` and `privileges`); creating, renaming or deleting a team otherwise is an
    operation on Bastion's API (API Activity)."""
    domain, verb = _domain(event_type), _verb(event_type)
    if domain == "auth":
        if verb.startswith("login"):
            activity = 1  # Logon, whether it succeeded, failed or was throttled
        elif verb == "logout":
            activity = 2  # Logoff
        else:
            activity = _OTHER  # credential_rejected, password_set
        return _OcsfClass(_IAM, _AUTHENTICATION, activity)
    if domain in _ACCOUNT_DOMAINS:
        # Rotating an API key is not an OCSF "Password Change" of an account; it stays Other.
        return _OcsfClass(_IAM, _ACCOUNT_CHANGE, _ACCOUNT_VERBS.get(verb, _OTHER))
    if domain == "role_grant" and members_or_privileges:
        return _OcsfClass(_IAM, _GROUP_MANAGEMENT, _GRANT_VERBS.get(verb, _OTHER))
    if domain in _GROUP_DOMAINS and members_or_privileges:
        return _OcsfClass(_IAM, _GROUP_MANAGEMENT, _GROUP_VERBS.get(verb, _OTHER))
    if domain == "authz":
        # OCSF's Authorize Session (3003) reports the privileges granted to a new session,
        # not a request refused by policy; API Activity is the closest fit for "this call
        # was denied", with activity Other and the outcome in status/status_detail.
        return _OcsfClass(_APPLICATION, _API_ACTIVITY, _OTHER)
    # Agents, runs, tool calls, approvals, secrets, webhooks, settings, exports, orgs,
    # sessions and the audit trail itself: operations on Bastion's API.
    return _OcsfClass(_APPLICATION, _API_ACTIVITY, _API_VERBS.get(verb, _OTHER))


def _ocsf_user(uid: str | None, kind: str) -> dict[str, Any]:
    """An OCSF User object; it must carry one of account, name and uid, so a principal
    without an id (an anonymous caller, a sign-in for an unknown email) is named by its
    kind."""
    return _drop_none(
        {
            "uid": uid,
            "name": kind if uid is None else None,
            "type": kind,
            "type_id": _USER_TYPE_IDS.get(kind, _OTHER),
        }
    )


def _ocsf_actor(event: SiemEvent) -> dict[str, Any]:
    return {"user": _ocsf_user(event.actor_id, event.actor_type)}


def _ocsf_target_user(event: SiemEvent) -> dict[str, Any]:
    """The user an authentication or account event is about: the resource when it is a
    user or account (a failed sign-in for a known account), else the acting user, else
    an unknown user (a sign-in for an unknown email)."""
    if event.resource_id is not None and event.resource_type in (None, *_ACCOUNT_DOMAINS):
        return {"uid": event.resource_id, "type": event.resource_type or "user"}
    if event.actor_type == "user" and event.actor_id is not None:
        return {"uid": event.actor_id, "type": "user", "type_id": 1}
    return {"name": "unknown", "type": "Unknown", "type_id": 0}


def ocsf(event: SiemEvent) -> dict[str, Any]:
    """The event as an OCSF 1.1.0 event (a JSON-able dict), unset attributes left out.

    Class by event domain: auth.* is Authentication (3002); user.*, service_account.* and
    api_key.* are Account Change (3001); team.*, role.* and role_grant.* are Group
    Management (3006) when they name a member or privileges (the class requires one),
    else API Activity; authz.* and everything else are API Activity (6003). Every
    event validates against OCSF 1.1.0 (tests/audit/test_ocsf_schema.py). The activity
    comes from the verb of the type (created, deleted, member_added, ...), 99 (Other) when
    none fits, and `type_uid` is `class_uid * 100 + activity_id`. A success is severity 1
    (Informational) with status Success; a failure or denial is severity 3 (Medium) with
    status Failure. The event's own metadata travels in `unmapped`.
    """
    metadata = _jsonable(event.metadata)
    member = metadata.get("user_id") if isinstance(metadata.get("user_id"), str) else None
    if member is None and _domain(event.type) == "role_grant" and event.resource_type == "user":
        member = event.resource_id  # a role grant's resource is the grantee
    privileges = _privileges(event, metadata)
    mapped = _ocsf_class(event.type, member is not None or bool(privileges))
    category_uid, category_name = mapped.category
    class_uid, class_name = mapped.event_class
    activity_name = _ACTIVITY_NAMES[class_uid][mapped.activity_id]
    success = event.outcome == "success"
    status_detail = event.reason
    if status_detail is None and event.outcome == "denied":
        status_detail = "denied"  # OCSF has no Denied status; keep it apart from Failure
    group_management = class_uid == _GROUP_MANAGEMENT[0]

    result: dict[str, Any] = {
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": mapped.activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + mapped.activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "time": _epoch_ms(event.time),
        "severity_id": 1 if success else 3,
        "severity": "Informational" if success else "Medium",
        "status_id": 1 if success else 2,
        "status": "Success" if success else "Failure",
        "message": event.type,
        "metadata": _drop_none(
            {
                "version": OCSF_VERSION,
                "uid": event.id,
                "product": {"name": "Bastion", "vendor_name": "Bastion"},
                # Group Management has `actor` only through the host profile.
                "profiles": ["host"] if group_management else None,
                "event_code": event.type,
                "sequence": event.seq,
                "correlation_uid": event.request_id,
                "tenant_uid": event.org_id,
            }
        ),
        "actor": _ocsf_actor(event),
    }
    if status_detail is not None:
        result["status_detail"] = status_detail
    # Where the call came from. Group Management has neither attribute: there they
    # travel in `unmapped`, as they are.
    origin: dict[str, Any] = {}
    if event.actor_ip is not None:
        origin["src_endpoint"] = _endpoint(event.actor_ip)
    if event.actor_user_agent is not None:
        origin["http_request"] = {"user_agent": event.actor_user_agent}
    if not group_management:
        result.update(origin)

    result.update(_class_attributes(event, class_uid, member, privileges, metadata))
    if class_uid == _API_ACTIVITY[0]:
        # API Activity requires the source; an event without a client address began
        # inside Bastion (a scheduled job, a host command).
        result.setdefault("src_endpoint", {"svc_name": "bastion"})
    unmapped = dict(metadata)
    if group_management:
        unmapped.update(origin)
    if unmapped:
        result["unmapped"] = unmapped
    return result


def _class_attributes(
    event: SiemEvent,
    class_uid: int,
    member: str | None,
    privileges: list[str],
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The attributes of the event's class: who the event is about, or which API call."""
    if class_uid == _AUTHENTICATION[0]:
        # the class needs service or dst_endpoint: the service signed in to is Bastion
        return {"user": _ocsf_target_user(event), "service": {"name": "Bastion"}}
    if class_uid == _ACCOUNT_CHANGE[0]:
        return {"user": _ocsf_target_user(event)}
    if class_uid == _GROUP_MANAGEMENT[0]:
        out: dict[str, Any] = {"group": _ocsf_group(event, metadata)}
        if member is not None:  # the member added or removed, or a role grant's grantee
            out["user"] = {"uid": member}
        if privileges:
            out["privileges"] = privileges
        return out
    out = {"api": {"operation": event.type}}
    resource = _drop_none({"uid": event.resource_id, "type": event.resource_type})
    if resource:
        out["resources"] = [resource]
    return out


def _endpoint(address: str) -> dict[str, str]:
    """`ip` must be an IP address in OCSF; anything else a server recorded as the peer
    (a Unix socket, a test client's name) is the endpoint's name."""
    try:
        return {"ip": str(ipaddress.ip_address(address))}
    except ValueError:
        return {"name": address}


def _privileges(event: SiemEvent, metadata: Mapping[str, Any]) -> list[str]:
    """The privileges a team or role event moves: a role grant's role, or the
    permissions a role was created or updated with."""
    role = metadata.get("role")
    if _domain(event.type) == "role_grant" and isinstance(role, str):
        return [role]
    permissions = metadata.get("permissions")
    if _domain(event.type) == "role" and isinstance(permissions, list):
        return [str(p) for p in permissions]
    return []


def _ocsf_group(event: SiemEvent, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The group: the team or role itself; for a role grant, the role granted (its name
    when known) rather than the grantee."""
    if _domain(event.type) == "role_grant":
        role = metadata.get("role")
        grant = metadata.get("grant_id")
        return _drop_none(
            {
                "name": role if isinstance(role, str) else None,
                "uid": grant if isinstance(grant, str) and not isinstance(role, str) else None,
                "type": "role",
            }
        ) | ({} if isinstance(role, str) or isinstance(grant, str) else {"name": "role"})
    name = metadata.get("name")
    return _drop_none(
        {
            "uid": event.resource_id,
            "name": name if isinstance(name, str) else None,
            "type": _domain(event.type),
        }
    ) | ({} if event.resource_id or isinstance(name, str) else {"name": _domain(event.type)})


# --- Splunk HEC ---------------------------------------------------------------------


def splunk_hec(
    event: SiemEvent,
    *,
    index: str | None = None,
    source: str = "bastion",
    sourcetype: str = "bastion:audit",
) -> dict[str, Any]:
    """The event as a Splunk HTTP Event Collector payload (one object for
    /services/collector/event): `time` in epoch seconds, `source`, `sourcetype`, `index`
    when given, and the canonical event under `event`. `host` is left to the collector."""
    payload: dict[str, Any] = {
        "time": (_utc(event.time) - _EPOCH) / timedelta(seconds=1),
        "source": source,
        "sourcetype": sourcetype,
    }
    if index is not None:
        payload["index"] = index
    payload["event"] = event_json(event)
    return payload
