"""SCIM's errors (RFC 7644 §3.12): each carries its HTTP status and `scimType`. They are
`BastionError`s, so the one handler renders them; on `/scim/v2` every error (these and
any other) leaves as a SCIM error document (`bastion.api.routers.scim`)."""

from __future__ import annotations

from bastion.core.errors import BastionError


class ScimError(BastionError):
    status = 400
    code = "scim_error"
    title = "Bad request"

    def __init__(self, detail: str, *, status: int = 400, scim_type: str | None = None):
        super().__init__(detail)
        self.status = status
        self.scim_type = scim_type


def invalid_value(detail: str) -> ScimError:
    return ScimError(detail, scim_type="invalidValue")


def invalid_syntax(detail: str) -> ScimError:
    return ScimError(detail, scim_type="invalidSyntax")


def invalid_filter(detail: str) -> ScimError:
    return ScimError(detail, scim_type="invalidFilter")


def invalid_path(detail: str) -> ScimError:
    return ScimError(detail, scim_type="invalidPath")


def no_target(detail: str) -> ScimError:
    return ScimError(detail, scim_type="noTarget")


def mutability(detail: str) -> ScimError:
    return ScimError(detail, scim_type="mutability")


def uniqueness(detail: str) -> ScimError:
    return ScimError(detail, status=409, scim_type="uniqueness")


def not_found(detail: str) -> ScimError:
    return ScimError(detail, status=404)


def precondition_failed() -> ScimError:
    return ScimError("the resource changed since the version given in If-Match", status=412)
