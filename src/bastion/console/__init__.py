"""The web console, at `/console/`: server-rendered pages (Jinja2) with a little plain
JavaScript served from here (`/console/static/…`), no build step, nothing from another
origin, a strict Content-Security-Policy (`bastion.console.security.CSP`, set by the
API's middleware on every console response).

An edge like `bastion.api`, below it in the layers: the API builds it with `build_app`
and mounts it, handing over the `Edge` (authentication, refusals and the unit of work
are the API's own). Pages live in `bastion.console.pages`, one module per page, each
with a `router` (an `APIRouter`) that is included here by discovery: adding a page
touches no shared file. A page of the navigation that no module serves yet answers with
its heading and "not yet available"."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from bastion.console import errors, nav, pages
from bastion.console.edge import Edge
from bastion.console.web import SignedIn, render

STATIC = Path(__file__).parent / "static"


def _page_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pages.__path__) if not m.ispkg)


def _placeholder(item: nav.Item) -> APIRouter:
    router = APIRouter()

    async def page(viewer: SignedIn) -> Response:
        return render(viewer, "placeholder.html", title=item.heading)

    router.add_api_route(item.path.removeprefix("/console"), page, methods=["GET"])
    return router


def build_app(edge: Edge) -> FastAPI:
    """The console as an ASGI app, to mount at `/console`."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.edge = edge
    errors.install(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for name in _page_modules():
        module = importlib.import_module(f"{pages.__name__}.{name}")
        app.include_router(module.router)
    served = {getattr(r, "path", None) for r in app.router.routes}
    for item in nav.ITEMS:
        if item.path.removeprefix("/console") not in served:
            app.include_router(_placeholder(item))
    return app
