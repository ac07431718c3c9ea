"""Audit-trail benchmark: appending to an organisation's hash chain through
`bastion.audit.service.record` (one writer, and two writers on the same chain) beside a
plain insert of the same rows without the chain, verifying a chain of N events (in one
process and in worker processes), searching that chain with each filter, and exporting
it (JSONL and CSV), on SQLite and on PostgreSQL when reachable.

`BENCH_AUDIT_EVENTS` sets the chain length; `BENCH_AUDIT_DOC=0` prints the figures
without rewriting the section of docs/benchmarks.md (for partial runs)."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit.chainwalk import default_workers
from bastion.audit.export import ExportFormat, stream
from bastion.audit.models import AuditEvent, AuditHead
from bastion.audit.service import (
    GENESIS,
    EventFilter,
    bounded,
    compute_hash,
    record,
    verify,
)
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.db import begin_write, make_engine, make_sessionmaker
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.redact import redact
from bastion.migrations.runner import upgrade
from bastion.tenancy.service import create_org
from bench import report
from bench.pg import create_database, drop_database
from bench.scale import SCALE

# The figures are over 1,000,000 events: building the chain dominates (about 3 to
# 4 minutes per backend on the 2-CPU benchmark machine).
EVENTS = SCALE.pick(int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000")), 300)
WRITE_DOC = os.environ.get("BENCH_AUDIT_DOC", "1") != "0"
# rows per bulk insert (and per transaction) while building the chain
BATCH = SCALE.pick(10_000, 100)
COMMIT_EVERY = 100  # events per transaction in the append scenarios
LONG_RUNS = SCALE.pick(3, 1)  # runs of each verify and export over the long chain (median)
QUERIES = SCALE.pick(50, 3)  # timed queries per search kind
WARMUP = SCALE.pick(3, 1)  # untimed queries per search kind
PAGE = 50  # search() fetches limit + 1 rows
ACTORS = 1_000
STEP = timedelta(milliseconds=30)
ACTOR = Actor("system", "bench")
VOCABULARY = [
    "alpha", "bravo", "charlie", "delta", "foxtrot", "golf", "hotel", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
]  # fmt: skip
# (type, outcome, resource type, reason, weight): what the synthetic chain is made of.
PROFILES: list[tuple[EventType, Outcome, str | None, str | None, int]] = [
    (EventType.AUTH_LOGIN_SUCCEEDED, Outcome.SUCCESS, "user", None, 40),
    (EventType.USER_UPDATED, Outcome.SUCCESS, "user", None, 15),
    (EventType.TEAM_MEMBER_ADDED, Outcome.SUCCESS, "team", None, 15),
    (EventType.ROLE_GRANT_CREATED, Outcome.SUCCESS, "role_grant", None, 10),
    (EventType.API_KEY_CREATED, Outcome.SUCCESS, "api_key", None, 10),
    (EventType.AUTH_LOGIN_FAILED, Outcome.FAILURE, "user", "wrong password", 7),
    (EventType.AUTHZ_DENIED, Outcome.DENIED, None, "missing permission", 3),
]


def _actor_id(n: int) -> str:
    return f"usr_bench{n:04d}"


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


# --- setup -------------------------------------------------------------------------


@contextmanager
def _backends() -> Iterator[list[tuple[str, str]]]:
    """(label, SQLAlchemy URL) of each backend, migrated to head; the PostgreSQL
    database is this run's own and is dropped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bastion-bench-audit-") as tmp:
        found = [("SQLite", f"sqlite:///{tmp}/bastion.db")]
        pg = create_database()
        if pg:
            found.append(("PostgreSQL", "postgresql+psycopg://" + pg.split("://", 1)[1]))
        try:
            for _, url in found:
                upgrade(url)
            yield found
        finally:
            if pg:
                drop_database(pg)


def _new_org(writer: sessionmaker[Session]) -> str:
    with writer.begin() as db:
        begin_write(db)
        return create_org(db, ACTOR, name="Bench").id


# --- 1. append -----------------------------------------------------------------------


def _rate(work: Callable[[int, float], None], counts: list[int], seconds: float) -> float:
    """Run `work(slot, stop)` in one thread per slot of `counts` for `seconds`; events/s
    from what the threads counted."""
    with ThreadPoolExecutor(len(counts)) as pool:
        start = time.perf_counter()
        futures = [pool.submit(work, slot, start + seconds) for slot in range(len(counts))]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


def _append(writer: sessionmaker[Session], org_id: str, seconds: float, threads: int) -> float:
    """Events/s appended by `threads` writers (own session each) for `seconds`."""
    counts = [0] * threads

    def work(slot: int, stop: float) -> None:
        while time.perf_counter() < stop:
            with writer.begin() as db:
                begin_write(db)
                for _ in range(COMMIT_EVERY):
                    record(
                        db,
                        type=EventType.TEAM_CREATED,
                        actor=ACTOR,
                        org_id=org_id,
                        resource=("team", "team_x"),
                        metadata={"name": "bench team"},
                    )
            counts[slot] += COMMIT_EVERY

    return _rate(work, counts, seconds)


def _plain(writer: sessionmaker[Session], org_id: str, seconds: float, threads: int) -> float:
    """Events/s of the same rows inserted the same way (`COMMIT_EVERY` per transaction,
    flushed at commit) without the chain: no head lock, no hash, no head update. Each
    writer fills a chain key of its own, numbering its rows itself."""
    counts = [0] * threads
    run = new_id("evt")[-8:]

    def work(slot: int, stop: float) -> None:
        chain, seq = f"plain_{run}_{slot}", 0
        while time.perf_counter() < stop:
            with writer.begin() as db:
                begin_write(db)
                for _ in range(COMMIT_EVERY):
                    seq += 1
                    db.add(
                        AuditEvent(
                            id=new_id("evt"),
                            chain=chain,
                            seq=seq,
                            org_id=org_id,
                            time=utcnow(),
                            type=str(EventType.TEAM_CREATED),
                            actor_type=ACTOR.type,
                            actor_id=ACTOR.id,
                            actor_ip=ACTOR.ip,
                            actor_user_agent=None,
                            resource_type="team",
                            resource_id="team_x",
                            outcome=str(Outcome.SUCCESS),
                            reason=None,
                            request_id=ACTOR.request_id,
                            event_metadata=redact({"name": "bench team"}),
                            prev_hash=GENESIS,
                            hash=GENESIS,
                        )
                    )
            counts[slot] += COMMIT_EVERY

    return _rate(work, counts, seconds)


def _check_chain(reader: sessionmaker[Session], org_id: str) -> int:
    """The chain is one unbroken line from genesis to its head; returns its length."""
    with reader() as db:
        head = db.get(AuditHead, org_id)
        result = verify(db, chain=org_id)
    assert head is not None
    assert result.valid, result.problem
    assert result.checked == head.seq, (result.checked, head.seq)
    return result.checked


# --- 2. build and verify a long chain -----------------------------------------------------


def _rows(
    org_id: str, first_seq: int, count: int, start: datetime, prev: str, rng: random.Random
) -> tuple[list[dict[str, Any]], str]:
    """`count` valid chained events from `first_seq` on, and the last one's hash."""
    profiles = rng.choices(PROFILES, weights=[p[4] for p in PROFILES], k=count)
    rows = []
    for offset, (type_, outcome, resource_type, reason, _) in enumerate(profiles):
        seq = first_seq + offset
        actor = rng.randrange(ACTORS)
        row: dict[str, Any] = {
            "id": new_id("evt"),
            "chain": org_id,
            "seq": seq,
            "org_id": org_id,
            "time": start + STEP * seq,
            "type": str(type_),
            "actor_type": "user",
            "actor_id": _actor_id(actor),
            "actor_ip": f"10.0.{actor // 250}.{actor % 250}",
            "actor_user_agent": None,
            "resource_type": resource_type,
            "resource_id": resource_type and f"{resource_type}_{rng.randrange(10_000):05d}",
            "outcome": str(outcome),
            "reason": reason,
            "request_id": None,
            "event_metadata": {"name": rng.choice(VOCABULARY), "size": rng.randrange(100)},
            "prev_hash": prev,
        }
        # canonical() reads only these attributes; a plain namespace hashes exactly as the
        # mapped row would, without the cost of instrumenting a million ORM objects.
        row["hash"] = prev = compute_hash(cast(AuditEvent, SimpleNamespace(**row)))
        rows.append(row)
    return rows, prev


def _build_chain(
    engine: Engine, writer: sessionmaker[Session], org_id: str, events: int
) -> tuple[float, datetime, datetime]:
    """Grow the org's chain (seq 1 is its `org.created`) to `events` events by bulk
    insert; returns (seconds taken, time of the first and of the last event)."""
    rng = random.Random(20_240_601)
    began = time.perf_counter()
    with writer() as db:
        head = db.get(AuditHead, org_id)
        assert head is not None
        assert head.seq == 1
        first = db.execute(
            select(AuditEvent.time).where(AuditEvent.chain == org_id, AuditEvent.seq == 1)
        ).scalar_one()
        prev, seq = head.hash, 2
    start = first - STEP  # event `seq` happens at start + seq * 30 ms
    while seq <= events:
        count = min(BATCH, events - seq + 1)
        rows, prev = _rows(org_id, seq, count, start, prev, rng)
        with writer.begin() as db:
            begin_write(db)
            # render_nulls keeps every row the same shape, so they go in one executemany
            db.execute(insert(AuditEvent).execution_options(render_nulls=True), rows)
            if seq + count > events:
                db.execute(
                    update(AuditHead)
                    .where(AuditHead.chain == org_id)
                    .values(seq=events, hash=prev, time=start + STEP * events)
                )
        seq += count
        if (seq - 2) % (10 * BATCH) == 0 or seq > events:
            print(f"    built {seq - 1:,} / {events:,} events", flush=True)
    if engine.dialect.name == "postgresql":  # as autovacuum would after such a load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE audit_events"))
    return time.perf_counter() - began, first, start + STEP * events


def _verify(reader: sessionmaker[Session], org_id: str, events: int, workers: int) -> float:
    with reader() as db:
        began = time.perf_counter()
        result = verify(db, chain=org_id, workers=workers)
        elapsed = time.perf_counter() - began
    assert result.valid, result.problem
    assert result.checked == events, (result.checked, events)
    return elapsed


# --- 3. search -------------------------------------------------------------------------


def _window(span: timedelta) -> timedelta:
    """One hour, or a quarter of the chain's span when that is shorter than four hours."""
    return min(timedelta(hours=1), span / 4)


def _search_kinds(first: datetime, last: datetime) -> dict[str, Callable[[int], EventFilter]]:
    types = [str(p[0]) for p in PROFILES]
    outcomes = [str(o) for o in Outcome]
    window = _window(last - first)
    middle = first + (last - first) / 2 - window / 2
    return {
        "newest page": lambda i: EventFilter(),
        "by type": lambda i: EventFilter(type=types[i % len(types)]),
        "by actor": lambda i: EventFilter(actor=_actor_id(i * 37 % ACTORS)),
        "by outcome": lambda i: EventFilter(outcome=outcomes[i % len(outcomes)]),
        "by time range": lambda i: EventFilter(
            since=middle + timedelta(seconds=i), until=middle + timedelta(seconds=i) + window
        ),
        "text in metadata": lambda i: EventFilter(q=VOCABULARY[i % len(VOCABULARY)]),
    }


def _search(
    reader: sessionmaker[Session], org_id: str, first: datetime, last: datetime
) -> dict[str, dict[str, float]]:
    """p50/p95 ms per query kind: what `search()` runs for a first page of 50 (for a
    time range, the query of its seq bounds too)."""
    out = {}
    for kind, make in _search_kinds(first, last).items():
        samples, returned = [], []
        for i in range(-WARMUP, QUERIES):
            with reader() as db:
                began = time.perf_counter()
                stmt = bounded(db, org_id, make(i))  # a time range's bounds: one probe query
                stmt = stmt.order_by(AuditEvent.seq.desc()).limit(PAGE + 1)
                rows = list(db.execute(stmt).scalars())
                elapsed = time.perf_counter() - began
            if i >= 0:
                samples.append(elapsed * 1000)
                returned.append(len(rows))
        out[kind] = {
            "p50_ms": statistics.median(samples),
            "p95_ms": _p95(samples),
            "rows_median": statistics.median(returned),
        }
        print(
            f"    search {kind}: p50 {out[kind]['p50_ms']:.2f} ms,"
            f" p95 {out[kind]['p95_ms']:.2f} ms",
            flush=True,
        )
    return out


# --- 4. export ------------------------------------------------------------------------


def _export(reader: sessionmaker[Session], org_id: str, fmt: ExportFormat) -> dict[str, float]:
    """MB/s (10^6 bytes) of `export.stream` over the whole chain, consumed and counted."""
    size = rows = 0
    began = time.perf_counter()
    for chunk in stream(reader, org_id, EventFilter(), fmt):
        size += len(chunk)
        rows += chunk.count(b"\n")
    elapsed = time.perf_counter() - began
    return {"mb_per_s": size / 1e6 / elapsed, "mb": size / 1e6, "seconds": elapsed, "lines": rows}


# --- suite --------------------------------------------------------------------------------


def _backend(label: str, url: str, seconds: int, runs: int) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        reader, writer = make_sessionmaker(engine), make_sessionmaker(engine, write=True)
        figures: dict[str, Any] = {}
        append_org = _new_org(writer)
        for threads in (1, 2):
            chained, plain = [], []
            for _ in range(runs):  # alternated, so both see the same machine
                chained.append(_append(writer, append_org, seconds, threads))
                plain.append(_plain(writer, append_org, seconds, threads))
            rate, peer = statistics.median(chained), statistics.median(plain)
            figures[f"append_{threads}_writer"] = {
                "events_per_s": rate,
                "runs": chained,
                "plain_events_per_s": peer,
                "plain_runs": plain,
                "chain_cost": peer / rate,
            }
            print(
                f"  {label}, append, {threads} writer(s): {rate:,.0f} ev/s; plain insert"
                f" {peer:,.0f} ev/s; the chain costs {peer / rate:.2f}x",
                flush=True,
            )
        figures["append_chain_events"] = _check_chain(reader, append_org)
        print(f"  {label}: append chain of {figures['append_chain_events']:,} events verified")

        org_id = _new_org(writer)
        built, first, last = _build_chain(engine, writer, org_id, EVENTS)
        figures["build_seconds"] = built
        print(f"  {label}: built {EVENTS:,} events in {built:.1f} s", flush=True)
        for workers in (1, default_workers()):
            took = [_verify(reader, org_id, EVENTS, workers) for _ in range(LONG_RUNS)]
            elapsed = statistics.median(took)
            figures[f"verify_{workers}_process"] = {
                "events": EVENTS,
                "seconds": elapsed,
                "events_per_s": EVENTS / elapsed,
                "runs_seconds": took,
            }
            print(
                f"  {label}, verify, {workers} process(es): {EVENTS / elapsed:,.0f} ev/s"
                f" ({elapsed:.1f} s)",
                flush=True,
            )
        figures["search"] = _search(reader, org_id, first, last)
        for fmt in ExportFormat:
            exports = [_export(reader, org_id, fmt) for _ in range(LONG_RUNS)]
            median = sorted(exports, key=lambda e: e["seconds"])[LONG_RUNS // 2]
            got: dict[str, Any] = {**median, "runs_seconds": [e["seconds"] for e in exports]}
            figures[f"export_{fmt}"] = got
            print(
                f"  {label}, export {fmt}: {got['mb_per_s']:.1f} MB/s ({got['mb']:.0f} MB"
                f" in {got['seconds']:.1f} s)",
                flush=True,
            )
        figures["time_window_s"] = _window(last - first).total_seconds()
        return figures
    finally:
        engine.dispose()


def main(seconds: int, runs: int) -> dict[str, object]:
    figures: dict[str, object] = {}
    rows: list[list[str]] = []
    with _backends() as backends:
        for label, url in backends:
            print(f"  {label}", flush=True)
            got = _backend(label, url, seconds, runs)
            figures[label] = got
            for threads in (1, 2):
                a = got[f"append_{threads}_writer"]
                name = "1 writer" if threads == 1 else "2 writers, same org"
                rows.append([f"append, {name}", label, f"{a['events_per_s']:,.0f} events/s"])
                rows.append(
                    [
                        f"plain insert of the same rows, {threads} writer(s)",
                        label,
                        f"{a['plain_events_per_s']:,.0f} events/s (the chain costs"
                        f" {a['chain_cost']:.2f}x)",
                    ]
                )
            for workers in sorted({1, default_workers()}):
                v = got[f"verify_{workers}_process"]
                rows.append(
                    [
                        f"verify a {EVENTS:,}-event chain, {workers} process(es)",
                        label,
                        f"{v['events_per_s']:,.0f} events/s ({v['seconds']:.1f} s)",
                    ]
                )
            for kind, q in got["search"].items():
                rows.append(
                    [
                        f"search: {kind}",
                        label,
                        f"p50 {q['p50_ms']:.2f} ms, p95 {q['p95_ms']:.2f} ms",
                    ]
                )
            for fmt in ExportFormat:
                x = got[f"export_{fmt}"]
                rows.append(
                    [
                        f"export {fmt.value.upper()}, whole chain",
                        label,
                        f"{x['mb_per_s']:.1f} MB/s ({x['mb']:.0f} MB in {x['seconds']:.1f} s)",
                    ]
                )
    window = _window(STEP * (EVENTS - 1))
    window_text = (
        "one-hour" if window == timedelta(hours=1) else f"{window.total_seconds():.0f}-second"
    )
    intro = (
        "Appends go through `bastion.audit.service.record` (`team.created`, actor"
        f" `system:bench`), {COMMIT_EVERY} events per committed transaction, for {seconds} s"
        f" per run, {runs} runs, median; with two writers, two threads with a session each"
        " append to the same organisation's chain, which is then verified end to end (no"
        " fork, no gap). Each run is followed by a run of the plain-insert peer: the same"
        " rows added to the session the same way and committed in the same transactions,"
        " without the chain (no head lock, no hash, no head update; each writer numbers rows"
        " of its own chain key); the chain's cost is the peer's rate over the chain's."
        f" Verify walks one organisation's chain of {EVENTS:,} events with `verify()`, once"
        f" in one process and once with {default_workers()} worker processes (one per CPU:"
        " the chain is cut into seq ranges checked at once and joined in order; a chain"
        " under 200,000 events is checked in one process either way), 3 runs each, median."
        f" Search times the query `search()` runs for a first page of {PAGE}"
        f" (`bounded(...)` ordered by seq descending, limit {PAGE + 1}; for a time range"
        " that is the query of its seq bounds, then the page's) over that same chain:"
        f" {QUERIES} queries per kind after {WARMUP} untimed ones, p50 and p95."
        " Export streams that whole chain through `bastion.audit.export.stream` (what the"
        " export endpoint and `bastion audit export` send; an export spanning 200,000 events"
        " or more is rendered by worker processes, one per CPU, and sent in order) and"
        " counts its bytes (MB = 10^6 bytes), 3 runs per format, median."
    )
    method = (
        "Method. The long chain is bulk-inserted rather than recorded event by event, but"
        " validly: each row's hash is `compute_hash` of its canonical encoding chained to"
        " the previous hash, the head row is advanced to the last event (and its time), and"
        " `verify()` must report the chain valid. Its events are 30 ms apart, spread over 7"
        " event types (login succeeded 40%, user updated 15%, team member added 15%, role"
        " grant created 10%, API key created 10%, login failed 7% with outcome failure,"
        " authz denied 3% with outcome denied), 1,000 actors, and metadata naming one of 16"
        " words (each text query looks for one of them, about 6% of events). Search kinds"
        f" rotate their value per query (type, actor, outcome, word; the {window_text} time"
        " window, in the middle of the chain, slides by a second; event times never"
        " decrease along a chain, so the window is searched as the seq range between two"
        " index probes). PostgreSQL runs `VACUUM ANALYZE` after the load, as autovacuum"
        " would, so that autovacuum does not run during the measurements (it also gathers"
        " the statistics on the searched text that revision 0014 declares); SQLite is left"
        " without statistics, as the application leaves it. `BENCH_AUDIT_EVENTS` sets the"
        " chain length. Both databases and the benchmark share the machine's CPUs."
    )
    table = report.table(["scenario", "backend", "figure"], rows)
    body = "\n\n".join(["## Audit trail: append, verify, search, export", intro, table, method])
    if WRITE_DOC:
        report.write_section("audit", body)
    else:
        print(body)
    return figures
