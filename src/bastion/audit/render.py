"""How exported events are written: one JSON object per line (JSONL) or CSV rows.

Rows come as the database driver hands them over (the columns of `COLUMNS`, time as
SQLite's stored text or PostgreSQL's naive UTC time, metadata as JSON text), rendered
exactly as `as_dict` and `csv_row` render an ORM event. CSV cells that a spreadsheet
would run as a formula are prefixed with a quote.

This module is also an export worker process (`python -m bastion.audit.render`): it
imports only the standard library and `chainwalk`, so a worker starts in a few tens of
milliseconds, reads its ranges with the database driver and renders them.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from _json import make_encoder
from collections.abc import Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bastion.audit import chainwalk

if TYPE_CHECKING:
    from bastion.audit.models import AuditEvent

COLUMNS = [
    "id",
    "seq",
    "time",
    "type",
    "actor_type",
    "actor_id",
    "actor_ip",
    "actor_user_agent",
    "resource_type",
    "resource_id",
    "outcome",
    "reason",
    "request_id",
    "metadata",
    "hash",
    "prev_hash",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def as_dict(e: AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "seq": e.seq,
        "time": chainwalk.rfc3339_text(e.time),
        "type": e.type,
        "actor": {
            "type": e.actor_type,
            "id": e.actor_id,
            "ip": e.actor_ip,
            "user_agent": e.actor_user_agent,
        },
        "resource": {"type": e.resource_type, "id": e.resource_id},
        "outcome": e.outcome,
        "reason": e.reason,
        "request_id": e.request_id,
        "metadata": e.event_metadata,
        "hash": e.hash,
        "prev_hash": e.prev_hash,
    }


def _safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_safe_cell(v) for v in values])
    return buffer.getvalue().encode()


def csv_row(e: AuditEvent) -> list[Any]:
    metadata = json.dumps(e.event_metadata, sort_keys=True, separators=(",", ":"))
    return [
        e.id,
        e.seq,
        chainwalk.rfc3339_text(e.time),
        e.type,
        e.actor_type,
        e.actor_id,
        e.actor_ip,
        e.actor_user_agent,
        e.resource_type,
        e.resource_id,
        e.outcome,
        e.reason,
        e.request_id,
        metadata,
        e.hash,
        e.prev_hash,
    ]


# json.dumps(value, separators=(",", ":")) and the same with sort_keys=True, built once.
_compact = make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", False, False, True
)
_compact_sorted = make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", True, False, True
)


def _text(value: Any) -> str | None:
    """RFC 3339 text of a time as the driver returned it (naive means UTC)."""
    if type(value) is str:
        return chainwalk.sqlite_time(value)
    if value is not None and value.tzinfo is None:
        return f"{value.isoformat()}Z"
    return chainwalk.rfc3339_text(value)


def _loaded(value: Any) -> Any:
    """Metadata as the ORM would hold it, from its JSON text; text that is not JSON (a
    hand-edited row, which verification reports) is exported as that text."""
    if value is None:
        return None
    try:
        return chainwalk.load_json(value)
    except ValueError:
        return str(value)


def _event(row: Any) -> SimpleNamespace:
    """A row as the attributes `as_dict` and `csv_row` read."""
    return SimpleNamespace(
        **dict(zip(_EVENT_FIELDS, row, strict=True)),
    )


_EVENT_FIELDS = (
    "id", "seq", "time", "type", "actor_type", "actor_id", "actor_ip", "actor_user_agent",
    "resource_type", "resource_id", "outcome", "reason", "request_id", "event_metadata",
    "hash", "prev_hash",
)  # fmt: skip


def jsonl(rows: Sequence[Any]) -> bytes:
    """`json.dumps(as_dict(event), separators=(",", ":"))` per row, one per line."""
    e = encode_basestring_ascii
    lines = []
    for row in rows:
        (id_, seq, time, type_, actor_type, actor_id, actor_ip, actor_user_agent,
         resource_type, resource_id, outcome, reason, request_id, metadata, hash_,
         prev_hash) = row  # fmt: skip
        t, m = _text(time), _loaded(metadata)
        try:
            lines.append(
                f'{{"id":{e(id_)},"seq":{int.__repr__(seq)},'
                f'"time":{"null" if t is None else e(t)},"type":{e(type_)},'
                f'"actor":{{"type":{e(actor_type)},'
                f'"id":{"null" if actor_id is None else e(actor_id)},'
                f'"ip":{"null" if actor_ip is None else e(actor_ip)},'
                f'"user_agent":{"null" if actor_user_agent is None else e(actor_user_agent)}}},'
                f'"resource":{{"type":{"null" if resource_type is None else e(resource_type)},'
                f'"id":{"null" if resource_id is None else e(resource_id)}}},'
                f'"outcome":{e(outcome)},"reason":{"null" if reason is None else e(reason)},'
                f'"request_id":{"null" if request_id is None else e(request_id)},'
                f'"metadata":{"".join(_compact(m, 0))},'
                f'"hash":{e(hash_)},"prev_hash":{e(prev_hash)}}}\n'
            )
        except TypeError:  # not text where text belongs (a hand-edited row)
            event = _event((*row[:2], None, *row[3:13], m, *row[14:]))
            body = {**as_dict(event), "time": t}  # type: ignore[arg-type]
            lines.append(json.dumps(body, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


# CSV rows are written by hand when that is plainly what the csv module would write:
# cells joined by commas when none holds a comma, quote or line break and none starts
# with a formula character; the metadata cell (compact JSON: no line breaks) quoted
# with its quotes doubled when it holds a quote or comma. Any other row goes through
# `csv_line`.
def plain_cells(text: str, commas: int) -> str | None:
    """`text`, cells joined by commas, when they need no quotes or formula guard."""
    if (
        text.count(",") != commas
        or '"' in text
        or "\n" in text
        or "\r" in text
        or text.startswith(_FORMULA_START)
        or ",=" in text
        or ",+" in text
        or ",-" in text
        or ",@" in text
        or ",\t" in text
    ):
        return None
    return text


def csv_rows(rows: Sequence[Any]) -> bytes:
    """`csv_line(csv_row(event))` per row."""
    lines = []
    for row in rows:
        (id_, seq, time, type_, actor_type, actor_id, actor_ip, actor_user_agent,
         resource_type, resource_id, outcome, reason, request_id, metadata, hash_,
         prev_hash) = row  # fmt: skip
        t = _text(time)
        m = "".join(_compact_sorted(_loaded(metadata), 0))
        # Every column is text (NULL: an empty cell) but seq, an integer.
        head = (
            f"{id_},{seq},{t},{type_},{actor_type},{actor_id or ''},{actor_ip or ''},"
            f"{actor_user_agent or ''},{resource_type or ''},{resource_id or ''},{outcome},"
            f"{reason or ''},{request_id or ''}"
        )
        tail = f"{hash_},{prev_hash}"
        # Both parts checked at once: the cells of `head` and of `tail` joined by a comma
        # are plain exactly when each part's are.
        if (
            plain_cells(f"{head},{tail}", 14) is None
            or None in (id_, t, type_, actor_type, outcome, hash_, prev_hash)
            or m.startswith(_FORMULA_START)
        ):
            lines.append(csv_line([*row[:2], t, *row[3:13], m, *row[14:]]).decode())
            continue
        if '"' in m or "," in m:
            m = '"' + m.replace('"', '""') + '"'
        lines.append(f"{head},{m},{tail}\n")
    return "".join(lines).encode()


# --- export worker process ---------------------------------------------------------------

AFTER, HIGH = "export_after", "export_high"  # the bind parameters of a batch's seq range
_TIME = "$datetime"  # a time parameter in an order: {"$datetime": its ISO 8601 text}
# The batch query as the driver runs it: SQL, parameter names in placeholder order (for a
# positional driver, else empty), parameters.
DriverQuery = tuple[str, list[str], dict[str, Any]]


def order(
    source: chainwalk.Source,
    query: DriverQuery,
    fmt: str,
    ranges: list[tuple[int, int]],
) -> bytes:
    """What an export worker is sent: see `_serve`."""
    where = [source.dialect, source.target, source.uri]
    return json.dumps([where, *query, fmt, ranges], default=_portable).encode()


def _portable(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_TIME: value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not a parameter an export worker takes")


def _revived(value: dict[str, Any]) -> Any:
    return datetime.fromisoformat(value[_TIME]) if _TIME in value else value


def _serve() -> None:
    """An export worker. Its order (a JSON document on stdin, from `order`): where the
    database is (`chainwalk.Source`), the batch query as the driver runs it (its
    SQL, the parameter names in placeholder order for positional drivers, and the
    parameters), the format and the seq ranges to render. Each range is sent on stdout
    as an 8-byte length and its bytes, once rendered whole."""
    where, sql, names, params, fmt, ranges = json.loads(
        sys.stdin.buffer.read(), object_hook=_revived
    )
    render = csv_rows if fmt == "csv" else jsonl
    conn = chainwalk.Source(*where).connect()
    out = sys.stdout.buffer
    for low, high in ranges:
        pieces, params[AFTER], params[HIGH] = [], low - 1, high
        while True:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, [params[n] for n in names] if names else params)
                rows = cursor.fetchall()
            finally:
                cursor.close()
            if not rows:
                break
            params[AFTER] = rows[-1][1]
            pieces.append(render(rows))
        data = b"".join(pieces)
        out.write(len(data).to_bytes(8, "big"))
        out.write(data)
        out.flush()


if __name__ == "__main__":
    _serve()
