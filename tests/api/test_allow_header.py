"""A 405's `Allow` lists every method the path answers to (issue 12, finding 7), not only
those of the first route whose path matched: FastAPI has one route per method."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories import Factory

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, factory: Factory, app: FastAPI
) -> None:
    org = factory.org()
    response = client.put(f"/v1/orgs/{org.id}/teams", json={}, headers=org.headers)
    assert response.status_code == 405, response.text
    assert response.headers.get_list("allow") == ["GET, POST"]
    paths = app.openapi()["paths"]
    checked = 0
    for path in paths:
        url = path.replace("{org}", org.id)
        for part in [p for p in url.split("/") if p.startswith("{")]:
            url = url.replace(part, "x_unknown")
        # The methods of every path template this URL fits (`/audit-events/verify` is
        # also `/audit-events/{event}`, whose GET answers it).
        methods = {
            m.upper()
            for other, ops in paths.items()
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", other.replace("{org}", org.id)), url)
            for m in ops
        }
        missing = [m for m in METHODS if m not in methods]
        if not missing:
            continue
        response = client.request(missing[0], url, headers=org.headers)
        assert response.status_code == 405, (path, response.text)
        assert len(response.headers.get_list("allow")) == 1
        allow = set(response.headers["allow"].replace(" ", "").split(","))
        assert allow - {"HEAD"} == methods, (path, allow, methods)
        checked += 1
    assert checked > 30
