from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from sqlalchemy import func, select

from bastion.audit import chainwalk, checkpoints, export
from bastion.audit import service as audit
from bastion.audit.export import ExportFormat
from bastion.audit.models import AuditHead
from bastion.cli.common import (
    CLI_ACTOR,
    EXIT_USAGE,
    Json,
    emit,
    err,
    fail,
    group,
    progress_bar,
    settings,
    unit_of_work,
)
from bastion.core.config import ConfigError, Settings
from bastion.core.db import make_engine, make_sessionmaker
from bastion.core.events import EventType
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, read_keyring
from bastion.tenancy.models import Organization

app = group("The audit trail.")


def _signer(cfg: Settings) -> checkpoints.Signer:
    try:
        return checkpoints.Signer(read_keyring(cfg.data_dir / AUDIT_SIGNING_KEY_FILE))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


@app.command("verify")
def verify(
    org: Annotated[
        str | None, typer.Option(help="One organisation (default: every chain).")
    ] = None,
    json: Json = False,
) -> None:
    """Verify hash chains and signed checkpoints. Exit 0 when intact, 1 naming the first
    bad event."""
    cfg = settings()
    keys = _signer(cfg).public_keys
    broken = False
    results = []
    with unit_of_work(cfg) as db:
        heads: list[tuple[str, int]] = [
            (chain, seq) for chain, seq in db.execute(select(AuditHead.chain, AuditHead.seq))
        ]
        if org:
            heads = [h for h in heads if h[0] == org] or [(org, 0)]
        with progress_bar(json) as bar:
            for chain, total in heads:
                task = bar.add_task(f"verifying {chain}", total=total or None)

                def advance(n: int, task: TaskID = task) -> None:
                    bar.advance(task, n)

                result = audit.verify(
                    db, chain, keys, progress=advance, workers=chainwalk.default_workers()
                )
                results.append(
                    {
                        "chain": chain,
                        "valid": result.valid,
                        "checked": result.checked,
                        "checkpoints": result.checkpoints,
                        "first_invalid": result.first_invalid,
                        "problem": result.problem,
                    }
                )
                broken = broken or not result.valid
    lines = [
        f"{r['chain']}: "
        + ("intact" if r["valid"] else f"BROKEN at {r['first_invalid']} ({r['problem']})")
        + f", {r['checked']} events and {r['checkpoints']} checkpoints checked"
        for r in results
    ]
    emit({"valid": not broken, "chains": results}, json, "\n".join(lines) or "no audit chains")
    raise typer.Exit(1 if broken else 0)


@app.command("checkpoint")
def checkpoint(
    json: Json = False,
) -> None:
    """Sign the head of every chain that has events newer than its last checkpoint."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        made = checkpoints.create_all(db, _signer(cfg))
    emit({"created": made}, json, f"{made} checkpoint(s) signed")


@app.command("export")
def export_events(
    org: Annotated[str, typer.Option(help="Organisation id (org_…).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format: Annotated[ExportFormat, typer.Option(help="jsonl or csv.")] = ExportFormat.JSONL,
    type: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Inclusive start (RFC 3339).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Exclusive end (RFC 3339).")] = None,
    json: Json = False,
) -> None:
    """Export an organisation's audit trail to a file, with a progress bar. The export
    itself is recorded in the trail (and is the export's last event)."""
    cfg = settings()
    filters = audit.EventFilter(type=type, since=since, until=until)
    engine = make_engine(cfg.resolved_database_url)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as db:
            if db.get(Organization, org) is None:
                fail(f"organisation {org} not found")
        with unit_of_work(cfg) as db:
            audit.record(
                db,
                type=EventType.AUDIT_EXPORTED,
                actor=CLI_ACTOR,
                org_id=org,
                resource=("org", org),
                metadata={"format": str(format), "destination": "file"},
            )
        # Counted after the export's own event is written: it is in the file too.
        with sessions() as db:
            total = db.execute(
                select(func.count()).select_from(audit.bounded(db, org, filters).subquery())
            ).scalar_one()
        written = 0
        with (
            output.open("wb") as handle,
            Progress(
                TextColumn("exporting"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
                disable=json,
            ) as bar,
        ):
            task = bar.add_task("export", total=total)
            header = format is ExportFormat.CSV
            for chunk in export.stream(sessions, org, filters, format):
                handle.write(chunk)
                if header:  # the CSV header line is not an event
                    header = False
                    continue
                lines = chunk.count(b"\n")
                if format is ExportFormat.JSONL:
                    written += lines
                bar.advance(task, lines)
    finally:
        engine.dispose()
    # JSONL: the lines written, one per event; CSV (a field may hold a newline): the count.
    count = written if format is ExportFormat.JSONL else total
    emit(
        {"org_id": org, "events": count, "output": str(output), "format": str(format)},
        json,
        f"wrote {count} events to {output}",
    )


@app.command("purge")
def purge(
    json: Json = False,
) -> None:
    """Apply each organisation's audit retention now: sign fresh checkpoints, then remove
    events older than the retention period up to the newest checkpoint that covers them.
    A chain that does not verify is left untouched (exit 1)."""
    from bastion.tenancy import service as tenancy

    cfg = settings()
    with unit_of_work(cfg) as db:
        checkpoints.create_all(db, _signer(cfg))
        results = tenancy.apply_audit_retention(db)
    rows = [
        {"chain": r.chain, "purged": r.purged, "anchor_seq": r.anchor_seq, "refused": r.refused}
        for r in results
        if r.purged or r.refused
    ]
    human = "\n".join(
        f"{r['chain']}: "
        + (f"REFUSED ({r['refused']})" if r["refused"] else f"purged {r['purged']}")
        for r in rows
    )
    emit({"chains": rows}, json, human or "nothing to purge")
    raise typer.Exit(1 if any(r["refused"] for r in rows) else 0)
