"""The region of a request (data residency, `bastion.core.db.regions`): named once at the
edge, before any database work, from the organisation in the path, else the credential
(the row id every Bastion token carries), else the sign-in's email or token in the body.
Cached lookups, dropped on every worker within about a second of an organisation's move
(the directory's routing revision, re-read here when due). A request nothing routes
runs in the first region, where another region's organisation has no row: it finds
nothing (404), and a write for one is refused by the database (the residency guards).
Only installs with `BASTION_REGIONS` come here."""

from __future__ import annotations

import json
import re

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from bastion.api.problems import BUSY_RETRY_AFTER, encode, problem_body, problem_headers
from bastion.core.db.regions import CURRENT, Regions, RegionUnavailable
from bastion.identity.tokens import parse

_ORG_IN_PATH = re.compile(r"/v1/orgs/(org_[0-9A-Z]{26})(?:/|$)")


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _lookup(regions: Regions, org_id: str) -> str | None:
    cached = regions.cached_region_of(org_id)
    if cached is not None:
        return cached
    return await run_in_threadpool(regions.region_of, org_id)


def _credential_region(regions: Regions, token: str) -> str | None:
    parsed = parse(token)
    return regions.region_of_credential(parsed.row_id) if parsed is not None else None


async def route(regions: Regions, path: str, headers: dict[bytes, str]) -> bool:
    """`_route`; False when the region cannot be known now (a database down)."""
    try:
        await _route(regions, path, headers)
    except (RegionUnavailable, OperationalError, PoolTimeout):
        return False
    return True


def unavailable(request_id: str) -> tuple[int, dict[str, str], bytes]:
    """503 for a request whose region (or the directory) does not answer: nothing was
    done; other regions' organisations are served as usual."""
    detail = "the database of this organisation's region is unavailable; retry shortly"
    body = problem_body(503, "region_unavailable", "Service unavailable", detail, request_id)
    headers = problem_headers(None, 503)
    headers["retry-after"] = str(BUSY_RETRY_AFTER)
    return 503, headers, encode(body)


async def _route(regions: Regions, path: str, headers: dict[bytes, str]) -> None:
    """Set the request's region (`CURRENT`): the caller's first, since a caller acts only
    in its own organisation (another's in the path is 404 there, as with one region),
    else the organisation in the path (sign-in flows, SCIM, SSO callbacks)."""
    if regions.recheck_due():  # an organisation moved: drop the cached routes
        await run_in_threadpool(regions.recheck)
    region = None
    token = _bearer(headers.get(b"authorization"))
    if token is not None:
        parsed = parse(token)
        if parsed is not None:
            region = regions.cached_region_of_credential(parsed.row_id)
            if region is None:
                region = await run_in_threadpool(regions.region_of_credential, parsed.row_id)
    if region is None:
        found = _ORG_IN_PATH.match(path)
        if found is not None:
            region = await _lookup(regions, found.group(1))
    CURRENT.set(region)


async def route_sign_in(regions: Regions, body: bytes) -> bool:
    """`_route_sign_in`; False when the region cannot be known now (a database down)."""
    try:
        await _route_sign_in(regions, body)
    except (RegionUnavailable, OperationalError, PoolTimeout):
        return False
    return True


async def _route_sign_in(regions: Regions, body: bytes) -> None:
    """For `/v1/auth/…` bodies: the region of the email signing in, or of the one-time
    token (setup, password reset, second factor) presented. Unknown: unchanged."""
    try:
        document = json.loads(body)
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    region = None
    email = document.get("email")
    if isinstance(email, str) and len(email) <= 320:
        region = await run_in_threadpool(regions.region_of_email, email)
    for field in ("token", "mfa_token"):
        value = document.get(field)
        if region is None and isinstance(value, str) and len(value) <= 512:
            region = await run_in_threadpool(_credential_region, regions, value)
    if region is not None:
        CURRENT.set(region)
