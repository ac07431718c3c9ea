"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis):
no input yields a 5xx, and every 4xx is an RFC 9457 problem document (OAuth's own
endpoints answer RFC 6749 §5.2 error objects instead, as OAuth clients expect).

Operations are driven directly with their hypothesis strategies (schemathesis' pytest
plugin does not support this pytest version), each with a fixed budget of examples,
derandomized so a failure reproduces.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import Factory, Org

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id", "errors"}
OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unsupported_grant_type",
    "invalid_scope",
}
EXAMPLES = 30

# A sandbox workspace's base is a gzip tar (`PUT …/workspaces/{wks}/files`): any bytes,
# sometimes a gzip header in front.
schemathesis.openapi.media_type(
    "application/gzip", st.one_of(st.binary(max_size=512), st.binary().map(b"\x1f\x8b\x08".__add__))
)
ORG_DELETE = "DELETE /v1/orgs/{org}"


@pytest.fixture(scope="module")
def fuzz_org(app, client: TestClient) -> Org:  # type: ignore[no-untyped-def]
    return Factory(app.state.bastion, client).org("Fuzz")


@pytest.fixture(scope="module")
def operations(app) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


RETRYABLE = frozenset({"data_key_changed", "database_busy"})


def _check(case: Any, org: Org, statuses: list[int]) -> None:
    if case.path_parameters and "org" in case.path_parameters:
        case.path_parameters["org"] = org.id  # reach past the tenant check
    if case.formatted_path.endswith("/stream"):
        # An event stream stays open for its duration (300 s unless given, up to an
        # hour): fuzz the parameter's validation, but let a stream that opens end at once.
        case.query = case.query or {}
        duration = case.query.get("duration", 300)
        if isinstance(duration, int | float) and 1 <= duration <= 3600:
            case.query["duration"] = 1
    response = case.call(headers=org.headers)
    statuses.append(response.status_code)
    where = f"{case.method} {case.formatted_path}"
    if response.status_code == 503 and response.json().get("code") in RETRYABLE:
        # A write that raced the app's own background work (the fuzzed key rotation's
        # re-encryption, the writer slot): a retryable answer, never a broken one.
        assert response.headers.get("retry-after"), f"{where}: {response.text[:500]}"
        return
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    oauth = case.formatted_path.startswith("/v1/oauth/")
    if oauth and response.status_code in (400, 401):
        assert response.json().get("error") in OAUTH_ERRORS, f"{where}: {response.text}"
    elif 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/problem+json"), f"{where}: {response.text}"
        body = response.json()
        assert set(body) >= PROBLEM_FIELDS, f"{where}: {body}"
        assert body["status"] == response.status_code


def test_every_operation_is_fuzzed(operations: dict[str, Any]) -> None:
    assert len(operations) >= 40  # guards against an empty or broken schema load


def test_no_input_breaks_the_api(operations: dict[str, Any], fuzz_org: Org) -> None:
    failures: list[str] = []
    statuses: list[int] = []
    # Deleting the organisation ends every credential of it: fuzz that last.
    ordered = sorted(operations.items(), key=lambda item: (item[0] == ORG_DELETE, item[0]))
    for label, operation in ordered:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            _check(case, fuzz_org, statuses)

        try:
            run()
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
    assert failures == []
    # The fuzzing must reach past authentication and validation, not only bounce off them.
    assert sum(200 <= s < 300 for s in statuses) > len(operations) * 5
