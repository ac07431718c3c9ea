"""Audit-trail benchmark: appending to an organisation's hash chain through
`bastion.audit.service.record` (one writer, and two writers on the same chain),
verifying a chain of N events, and searching that chain with each filter, on SQLite and
on PostgreSQL when reachable. No goal figures: the measurements are the result."""

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

from bastion.audit.events import EventType, Outcome
from bastion.audit.models import AuditEvent, AuditHead
from bastion.audit.service import EventFilter, compute_hash, filtered, record, verify
from bastion.core.context import Actor
from bastion.core.db import begin_write, make_engine, make_sessionmaker
from bastion.core.ids import new_id
from bastion.migrations.runner import upgrade
from bastion.tenancy.service import create_org
from bench import report
from bench.pg import create_database, drop_database

# 1,000,000 took about 6 minutes per backend on the 2-CPU benchmark machine (building the
# chain and verifying it dominate); 750,000 keeps each backend near 5 minutes.
EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "750000"))
BATCH = 10_000  # rows per bulk insert (and per transaction) while building the chain
COMMIT_EVERY = 100  # events per transaction in the append scenarios
QUERIES = 50  # timed queries per search kind
WARMUP = 3  # untimed queries per search kind
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

    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        futures = [pool.submit(work, slot, start + seconds) for slot in range(threads)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


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


def _verify(reader: sessionmaker[Session], org_id: str, events: int) -> float:
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 250_000 == 0:
            print(f"    verified {done[0]:,} events", flush=True)

    with reader() as db:
        began = time.perf_counter()
        result = verify(db, chain=org_id, progress=progress)
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
    """p50/p95 ms per query kind: what `search()` runs for a first page of 50."""
    out = {}
    for kind, make in _search_kinds(first, last).items():
        samples, returned = [], []
        for i in range(-WARMUP, QUERIES):
            stmt = filtered(org_id, make(i)).order_by(AuditEvent.seq.desc()).limit(PAGE + 1)
            with reader() as db:
                began = time.perf_counter()
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


# --- suite --------------------------------------------------------------------------------


def _backend(label: str, url: str, seconds: int, runs: int) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        reader, writer = make_sessionmaker(engine), make_sessionmaker(engine, write=True)
        figures: dict[str, Any] = {}
        append_org = _new_org(writer)
        for threads in (1, 2):
            rates = [_append(writer, append_org, seconds, threads) for _ in range(runs)]
            figures[f"append_{threads}_writer"] = {
                "events_per_s": statistics.median(rates),
                "runs": rates,
            }
            print(f"  {label}, append, {threads} writer(s): {statistics.median(rates):,.0f} ev/s")
        figures["append_chain_events"] = _check_chain(reader, append_org)
        print(f"  {label}: append chain of {figures['append_chain_events']:,} events verified")

        org_id = _new_org(writer)
        built, first, last = _build_chain(engine, writer, org_id, EVENTS)
        figures["build_seconds"] = built
        print(f"  {label}: built {EVENTS:,} events in {built:.1f} s", flush=True)
        elapsed = _verify(reader, org_id, EVENTS)
        figures["verify"] = {
            "events": EVENTS,
            "seconds": elapsed,
            "events_per_s": EVENTS / elapsed,
        }
        print(f"  {label}, verify: {EVENTS / elapsed:,.0f} ev/s ({elapsed:.1f} s)", flush=True)
        figures["search"] = _search(reader, org_id, first, last)
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
                rate = got[f"append_{threads}_writer"]["events_per_s"]
                name = "1 writer" if threads == 1 else "2 writers, same org"
                rows.append([f"append, {name}", label, f"{rate:,.0f} events/s"])
            v = got["verify"]
            rows.append(
                [
                    f"verify a {EVENTS:,}-event chain",
                    label,
                    f"{v['events_per_s']:,.0f} events/s ({v['seconds']:.1f} s)",
                ]
            )
            for kind, s in got["search"].items():
                rows.append(
                    [
                        f"search: {kind}",
                        label,
                        f"p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms",
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
        f" fork, no gap). Verify walks one organisation's chain of {EVENTS:,} events with"
        " `verify()` (one run). Search times the query `search()` runs for a first page of"
        f" {PAGE} (`filtered(...)` ordered by seq descending, limit {PAGE + 1}) over that"
        f" same chain: {QUERIES} queries per kind after {WARMUP} untimed ones, p50 and p95."
    )
    method = (
        "Method. The long chain is bulk-inserted rather than recorded event by event, but"
        " validly: each row's hash is `compute_hash` of its canonical encoding chained to"
        " the previous hash, the head row is advanced to the last event, and `verify()` must"
        " report the chain valid. Its events are 30 ms apart, spread over 7 event types"
        " (login succeeded 40%, user updated 15%, team member added 15%, role grant created"
        " 10%, API key created 10%, login failed 7% with outcome failure, authz denied 3%"
        " with outcome denied), 1,000 actors, and metadata naming one of 16 words (each text"
        " query looks for one of them, about 6% of events). Search kinds rotate their value"
        f" per query (type, actor, outcome, word; the {window_text} time window, in the"
        " middle of the chain, slides by a second). PostgreSQL runs `VACUUM ANALYZE` after"
        " the load, as autovacuum would, so that autovacuum does not run during the"
        " measurements; SQLite is left without statistics, as the application leaves it."
        " `BENCH_AUDIT_EVENTS` sets the chain length. Both databases and the benchmark share"
        " the machine's CPUs."
    )
    table = report.table(["scenario", "backend", "figure"], rows)
    body = "\n\n".join(["## Audit trail: append, verify, search", intro, table, method])
    report.write_section("audit", body)
    return figures
