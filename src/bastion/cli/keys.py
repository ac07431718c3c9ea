"""Instance keys.

Vault root key: `bastion keys rotate` adds a version, `bastion keys rewrap` re-wraps
every organisation's data key under it (servers keep serving), `bastion keys retire
VERSION` removes a version no data key needs any more. Organisation data key: `bastion
keys rotate-org --org ORG` adds a version and re-encrypts that org's secrets.

Pepper (the key behind every credential hash): `rotate-pepper` adds a version and makes
it current, `pepper-status` counts the usable credentials under each version,
`retire-pepper VERSION` removes one nothing needs any more. Instance signing key (audit
checkpoints, OAuth access tokens, reports): `rotate-signing` adds a version and makes it
current, `signing-keys` lists every version's public key and `kid`. Running servers
follow each key file without a restart. See docs/keys.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from bastion.audit.schemas import SigningKeyOut
from bastion.cli.common import (
    CLI_ACTOR,
    EXIT_USAGE,
    Json,
    emit,
    fail,
    group,
    progress_bar,
    settings,
    unit_of_work,
)
from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.config import ConfigError, Settings
from bastion.core.db import make_engine, make_sessionmaker
from bastion.core.keyring import (
    PEPPER_FILE,
    ROOT_KEY_FILE,
    Keyring,
    load_pepper,
    read_keyring,
    replace_keyring,
    rotate_keyring,
)
from bastion.core.signing import SIGNING_KEY_FILE, InstanceSigner
from bastion.identity import pepper as peppers
from bastion.secrets import service as secrets
from bastion.secrets.cmk import CUSTOMER_WRAPPED
from bastion.secrets.models import OrgEncryptionKey, OrgKey
from bastion.secrets.vault import LocalKeyProvider, Vault, rewrap

app = group("Instance keys: vault root key, pepper, instance signing key.")


@app.command("rotate")
def rotate(json: Json = False) -> None:
    """Add a new root-key version and make it active. Then run `bastion keys rewrap`."""
    cfg = settings()
    version = rotate_keyring(cfg.data_dir / ROOT_KEY_FILE)
    emit({"active_version": version}, json, f"root key version {version} is now active")


@app.command("rewrap")
def rewrap_keys(json: Json = False) -> None:
    """Re-wrap every organisation data key under the active root-key version, one
    organisation per transaction, with a progress bar."""
    cfg = settings()
    provider = LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE)
    engine = make_engine(cfg.resolved_database_url)
    revisions.install()
    sessions = make_sessionmaker(engine, write=True)
    try:
        with sessions() as db:
            total = db.execute(
                select(func.count())
                .select_from(OrgKey)
                .where(
                    OrgKey.root_version != provider.active_version(),
                    OrgKey.root_version != CUSTOMER_WRAPPED,
                )
            ).scalar_one()
        with progress_bar(json) as bar:
            task = bar.add_task("re-wrapping data keys", total=total)
            done = rewrap(sessions, provider, progress=lambda n: bar.advance(task, n))
    finally:
        engine.dispose()
    active = provider.active_version()
    emit(
        {"rewrapped": done, "active_version": active},
        json,
        f"{done} organisation data keys now wrapped by root key version {active}",
    )


@app.command("rotate-org")
def rotate_org(
    org: Annotated[str, typer.Option("--org", help="Organisation id (org_...).")],
    background: Annotated[
        bool,
        typer.Option("--background", help="Only rotate; leave re-encryption to the servers."),
    ] = False,
    json: Json = False,
) -> None:
    """Give an organisation a new data key: new writes use it at once; its secret versions
    are re-encrypted under it (here, with a progress bar, alongside any server doing the
    same), then the older key is destroyed. Servers keep serving throughout."""
    cfg = settings()
    vault = Vault(LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE))
    with unit_of_work(cfg) as db:
        state = secrets.rotate_data_key(db, vault, CLI_ACTOR, org)
    data: dict[str, object] = {"org_id": org, "active_version": state.active_version}
    if background:
        data["pending"] = state.pending
        emit(data, json, f"data key version {state.active_version} active for {org}")
        return
    engine = make_engine(cfg.resolved_database_url)
    try:
        with progress_bar(json) as bar:
            task = bar.add_task("re-encrypting secrets", total=state.pending)
            done = secrets.reencrypt_org(
                make_sessionmaker(engine, write=True),
                vault,
                org,
                progress=lambda n: bar.advance(task, n),
            )
    finally:
        engine.dispose()
    data |= {"reencrypted": done.moved, "unreadable": done.unreadable}
    data["destroyed_versions"] = list(done.destroyed)
    human = f"{done.moved} secret versions re-encrypted under data key {state.active_version}"
    if done.unreadable:
        human += f"; {done.unreadable} unreadable, so the older key is kept"
    emit(data, json, human)
    if done.unreadable:
        raise typer.Exit(1)


@app.command("retire")
def retire(
    version: Annotated[int, typer.Argument(help="Root-key version to remove.")],
    json: Json = False,
) -> None:
    """Remove a root-key version from the keyring file. Refused while it is the active
    version or any organisation data key is still wrapped by it (run `bastion keys
    rewrap` first). Backups whose data keys it wraps can no longer be opened."""
    cfg = settings()
    path = cfg.data_dir / ROOT_KEY_FILE
    try:
        keys = read_keyring(path)
    except ConfigError as exc:
        fail(str(exc))
    if version not in keys.versions:
        fail(f"root key version {version} is not in the keyring")
    if version == keys.active:
        fail(f"root key version {version} is the active version: rotate first")
    engine = make_engine(cfg.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as db:
            wrapped = (
                db.execute(
                    select(func.count()).select_from(OrgKey).where(OrgKey.root_version == version)
                ).scalar_one()
                + db.execute(
                    select(func.count())
                    .select_from(OrgEncryptionKey)
                    .where(OrgEncryptionKey.config_root_version == version)
                ).scalar_one()
            )
    finally:
        engine.dispose()
    if wrapped:
        fail(
            f"{wrapped} organisation data keys are still wrapped by root key version "
            f"{version}: run `bastion keys rewrap` first"
        )
    remaining = {v: k for v, k in keys.versions.items() if v != version}
    replace_keyring(path, keys.active, remaining, keys.created)
    emit(
        {"retired": version, "versions": sorted(remaining), "active_version": keys.active},
        json,
        f"root key version {version} removed from {path.name}",
    )


# --- the pepper -------------------------------------------------------------------------


def _pepper_file(cfg: Settings) -> Path:
    if cfg.pepper is not None:
        fail(
            "the pepper comes from BASTION_PEPPER, not a keyring file: "
            "rotate it where it is set (one version only)",
            EXIT_USAGE,
        )
    return cfg.data_dir / PEPPER_FILE


def _read(path: Path) -> Keyring:
    try:
        return read_keyring(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def _pepper_usage(cfg: Settings) -> dict[int, dict[str, int]]:
    engine = make_engine(cfg.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as db:
            return peppers.usage(db, utcnow())
    finally:
        engine.dispose()


@app.command("rotate-pepper")
def rotate_pepper(json: Json = False) -> None:
    """Add a new pepper version and make it current. Credentials hashed under older
    versions keep working, and move to the new version when next used; running servers
    issue under the new version within a second. Then watch `bastion keys pepper-status`
    and retire the older version once nothing uses it."""
    path = _pepper_file(settings())
    _read(path)
    version = rotate_keyring(path)
    emit({"active_version": version}, json, f"pepper version {version} is now active")


@app.command("pepper-status")
def pepper_status(json: Json = False) -> None:
    """How many credentials that can still be used (API keys, sessions, setup tokens,
    agent run tokens) are hashed under each pepper version."""
    cfg = settings()
    try:
        keys = load_pepper(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    used = _pepper_usage(cfg)
    versions: dict[str, dict[str, object]] = {}
    kinds = peppers.kinds()
    for version in sorted(set(keys.versions) | set(used)):
        counts = used.get(version, dict.fromkeys(kinds, 0))
        versions[str(version)] = {
            **counts,
            "total": sum(counts.values()),
            "in_keyring": version in keys.versions,
            "active": version == keys.active,
        }
    lines = [
        f"version {v}{' (active)' if row['active'] else ''}"
        f"{'' if row['in_keyring'] else ' (not in the keyring)'}: {row['total']} credentials"
        f" ({', '.join(f'{k} {row[k]}' for k in kinds)})"
        for v, row in versions.items()
    ]
    emit({"active_version": keys.active, "versions": versions}, json, "\n".join(lines))


@app.command("retire-pepper")
def retire_pepper(
    version: Annotated[int, typer.Argument(help="Pepper version to remove.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Retire it even though credentials still use it."),
    ] = False,
    json: Json = False,
) -> None:
    """Remove a pepper version from the keyring file. Refused while it is the active
    version, or while any usable credential is still hashed under it (see `bastion keys
    pepper-status`) unless --force: those credentials then stop working, on running
    servers too."""
    cfg = settings()
    path = _pepper_file(cfg)
    keys = _read(path)
    if version not in keys.versions:
        fail(f"pepper version {version} is not in the keyring")
    if version == keys.active:
        fail(f"pepper version {version} is the active version: rotate first")
    counts = _pepper_usage(cfg).get(version, {})
    using = sum(counts.values())
    if using and not force:
        detail = ", ".join(f"{kind} {n}" for kind, n in counts.items() if n)
        fail(
            f"{using} credentials are still hashed under pepper version {version} "
            f"({detail}): they move to the active version when next used; wait, revoke "
            "them, or pass --force to end them"
        )
    remaining = {v: k for v, k in keys.versions.items() if v != version}
    replace_keyring(path, keys.active, remaining, keys.created)
    data = {"retired": version, "versions": sorted(remaining), "active_version": keys.active}
    human = f"pepper version {version} removed from {path.name}"
    if using:
        data["ended"] = using
        human += f"; {using} credentials hashed under it no longer work"
    emit(data, json, human)


# --- the instance signing key -----------------------------------------------------------


@app.command("rotate-signing")
def rotate_signing(json: Json = False) -> None:
    """Add a new instance signing key (Ed25519) and make it current: the next audit
    checkpoints and OAuth access tokens are signed with it (running servers follow within
    a second). Older keys stay, so what they signed still verifies (access tokens issued
    before the rotation until they expire) and their public keys stay published."""
    path = settings().data_dir / SIGNING_KEY_FILE
    _read(path)
    version = rotate_keyring(path)
    signer = InstanceSigner(_read(path))
    emit(
        {"active_version": version, "kid": signer.kid(version)},
        json,
        f"instance signing key version {version} is now active (kid {signer.kid(version)})",
    )


@app.command("signing-keys")
def signing_keys(json: Json = False) -> None:
    """Every instance signing key's public key, with the version a checkpoint names, the
    `kid` a token names and when it signed (what `GET /v1/audit/signing-keys` and
    `/.well-known/jwks.json` publish)."""
    signer = InstanceSigner(_read(settings().data_dir / SIGNING_KEY_FILE))
    keys = [SigningKeyOut.model_validate(k).model_dump(mode="json") for k in signer.published()]
    lines = [
        f"version {k['key_version']} ({k['status']}) {k['algorithm']} {k['public_key']}"
        f" kid {k['kid']} from {k['valid_from'] or '?'} until {k['valid_until'] or 'now'}"
        for k in keys
    ]
    emit({"data": keys}, json, "\n".join(lines))
