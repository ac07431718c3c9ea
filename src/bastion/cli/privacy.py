"""`bastion privacy`: retention (show, set, purge now), data policies, and subject
requests (an access package to a file; erasure) as the operator at the host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import (
    EXIT_USAGE,
    Json,
    emit,
    fail,
    group,
    host_principal,
    progress_bar,
    settings,
)
from bastion.cli.common import unit_of_work as _unit

app = group("Privacy: retention and its purge, data policies, subject requests.")

Org = Annotated[str, typer.Argument(help="The organisation's id (org_…).")]


@app.command("purge")
def purge(
    org: Annotated[
        str | None, typer.Option(help="Only this organisation (default: every one).")
    ] = None,
    json: Json = False,
) -> None:
    """Purge what outlived its retention period now (tool calls, webhook events…), each
    purge recorded as `privacy.purged` in its organisation's audit chain. Audit events
    have their own purge, through signed checkpoints: `bastion audit purge`."""
    from bastion.privacy import retention

    cfg = settings()
    with _unit(cfg) as db:
        orgs = [org] if org else retention.org_ids(db)
    done = []
    with progress_bar(json) as bar:
        task = bar.add_task("purging", total=len(orgs))
        for org_id in orgs:
            with _unit(cfg) as db:
                done.append(retention.purge_org(db, org_id))
            bar.advance(task)
    rows = [{"org_id": p.org_id, "purged": p.counts} for p in done if p.total]
    human = "\n".join(
        f"{p.org_id}: " + ", ".join(f"{k} {v}" for k, v in p.counts.items())
        for p in done
        if p.total
    )
    emit({"orgs": rows}, json, human or "nothing to purge")


@app.command("retention")
def retention_cmd(
    org: Org,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="PERIOD=VALUE, e.g. tool_calls_days=30 (repeatable; audited).",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Show the organisation's retention periods, or change them with --set."""
    from bastion.privacy import retention

    cfg = settings()
    changes: dict[str, int] = {}
    for item in set_ or []:
        key, _, value = item.partition("=")
        allowed = ("audit_events_days", *retention.DEFAULTS)
        if key not in allowed or not value.isdigit():
            fail(f"--set takes PERIOD=NUMBER with PERIOD one of {', '.join(allowed)}", EXIT_USAGE)
        changes[key] = int(value)
    with _unit(cfg) as db:
        principal = host_principal(org)
        if changes:
            periods = retention.update_retention(db, principal, org, changes)
        else:
            periods = retention.get_retention(db, principal, org)
    emit(periods, json, "\n".join(f"{k}: {v}" for k, v in periods.items()))


@app.command("policies")
def policies_cmd(org: Org, json: Json = False) -> None:
    """List the organisation's data policies."""
    from bastion.privacy import policies

    with _unit(settings()) as db:
        rows = [
            {
                "id": p.id,
                "name": p.name,
                "applies_to": p.applies_to,
                "types": list(p.types),
                "action": p.action,
            }
            for p in policies.list_policies(db, host_principal(org), org)
        ]
    human = "\n".join(
        f"{r['id']}  {r['applies_to']}  {r['action']}  {','.join(r['types'])}  {r['name']}"
        for r in rows
    )
    emit({"data": rows}, json, human or "no data policies")


@app.command("access")
def access(
    org: Org,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the ZIP.")],
    user: Annotated[str | None, typer.Option(help="The person's user id.")] = None,
    email: Annotated[str | None, typer.Option(help="The person's email.")] = None,
    json: Json = False,
) -> None:
    """Answer a subject access request: write the person's package (a ZIP of JSON files)."""
    from bastion.privacy import subjects

    cfg = settings()
    if (user is None) == (email is None):
        fail("give exactly one of --user and --email", EXIT_USAGE)
    with _unit(cfg) as db:
        principal = host_principal(org)
        made = subjects.create_request(db, principal, org, kind="access", user_id=user, email=email)
        data = subjects.package(db, principal, org, made.id)
    output.write_bytes(data)
    emit(
        {"id": made.id, "subject_id": made.subject_id, "output": str(output)},
        json,
        f"{made.id}: wrote the package of {made.subject_id} to {output}",
    )


@app.command("erase")
def erase(
    org: Org,
    user: Annotated[str | None, typer.Option(help="The person's user id.")] = None,
    email: Annotated[str | None, typer.Option(help="The person's email.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Erasure cannot be undone.")] = False,
    json: Json = False,
) -> None:
    """Answer an erasure request: delete the person everywhere (see docs/privacy.md)."""
    from bastion.privacy import subjects

    cfg = settings()
    if (user is None) == (email is None):
        fail("give exactly one of --user and --email", EXIT_USAGE)
    if not yes:
        fail("erasure cannot be undone: pass --yes", EXIT_USAGE)
    with _unit(cfg) as db:
        made = subjects.create_request(
            db, host_principal(org), org, kind="erasure", user_id=user, email=email
        )
    emit(
        {"id": made.id, "subject_id": made.subject_id, "erased": made.result["erased"]},
        json,
        f"{made.id}: erased {made.subject_id}",
    )
