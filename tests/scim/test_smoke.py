from __future__ import annotations

from tests.factories import unique_email
from tests.scim.conftest import Scim


def test_create_and_get(scim: Scim) -> None:
    email = unique_email("okta")
    created = scim.user(email, name={"givenName": "Ann", "familyName": "Lee"}, externalId="00u1")
    got = scim.get(f"/Users/{created['id']}")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("application/scim+json")
    assert got.json()["userName"] == email
    listed = scim.get("/Users", params={"filter": f'userName eq "{email}"'})
    assert listed.json()["totalResults"] == 1, listed.text
