"""One sign-in email per instance across regions, with two real regions and a
directory: a user (an organisation's first admin by the CLI, or one made through the
API) cannot take an email a user of another region holds; the directory keeps only the
email's keyed hash; a claim whose user is gone passes on."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from bastion.core.db.regions import directory_emails, directory_orgs
from tests.tenancy.residency_setup import PASSWORD, Install


def _directory(install: Install, table: Any) -> list[Any]:
    engine = create_engine(install.directory)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table)).all())
    finally:
        engine.dispose()


def _users_with(url: str, email: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            sql = text("SELECT count(*) FROM users WHERE email_normalized = :e")
            return int(conn.execute(sql, {"e": email}).scalar_one())
    finally:
        engine.dispose()


def _new_user(client: TestClient, org: dict[str, Any], email: str) -> Any:
    return client.post(
        f"/v1/orgs/{org['org_id']}/users",
        json={"email": email, "name": "U", "role": "member", "password": PASSWORD},
        headers=org["headers"],
    )


def test_an_email_is_created_in_one_region_only(install: Install) -> None:
    eu = install.org("eu", "first@example.com")
    # The CLI: an organisation in the other region with the same admin email (any case).
    refused = install.cli(
        "org", "create", "Copy", "--admin-email", " First@Example.com ",
        "--admin-password-stdin", "--region", "us", stdin=PASSWORD + "\n", code=1,
    )  # fmt: skip
    assert "already exists" in refused.output
    assert _users_with(install.regions["us"], "first@example.com") == 0
    # … and its directory entry went with it (the organisation was never written).
    assert [r.region for r in _directory(install, directory_orgs)] == ["eu"]
    us = install.org("us", "second@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        made = _new_user(client, eu, "taken@example.com")
        assert made.status_code == 201, made.text
        # The API: a user of the other region's organisation with that email is a 409.
        for email in ("taken@example.com", "TAKEN@example.com", "first@example.com"):
            clash = _new_user(client, us, email)
            assert clash.status_code == 409, clash.text
            assert clash.json()["code"] == "conflict"
        # Within one region the database's unique email answers, as with one region.
        assert _new_user(client, eu, "second@example.com").status_code == 409
        assert _new_user(client, us, "free@example.com").status_code == 201
        # Every user signs in to their own region.
        for email in ("first@example.com", "taken@example.com", "free@example.com"):
            login = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, (email, login.text)
    for email in ("first@example.com", "taken@example.com", "second@example.com"):
        assert (
            _users_with(install.regions["eu"], email) + _users_with(install.regions["us"], email)
            == 1
        ), email
    # The directory holds one keyed hash per email, never the email.
    hashes = _directory(install, directory_emails)
    assert len(hashes) == 4
    assert {r.org_id for r in hashes} == {eu["org_id"], us["org_id"]}
    assert not any("@" in r.email_hash for r in hashes)


def test_a_user_made_before_the_directory_knew_is_found(install: Install) -> None:
    eu = install.org("eu", "early@example.com")
    us = install.org("us", "other@example.com")
    # As after residency was turned on over existing users: the directory has no hash.
    engine = create_engine(install.directory)
    with engine.begin() as conn:
        conn.execute(directory_emails.delete())
    engine.dispose()
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        clash = _new_user(client, us, "early@example.com")
        assert clash.status_code == 409, clash.text
        assert _new_user(client, eu, "later@example.com").status_code == 201


def test_a_claim_whose_user_is_gone_passes_on(install: Install) -> None:
    eu = install.org("eu", "admin-eu@example.com")
    us = install.org("us", "admin-us@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        made = _new_user(client, eu, "leaver@example.com")
        assert made.status_code == 201, made.text
        assert _new_user(client, us, "leaver@example.com").status_code == 409
        gone = client.delete(
            f"/v1/orgs/{eu['org_id']}/users/{made.json()['id']}", headers=eu["headers"]
        )
        assert gone.status_code == 204, gone.text
        moved = _new_user(client, us, "leaver@example.com")
        assert moved.status_code == 201, moved.text
        login = client.post(
            "/v1/auth/login", json={"email": "leaver@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        # Now the email is the other region's: the first cannot take it back.
        assert _new_user(client, eu, "leaver@example.com").status_code == 409
