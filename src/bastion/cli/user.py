"""Users of an organisation, from the host: list, show, create, suspend, and the way
back in for a locked-out admin (`reset-password`, `reset-mfa`). Every change is audited
as the CLI (actor `system:cli`) in the same transaction."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from bastion.cli.common import (
    CLI_ACTOR,
    Json,
    all_pages,
    emit,
    fail,
    group,
    hasher,
    host_principal,
    settings,
    table,
    unit_of_work,
)
from bastion.identity import account
from bastion.identity import service as users
from bastion.identity.models import User
from bastion.tenancy.models import Organization

app = group("Users of an organisation.")
Org = Annotated[str, typer.Option("--org", help="Organisation id (org_…).")]
UserId = Annotated[str, typer.Argument(metavar="USER_ID", help="User id (usr_…).")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")
]


def _row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "status": user.status,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    if not password:
        fail("no password given")
    return password


@app.command("list")
def list_users(
    org: Org,
    status: Annotated[
        str | None, typer.Option(help="Only users in this status (active, invited, suspended).")
    ] = None,
    json: Json = False,
) -> None:
    """List an organisation's users, newest first."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        principal = host_principal(org)
        found = all_pages(
            lambda cursor: users.list_users(
                db, principal, org, limit=100, cursor=cursor, status=status
            )
        )
        rows = [_row(u) for u in found]
    emit({"data": rows}, json, table(rows, ("id", "email", "role", "status", "last_login_at")))


@app.command("show")
def show(user_id: UserId, org: Org, json: Json = False) -> None:
    """Show one user."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        row = _row(users.get_user(db, host_principal(org), org, user_id))
    emit(row, json, "\n".join(f"{k}: {v if v is not None else '-'}" for k, v in row.items()))


@app.command("create")
def create(
    org: Org,
    email: Annotated[str, typer.Option(help="The user's email.")],
    role: Annotated[str, typer.Option(help="Built-in role or custom role id.")] = "member",
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: PasswordStdin = False,
    json: Json = False,
) -> None:
    """Create a user. Without --password-stdin the user is invited and a one-time setup
    token is printed."""
    cfg = settings()
    password = _password(True) if password_stdin else None
    with unit_of_work(cfg) as db:
        if db.get(Organization, org) is None:
            fail(f"organisation {org} not found")
        created = users.create_user(
            db,
            CLI_ACTOR,
            org,
            email=email,
            name=name,
            role=role,
            password=password,
            hasher=hasher(cfg),
            setup_ttl=cfg.setup_token_ttl,
        )
        data: dict[str, Any] = _row(created.user)
    if created.setup_token:
        data["setup_token"] = created.setup_token
    human = f"user {data['id']} <{email}> created ({data['status']})"
    if created.setup_token:
        human += f"\nsetup token (shown once): {created.setup_token}"
    emit(data, json, human)


@app.command("suspend")
def suspend(user_id: UserId, org: Org, json: Json = False) -> None:
    """Suspend a user: every session ends now and their API keys stop working. The
    organisation keeps at least one active admin."""
    _set_status(user_id, org, "suspended", json)


@app.command("activate")
def activate(user_id: UserId, org: Org, json: Json = False) -> None:
    """Make a suspended user active again."""
    _set_status(user_id, org, "active", json)


def _set_status(user_id: str, org: str, status: str, json: bool) -> None:
    cfg = settings()
    with unit_of_work(cfg) as db:
        user = users.update_user(db, host_principal(org), org, user_id, status=status)
        row = _row(user)
    emit(row, json, f"user {user_id} is {row['status']}")


@app.command("reset-password")
def reset_password(
    user_id: UserId, org: Org, password_stdin: PasswordStdin = False, json: Json = False
) -> None:
    """Set a user's password from the host (a locked-out admin's way back in): asked
    twice on the terminal, or one line on stdin with --password-stdin. Every session of
    the user ends; their second factors stay (see `reset-mfa`). Audited."""
    cfg = settings()
    password = _password(password_stdin)
    with unit_of_work(cfg) as db:
        ended = account.set_password_by_operator(db, CLI_ACTOR, org, user_id, password=password)
    emit(
        {"id": user_id, "sessions_ended": ended},
        json,
        f"password of {user_id} set; {ended} session(s) ended",
    )


@app.command("reset-mfa")
def reset_mfa(user_id: UserId, org: Org, json: Json = False) -> None:
    """Remove every second factor and recovery code of a user (they enrol again at their
    next sign-in if the organisation requires MFA). Audited."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        removed = users.reset_mfa(db, host_principal(org), org, user_id)
    emit(
        {"id": user_id, "factors_removed": removed},
        json,
        f"{removed} factor(s) of {user_id} removed",
    )
