"""The API's documentation pages, served with no third-party origin: Swagger UI at
`/docs` and ReDoc at `/redoc`, their scripts, styles and icon from `/docs/assets/`,
taken from the `fastapi-offline` package (which ships Swagger UI's and ReDoc's
release files). An offline or air-gapped install gets working docs; the pages'
Content-Security-Policy (`bastion.api.middleware`) allows only this origin."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
_STATIC = files("fastapi_offline") / "static"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_cache: dict[str, bytes] = {}

router = APIRouter(include_in_schema=False)


def _title() -> str:
    return "Bastion API"


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{_title()} (Swagger UI)",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{_title()} (ReDoc)",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS + "/{name}")
def asset(name: str) -> Response:
    """One of the four files; anything else is 404 (no path is built from input)."""
    media_type = _MEDIA_TYPES.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = (_STATIC / name).read_bytes()
    return Response(body, media_type=media_type, headers={"cache-control": "public, max-age=86400"})
