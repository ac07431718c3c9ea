from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from bastion.api.deps import Caller, State
from bastion.authz.permissions import DESCRIPTIONS, Permission
from bastion.authz.schemas import PermissionOut
from bastion.core.keyring import load_pepper

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
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/v1/permissions", tags=["roles"], summary="The closed permission catalogue")
async def permissions(principal: Caller) -> dict[str, list[PermissionOut]]:
    return {
        "data": [
            PermissionOut(name=p.value, description=DESCRIPTIONS[p]) for p in sorted(Permission)
        ]
    }
