"""The API docs work offline (issue 20): `/docs` and `/redoc` reference only this
origin's assets, and those assets are served."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

_URLS = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|url\(([^)]+)\)"""
)


def _references(html: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _URLS.finditer(html)]


@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"}),
    ("/redoc", {"/docs/assets/redoc.standalone.js"}),
])  # fmt: skip
def test_docs_pages_use_only_same_origin_assets(
    client: TestClient, page: str, assets: set[str]
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    refs = _references(html)
    assert assets <= set(refs), refs
    for ref in refs:
        parts = urlsplit(ref)
        assert not parts.scheme, f"{page} references {ref}"
        assert not parts.netloc, f"{page} references {ref}"
        assert ref.startswith("/"), ref
    # No third-party origin anywhere in the page (CDNs, fonts).
    assert not re.search(r"https?://|//cdn|fonts\.googleapis", html), html
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "http" not in csp
    for ref in refs:
        served = client.get(ref)
        assert served.status_code == 200, ref
        assert len(served.content) > 1000 or ref.endswith(".png"), ref
        if ref.endswith(".js"):
            assert served.headers["content-type"].startswith("text/javascript")
        elif ref.endswith(".css"):
            assert served.headers["content-type"].startswith("text/css")
        elif ref == "/openapi.json":
            assert served.json()["info"]["title"] == "Bastion"


def test_only_the_shipped_assets_are_served(client: TestClient) -> None:
    for name in ("../core.py", "..%2Fcore.py", "consts.py", "nope.js"):
        assert client.get(f"/docs/assets/{name}").status_code == 404


def test_docs_pages_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
