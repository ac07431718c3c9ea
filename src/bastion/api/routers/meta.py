from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from bastion.api.deps import Caller, State
from bastion.authz.schemas import PermissionOut
from bastion.core.db import writer_stats
from bastion.core.keyring import load_pepper
from bastion.core.permissions import DESCRIPTIONS, Permission

router = APIRouter()


@router.get("/healthz", tags=["meta"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["meta"], summary="Database reachable, schema at head, keys usable")
def readyz(state: State) -> JSONResponse:
    from bastion.migrations.runner import current_revision, head_revision

    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            revision = current_revision(conn)
        checks["database"] = "ok"
        checks["schema"] = (
            "ok" if revision == head_revision() else f"at {revision}, head is {head_revision()}"
        )
    except Exception:  # readiness reports any failure as not ready
        checks["database"] = "unreachable"
    try:
        load_pepper(state.settings)
        checks["keys"] = "ok"
    except Exception:
        checks["keys"] = "unusable"
    body: dict[str, object] = {}
    writers = writer_stats(state.engine)
    if writers is not None:
        # A writer held past the limit is being rolled back by the watchdog: until then
        # every other write waits, so the instance is not ready.
        stuck = writers.oldest_hold_seconds > state.settings.database_write_hold_limit
        checks["writer"] = "stuck" if stuck else "ok"
        body["writer"] = asdict(writers)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks, **body},
        status_code=200 if ready else 503,
    )


JWKS_MAX_AGE = 300  # seconds a verifier may keep the key set before fetching it again


@router.get(
    "/.well-known/jwks.json",
    tags=["meta"],
    summary="The instance signing keys as a JSON Web Key Set (public, cacheable)",
)
def jwks(state: State) -> JSONResponse:
    """Every instance signing key (Ed25519, `EdDSA`) by `kid`: the active one signs OAuth
    access tokens, audit checkpoints and reports from now on; previous ones stay so what
    they signed keeps verifying (access tokens issued before a rotation, until they
    expire). Verifiers may cache it for `max-age`; a token naming an unknown `kid` is the
    cue to fetch it again."""
    return JSONResponse(
        state.signer.jwks(),
        media_type="application/jwk-set+json",
        headers={"cache-control": f"public, max-age={JWKS_MAX_AGE}"},
    )


@router.get("/v1/permissions", tags=["roles"], summary="The closed permission catalogue")
async def permissions(principal: Caller) -> dict[str, list[PermissionOut]]:
    return {
        "data": [
            PermissionOut(name=p.value, description=DESCRIPTIONS[p]) for p in sorted(Permission)
        ]
    }
