"""No input makes /scim/v2 answer 500 or anything but SCIM: random JSON bodies for every
write, random filters, paths and query parameters."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import unique_email
from tests.scim.conftest import GROUP_URN, PATCH_URN, USER_URN, Scim

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from(
    [
        "userName",
        "active",
        "emails",
        "name",
        "displayName",
        "members",
        "externalId",
        'emails[type eq "work"].value',
        "name.givenName",
        "id",
        "meta",
        "schemas",
        f"{USER_URN}:title",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ]
)
OPS = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "Replace", "x"])},
    optional={"path": NAMES | st.text(max_size=30), "value": JSON},
)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _ok(response: Any, also: int = 0) -> None:
    assert response.status_code < 500 or response.status_code == also, response.text
    assert response.headers.get("content-type", "application/scim+json").startswith(
        "application/scim+json"
    ), response.headers
    if response.status_code >= 400:
        assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


@FUZZ
@given(body=st.dictionaries(NAMES, JSON, max_size=6))
def test_user_bodies(scim: Scim, body: dict[str, Any]) -> None:
    _ok(scim.post("/Users", {"schemas": [USER_URN], **body}))
    _ok(scim.put(f"/Users/{scim.org.admin.user_id}", {"schemas": [USER_URN], **body}))
    _ok(scim.post("/Groups", {"schemas": [GROUP_URN], **body}))


@FUZZ
@given(ops=st.lists(OPS, min_size=1, max_size=4))
def test_patches(scim: Scim, ops: list[dict[str, Any]]) -> None:
    email = unique_email("fz")
    target = scim.post("/Users", {"schemas": [USER_URN], "userName": email})
    uid = target.json()["id"]
    _ok(
        scim.client.patch(
            f"/scim/v2/Users/{uid}",
            json={"schemas": [PATCH_URN], "Operations": ops},
            headers=scim.headers,
        )
    )
    scim.delete(f"/Users/{uid}")


@FUZZ
@given(text=st.text(max_size=200), start=st.text(max_size=6), count=st.text(max_size=6))
def test_queries(scim: Scim, text: str, start: str, count: str) -> None:
    params = {"filter": text, "startIndex": start, "count": count, "attributes": text}
    _ok(scim.get("/Users", params=params))
    _ok(scim.get("/Groups", params=params))


@FUZZ
@given(body=JSON)
def test_any_json_anywhere(scim: Scim, body: Any) -> None:
    for path in ("/Users", "/Groups", "/Users/.search"):
        _ok(scim.client.post(f"/scim/v2{path}", json=body, headers=scim.headers))
    # across resource types: not implemented (RFC 7644 §3.4.3), never a crash
    _ok(scim.client.post("/scim/v2/.search", json=body, headers=scim.headers), also=501)
    _ok(
        scim.client.patch(
            f"/scim/v2/Users/{scim.org.admin.user_id}", json=body, headers=scim.headers
        )
    )
