"""The streamed export renders rows read without the ORM exactly as the ORM-based
rendering (`render.as_dict` / `render.csv_row`) would: every field, awkward text, formulas in any
cell, hand-edited rows, on the suite's backend."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, text

from bastion.audit import export, render
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.events import EventType, Outcome
from tests.factories import Factory

AWKWARD = [
    "plain",
    "=SUM(A1)",
    "+1",
    "-2",
    "@here",
    "\tindented",
    "\rcarriage",
    'quote " and, comma',
    "new\nline",
    "é ☃ \u2028 \x01",
    "",
]


def _reference(app: Any, org_id: str, fmt: export.ExportFormat) -> bytes:  # type: ignore[no-untyped-def]
    with app.state.bastion.sessions() as db:
        events = list(
            db.execute(
                select(AuditEvent).where(AuditEvent.chain == org_id).order_by(AuditEvent.seq)
            ).scalars()
        )
    if fmt is export.ExportFormat.CSV:
        return render.csv_line(render.COLUMNS) + b"".join(
            render.csv_line(render.csv_row(e)) for e in events
        )
    return b"".join(
        json.dumps(render.as_dict(e), separators=(",", ":")).encode() + b"\n" for e in events
    )


@pytest.mark.parametrize("fmt", list(export.ExportFormat))
def test_the_stream_renders_as_the_orm_rendering_does(app, factory: Factory, fmt) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    with app.state.bastion.write_sessions() as db:
        begin_write(db)
        for i, value in enumerate(AWKWARD):
            audit.record(
                db,
                type=EventType.TEAM_UPDATED,
                actor=Actor("user", value or None, ip=value or None, user_agent=value or None),
                org_id=org.id,
                outcome=Outcome.FAILURE,
                resource=("team", value or None),
                reason=value or None,
                metadata={"text": value, "n": -i, "f": 1.5, "list": [value, None, True], value: i},
            )
        db.commit()
    with app.state.bastion.engine.begin() as conn:  # hand-edited metadata: a bare -5
        sql = (
            "UPDATE audit_events SET metadata = CAST(:m AS JSONB) WHERE chain = :c AND seq = 5"
            if conn.dialect.name == "postgresql"
            else "UPDATE audit_events SET metadata = :m WHERE chain = :c AND seq = 5"
        )
        conn.execute(text(sql), {"m": "-5", "c": org.id})
    if app.state.bastion.engine.dialect.name == "sqlite":  # a time stored in another shape
        with app.state.bastion.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE audit_events SET time = '2026-01-02 03:04:05'"
                    " WHERE chain = :c AND seq = 4"
                ),
                {"c": org.id},
            )
    streamed = b"".join(
        export.stream(app.state.bastion.sessions, org.id, audit.EventFilter(), fmt, batch=4)
    )
    assert streamed == _reference(app, org.id, fmt)


@pytest.mark.parametrize("fmt", list(export.ExportFormat))
def test_metadata_that_is_not_json_is_exported_as_its_text(app, factory: Factory, fmt) -> None:  # type: ignore[no-untyped-def]
    """A hand-edited row (SQLite keeps any text) does not cut the export short."""
    if app.state.bastion.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's jsonb column refuses text that is not JSON")
    org = factory.org()
    with app.state.bastion.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET metadata = 'not json {' WHERE chain = :c AND seq = 1"),
            {"c": org.id},
        )
    streamed = b"".join(
        export.stream(app.state.bastion.sessions, org.id, audit.EventFilter(), fmt)
    ).decode()
    if fmt is export.ExportFormat.JSONL:
        assert json.loads(streamed.splitlines()[0])["metadata"] == "not json {"
    else:
        assert streamed.splitlines()[1].split(",")[13] == '"""not json {"""'


def test_only_plain_cells_skip_the_csv_module() -> None:
    assert render.plain_cells("evt_1,2,,2026-01-01T00:00:00Z,a-b", 4) == (
        "evt_1,2,,2026-01-01T00:00:00Z,a-b"
    )
    for cell in ["=1", "+1", "-1", "@1", "\t1", "\r1", "a\nb", 'a"b', "a,b"]:
        assert render.plain_cells(f"x,{cell}", 1) is None, cell
        assert render.plain_cells(f"{cell},x", 1) is None, cell


@pytest.fixture
def many(app, factory: Factory) -> str:  # type: ignore[no-untyped-def]
    org = factory.org()
    with app.state.bastion.write_sessions() as db:
        begin_write(db)
        for i in range(120):
            audit.record(
                db,
                type=EventType.TEAM_UPDATED if i % 3 else EventType.TEAM_CREATED,
                actor=Actor("user", f"usr_{i}", user_agent="=calc" if i % 7 == 0 else None),
                org_id=org.id,
                metadata={"i": i, "text": 'a,b "c"' if i % 5 == 0 else "plain"},
            )
        db.commit()
    return org.id


def _export(app: Any, org_id: str, f: audit.EventFilter, fmt: Any, workers: int) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(
        export.stream(app.state.bastion.sessions, org_id, f, fmt, batch=7, workers=workers)
    )


@pytest.mark.parametrize("fmt", list(export.ExportFormat))
def test_worker_processes_send_the_same_export(
    app, many: str, fmt, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    with app.state.bastion.sessions() as db:
        times = list(
            db.execute(
                select(AuditEvent.time).where(AuditEvent.chain == many).order_by(AuditEvent.seq)
            ).scalars()
        )
    cases = [
        audit.EventFilter(),
        audit.EventFilter(type="team.created"),
        audit.EventFilter(since=times[30], until=times[90]),
        audit.EventFilter(since=times[50]),
        audit.EventFilter(q='"c"', actor="usr_10"),  # text search: a LIKE with escapes
        audit.EventFilter(q="100%_\\", outcome="success"),
    ]
    for f in cases:
        alone = _export(app, many, f, fmt, workers=1)
        monkeypatch.setattr(export, "PARALLEL_MIN", 1)
        monkeypatch.setattr(export, "CHUNK", 16)
        monkeypatch.setattr(export, "log", _NoFallback())
        assert _export(app, many, f, fmt, workers=2) == alone, f
        assert _export(app, many, f, fmt, workers=3) == alone, f
        monkeypatch.undo()


class _NoFallback:
    def warning(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the workers did not run")


def test_an_export_goes_on_in_process_when_workers_fail(
    app, many: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fmt = export.ExportFormat.JSONL
    alone = _export(app, many, audit.EventFilter(), fmt, workers=1)
    monkeypatch.setattr(export, "PARALLEL_MIN", 1)
    monkeypatch.setattr(export, "CHUNK", 16)
    monkeypatch.setattr(export.sys, "executable", "/bin/false")
    assert _export(app, many, audit.EventFilter(), fmt, workers=2) == alone
