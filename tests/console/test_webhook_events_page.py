"""An inbound endpoint's received events on the Webhooks pages over HTTP (in process):
what the gateway verified and stored, newest first, headers and body escaped; another
organisation's endpoint is not found."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.console.helpers import sign_in
from tests.factories import Factory
from tests.webhooks.test_gateway import create_endpoint, new_secret, post_hook, sign


def test_received_events_of_an_inbound_endpoint(factory: Factory) -> None:
    org = factory.org()
    other = factory.org("Other")
    secret = new_secret("generic")
    endpoint = create_endpoint(factory.client, org, "generic", secret)
    bodies = [
        json.dumps({"action": "first", "n": 1}).encode(),
        json.dumps({"action": "<script>alert(1)</script>", "n": 2}).encode(),
    ]
    for body in bodies:
        accepted = post_hook(factory.client, endpoint["url"], body, sign("generic", secret, body))
        assert accepted.status_code == 202, accepted.text
    theirs = create_endpoint(factory.client, other, "generic", new_secret("generic"))

    member = factory.member(org, "member")  # webhooks:read
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, member.email)
    listing = client.get("/console/webhooks")
    assert listing.status_code == 200
    assert f'href="/console/webhooks/endpoints/{endpoint["id"]}"' in listing.text
    page = client.get(f"/console/webhooks/endpoints/{endpoint['id']}")
    assert page.status_code == 200, page.text
    assert "<h1>Webhook events</h1>" in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    # Newest first, each with its digest; the signature header is not kept.
    assert page.text.index("&lt;script&gt;") < page.text.index("&#34;first&#34;")
    api = factory.client.get(
        f"/v1/orgs/{org.id}/webhook-endpoints/{endpoint['id']}/events", headers=org.headers
    ).json()["data"]
    shown = [line.split('id="event-')[1].split('"')[0] for line in page.text.splitlines()
             if 'id="event-' in line]  # fmt: skip
    assert [e["id"] for e in api] == shown
    for event in api:
        assert event["body_sha256"] in page.text
    assert "x-signature" not in page.text.lower()
    assert client.get(f"/console/webhooks/endpoints/{theirs['id']}").status_code == 404
    assert client.get(f"/console/webhooks/endpoints/{endpoint['id']}?cursor=%%%").status_code == 422
