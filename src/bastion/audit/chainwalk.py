"""The fast path of chain verification: raw rows, one encoder, parallel ranges.

`verify` (in `service`) decides *what* to check; this module reads the events of a seq
range as plain tuples straight from the DBAPI cursor (no ORM objects, no result
processing), encodes each with `canonical_bytes` (byte for byte what
`service.canonical` hashes) and checks every link, hash and checkpoint of the range.

A long chain is cut into seq ranges that worker processes check at the same time; each
range reports its first row's link (seq, previous hash) and its last row, and the
caller joins the ranges in order, so the first bad event and its kind are exactly what
one walk from the start would find.

The workers start from a fork server (never a fork of a threaded server process) and
open their own DBAPI connection, so they see only committed rows: the parallel path is
for sessions that have written nothing to the chain (the verify endpoint and CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from _json import make_encoder
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from bastion.audit import pii
from bastion.core.crypto import sha256_hex


class _Log:
    """The `bastion.audit` logger, structlog imported on first use: worker processes
    import this module and never log, and structlog's import is most of their start."""

    def warning(self, event: str, **kwargs: Any) -> None:
        import structlog

        structlog.get_logger("bastion.audit").warning(event, **kwargs)


log = _Log()

BATCH = 5000  # rows per query
CHUNK = 50_000  # seq numbers per task handed to a worker process
PARALLEL_MIN = 200_000  # fewer events than this are checked in the calling process

# An event's columns in `canonical_bytes`'s order, then its hash, less `chain`: the query
# selects rows whose chain equals the one asked for (a row whose chain was edited drops
# out of its chain, a gap). Rows come back as the DBAPI hands them over: SQLite's time
# as stored text, PostgreSQL's as naive UTC (its isoformat() plus "Z" is `rfc3339()` of
# the aware value); metadata as JSON text.
_RANGE_SQLITE = (
    "SELECT id, seq, org_id, time, type, actor_type, actor_id, actor_ip,"
    " actor_user_agent, resource_type, resource_id, outcome, reason, request_id,"
    " metadata, prev_hash, hash FROM audit_events"
    " WHERE chain = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
)
_RANGE_PG = (
    "SELECT id, seq, org_id, time AT TIME ZONE 'UTC', type, actor_type, actor_id,"
    " actor_ip, actor_user_agent, resource_type, resource_id, outcome, reason, request_id,"
    " metadata::text, prev_hash, hash FROM audit_events"
    " WHERE chain = %s AND seq >= %s AND seq <= %s ORDER BY seq LIMIT %s"
)

# What `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
# builds on every call, built once: CPython's C encoder, without circular-reference
# markers (the values come from the database or from `redact`, never cyclic).
_encode_value = make_encoder(
    None, json.JSONEncoder().default, encode_basestring, None, ":", ",", True, False, True
)


# What `json.loads` runs underneath its argument checks and its skipping of whitespace:
# the C scanner of a default decoder, which reads one JSON value from an offset.
# (typeshed leaves out the attribute, which `JSONDecoder.__init__` sets.)
_scan_value: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def load_json(text: str) -> Any:
    """`json.loads(text)`, for the text of a JSON column: the scanner straight away when
    the value fills the text (no whitespace around it), else `json.loads` itself."""
    if type(text) is str:
        try:
            value, end = _scan_value(text, 0)
        except StopIteration:  # nothing at the start: whitespace, or not JSON
            pass
        else:
            if end == len(text):  # else whitespace or more after the value
                return value
    return json.loads(text)


def encode_json(value: Any) -> str:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`."""
    return "".join(_encode_value(value, 0))


def metadata_json(value: Any) -> str:
    """What the hash covers of an event's metadata: `encode_json` of it, less the
    personal values it commits to (`pii.hashed`)."""
    return "".join(_encode_value(pii.hashed(value), 0))


def rfc3339_text(value: datetime | None) -> str | None:
    """`bastion.core.clock.rfc3339`, repeated here so worker processes import no more
    than they need."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def canonical_bytes(
    id_: str,
    chain: str,
    seq: int,
    org_id: str | None,
    time: str | None,
    type_: str,
    actor_type: str,
    actor_id: str | None,
    actor_ip: str | None,
    actor_user_agent: str | None,
    resource_type: str | None,
    resource_id: str | None,
    outcome: str,
    reason: str | None,
    request_id: str | None,
    metadata_json: str,
    prev_hash: str,
) -> bytes:
    """The canonical encoding of an event: the compact, key-sorted JSON object that
    `service.canonical` describes, written out in its sorted key order. `time` is the
    RFC 3339 text and `metadata_json` the metadata already encoded by `encode_json`."""
    e = encode_basestring
    try:
        return (
            f'{{"actor":[{e(actor_type)},'
            f"{'null' if actor_id is None else e(actor_id)},"
            f"{'null' if actor_ip is None else e(actor_ip)},"
            f"{'null' if actor_user_agent is None else e(actor_user_agent)}],"
            f'"chain":{e(chain)},"id":{e(id_)},"metadata":{metadata_json},'
            f'"org_id":{"null" if org_id is None else e(org_id)},'
            f'"outcome":{e(outcome)},"prev_hash":{e(prev_hash)},'
            f'"reason":{"null" if reason is None else e(reason)},'
            f'"request_id":{"null" if request_id is None else e(request_id)},'
            f'"resource":[{"null" if resource_type is None else e(resource_type)},'
            f"{'null' if resource_id is None else e(resource_id)}],"
            f'"seq":{int.__repr__(seq)},"time":{"null" if time is None else e(time)},'
            f'"type":{e(type_)}}}'
        ).encode()
    except TypeError:
        # A value that is not text where text belongs (NULL in a required column, a
        # number in a text one: only a hand-edited row): encode it the general way.
        return _slow_bytes(
            id_, chain, seq, org_id, time, type_, actor_type, actor_id, actor_ip,
            actor_user_agent, resource_type, resource_id, outcome, reason, request_id,
            metadata_json, prev_hash,
        )  # fmt: skip


def _slow_bytes(
    id_: Any, chain: Any, seq: Any, org_id: Any, time: Any, type_: Any, actor_type: Any,
    actor_id: Any, actor_ip: Any, actor_user_agent: Any, resource_type: Any,
    resource_id: Any, outcome: Any, reason: Any, request_id: Any, metadata_json: str,
    prev_hash: Any,
) -> bytes:  # fmt: skip
    body = {
        "id": id_,
        "chain": chain,
        "seq": seq,
        "org_id": org_id,
        "time": time,
        "type": type_,
        "actor": [actor_type, actor_id, actor_ip, actor_user_agent],
        "resource": [resource_type, resource_id],
        "outcome": outcome,
        "reason": reason,
        "request_id": request_id,
        "metadata": json.loads(metadata_json),
        "prev_hash": prev_hash,
    }
    return encode_json(body).encode()


# --- reading ranges ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """How another process reaches the database: SQLite's file name (or `file:` URI
    when `uri`), or PostgreSQL's libpq connection URI."""

    dialect: str  # "sqlite" | "postgresql"
    target: str = field(repr=False)  # a PostgreSQL URI may carry a password
    uri: bool = False

    def connect(self) -> Any:
        if self.dialect == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.target, uri=self.uri)
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        import psycopg

        return psycopg.connect(self.target, autocommit=True)


def _batches(conn: Any, dialect: str, chain: str, low: int, high: int) -> Iterator[list[Any]]:
    """The rows with low <= seq <= high, oldest first, `BATCH` at a time (keyset)."""
    sqlite = dialect == "sqlite"
    sql = _RANGE_SQLITE if sqlite else _RANGE_PG
    while low <= high:
        cursor = conn.cursor()
        try:
            if sqlite:
                cursor.execute(sql, (chain, low, high, BATCH))
            else:  # binary: no formatting of numbers and times by the server, no parsing here
                cursor.execute(sql, (chain, low, high, BATCH), binary=True)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if not rows:
            return
        yield rows
        low = rows[-1][1] + 1


def sqlite_time(text: Any) -> str | None:
    """RFC 3339 text of a time as SQLAlchemy stores it in SQLite ("2026-12-02
    06:12:00.123456", UTC) without building a datetime; any other shape is read the
    way the ORM reads it."""
    if type(text) is str and len(text) == 26 and text[10] == " " and text[19] == ".":
        if text.endswith("000000"):  # isoformat() leaves out zero microseconds
            return f"{text[:10]}T{text[11:19]}Z"
        return f"{text[:10]}T{text[11:]}Z"
    if text is None:
        return None
    from sqlalchemy.engine import processors

    return rfc3339_text(processors.str_to_datetime(text))


def _pg_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _metadata_json(text: str | None) -> str:
    """The canonical encoding of metadata stored as JSON text (NULL: null)."""
    if text == "{}":
        return "{}"
    return metadata_json(None if text is None else load_json(text))


# --- checking a range ---------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """What checking one seq range found. `first` is its first row's (seq, id,
    prev_hash), for the caller to check against the range before; `checked` counts the
    rows that passed before `problem` (event id, problem, hash of the row before it in
    this range, or None when the problem is at the first row)."""

    first: tuple[int, str, str] | None
    last_seq: int
    last_hash: str
    checked: int
    problem: tuple[str, str, str | None] | None = None


def check_range(
    conn: Any,
    dialect: str,
    chain: str,
    low: int,
    high: int,
    signed: Mapping[int, tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> Segment:
    """Check the rows with low <= seq <= high: the links between them, each row's hash
    and each signed checkpoint (`signed`: seq -> (checkpoint id, hash)). The first row's
    own link is left to the caller (see `Segment`)."""
    to_time = sqlite_time if dialect == "sqlite" else _pg_time
    encode, metadata_json, digest = canonical_bytes, _metadata_json, sha256_hex
    first: tuple[int, str, str] | None = None
    prev, expected, checked = "", 0, 0
    problem: tuple[str, str, str | None]
    for rows in _batches(conn, dialect, chain, low, high):
        for row in rows:
            (id_, seq, org_id, time, type_, actor_type, actor_id, actor_ip,
             actor_user_agent, resource_type, resource_id, outcome, reason, request_id,
             metadata, prev_hash, hash_) = row  # fmt: skip
            if first is None:
                first = (seq, id_, prev_hash)
            elif seq != expected:
                problem = (id_, f"sequence gap before {seq}", prev)
                return Segment(first, expected - 1, prev, checked, problem)
            elif prev_hash != prev:
                problem = (id_, "previous hash does not match", prev)
                return Segment(first, expected - 1, prev, checked, problem)
            try:
                body = encode(
                    id_, chain, seq, org_id, to_time(time), type_, actor_type, actor_id,
                    actor_ip, actor_user_agent, resource_type, resource_id, outcome, reason,
                    request_id, metadata_json(metadata), prev_hash,
                )  # fmt: skip
            except (TypeError, ValueError):  # no event was ever written so: metadata that
                body = b""  # is not JSON, bytes in a text column (a hand-edited row)
            if digest(body) != hash_:
                problem = (id_, "event content was altered", prev if checked else None)
                return Segment(first, expected - 1, prev, checked, problem)
            if type(metadata) is str and '"_pii"' in metadata:  # values beside the hash
                altered = pii.problem(load_json(metadata))
                if altered is not None:
                    problem = (id_, altered, prev if checked else None)
                    return Segment(first, expected - 1, prev, checked, problem)
            cp = signed.get(seq)
            if cp is not None and cp[1] != hash_:
                problem = (id_, f"differs from checkpoint {cp[0]}", prev if checked else None)
                return Segment(first, expected - 1, prev, checked, problem)
            prev, expected, checked = hash_, seq + 1, checked + 1
            if progress is not None and checked % 10_000 == 0:
                progress(10_000)
    if progress is not None and checked % 10_000:
        progress(checked % 10_000)
    return Segment(first, expected - 1, prev, checked)


# --- joining ranges ---------------------------------------------------------------------


@dataclass(frozen=True)
class Walk:
    """A walk over [low, high]: `checked` events passed; `prev` is the last good hash
    and `last_seq` its seq; `problem` is (event id, problem) of the first bad event."""

    checked: int
    prev: str
    last_seq: int
    problem: tuple[str, str] | None = None


def join(segments: Iterator[Segment], prev: str, low: int) -> Walk:
    """Join ranges in seq order, checking each range's first row against the range
    before: the same verdict as one walk from `low` with previous hash `prev`."""
    expected, checked = low, 0
    for segment in segments:
        if segment.first is None:
            continue  # nothing in this range: the next row found must still follow on
        seq, id_, prev_hash = segment.first
        if seq != expected:
            return Walk(checked, prev, expected - 1, (id_, f"sequence gap before {seq}"))
        if prev_hash != prev:
            return Walk(checked, prev, expected - 1, (id_, "previous hash does not match"))
        if segment.problem is not None:
            bad_id, problem, before = segment.problem
            at = segment.last_seq if segment.checked else expected - 1
            return Walk(checked + segment.checked, before or prev, at, (bad_id, problem))
        prev, expected = segment.last_hash, segment.last_seq + 1
        checked += segment.checked
    return Walk(checked, prev, expected - 1)


def walk(
    conn: Any,
    dialect: str,
    source: Source | None,
    chain: str,
    low: int,
    high: int,
    prev: str,
    signed: Mapping[int, tuple[str, str]],
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Walk:
    """Check the chain's events low..high starting from previous hash `prev`: in this
    process on `conn` (the caller's connection, in its transaction), or, for at least
    `PARALLEL_MIN` events when `source` and `workers` > 1 allow, in worker processes."""
    if source is None or workers < 2 or high - low + 1 < PARALLEL_MIN:
        segment = check_range(conn, dialect, chain, low, high, signed, progress)
        return join(iter([segment]), prev, low)
    try:
        with closing(_parallel(source, chain, low, high, signed, workers, progress)) as segments:
            return join(segments, prev, low)
    except (WorkerFailed, OSError):
        # No worker processes here (a main module that starts work on import, no fork
        # server, a database the workers cannot open): the same walk, in this process.
        log.warning("audit verification falls back to one process", exc_info=True)
        segment = check_range(conn, dialect, chain, low, high, signed, progress)
        return join(iter([segment]), prev, low)


class WorkerFailed(Exception):
    """A worker process did not answer (could not start, connect or read)."""


def _parallel(
    source: Source,
    chain: str,
    low: int,
    high: int,
    signed: Mapping[int, tuple[str, str]],
    workers: int,
    progress: Callable[[int], None] | None,
) -> Generator[Segment, None, None]:
    """Segments of CHUNK seq numbers each, in order, checked by `workers` processes
    (`python -m bastion.audit.chainwalk`: a fresh interpreter that imports only this
    module, never the caller's main module). Chunk k goes to worker k mod `workers`,
    which answers its chunks in order, so results are read back in seq order."""
    chunks = [(start, min(start + CHUNK - 1, high)) for start in range(low, high + 1, CHUNK)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for slot in range(min(workers, len(chunks))):
            tasks = [
                [start, end, [[seq, *cp] for seq, cp in signed.items() if start <= seq <= end]]
                for start, end in chunks[slot::workers]
            ]
            proc = subprocess.Popen(
                [sys.executable, "-m", "bastion.audit.chainwalk"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            order = [source.dialect, source.target, source.uri, chain, tasks]
            if proc.stdin is None or proc.stdout is None:  # pragma: no cover
                raise WorkerFailed("an audit verification worker has no pipes")
            proc.stdin.write(json.dumps(order).encode() + b"\n")
            proc.stdin.close()
        for k in range(len(chunks)):
            line = procs[k % len(procs)].stdout.readline()  # type: ignore[union-attr]
            try:
                answer = json.loads(line)
            except ValueError as exc:
                raise WorkerFailed("an audit verification worker stopped") from exc
            if answer[0] != "ok":
                raise WorkerFailed(f"an audit verification worker failed: {answer[1]}")
            first, last_seq, last_hash, checked, problem = answer[1]
            segment = Segment(
                tuple(first) if first else None,
                last_seq,
                last_hash,
                checked,
                tuple(problem) if problem else None,
            )
            if progress is not None:
                progress(segment.checked)
            yield segment
    finally:
        stop_workers(procs)


def stop_workers(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """End worker processes (killed if still running) and close their output."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _serve() -> None:
    """A worker process: check the chunks named on stdin, answer each on stdout (one
    JSON document per line)."""
    out = sys.stdout.buffer
    try:
        dialect, target, uri, chain, tasks = json.loads(sys.stdin.buffer.readline())
        conn = Source(dialect, target, uri).connect()
        for start, end, signed in tasks:
            checkpoints = {seq: (cp_id, cp_hash) for seq, cp_id, cp_hash in signed}
            segment = check_range(conn, dialect, chain, start, end, checkpoints)
            out.write(json.dumps(["ok", astuple(segment)]).encode() + b"\n")
            out.flush()
    except Exception as exc:  # reported to the parent, which falls back to one process
        out.write(json.dumps(["error", f"{type(exc).__name__}: {exc}"]).encode() + b"\n")
        out.flush()
        raise SystemExit(1) from None


def default_workers() -> int:
    """Worker processes for a long verification: the CPUs this process may use, up to 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


if __name__ == "__main__":
    _serve()
