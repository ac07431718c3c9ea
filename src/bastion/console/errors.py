"""How the console answers a refusal: an HTML page with the status the API would give
(so the request's unit of work rolls back), after the refusal's audit trace is queued
by the API's own handler (`Edge.refused`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.console import security
from bastion.console.web import (
    ENROL,
    SIGN_IN,
    CsrfRefused,
    EnrolmentOwed,
    FormRefused,
    SignInNeeded,
    Viewer,
    edge_of,
    parse_form,
    render,
    safe_path,
)
from bastion.core.errors import (
    BastionError,
    FieldError,
    InvalidInput,
    MfaEnrolmentRequired,
    StepUpRequired,
    Unauthenticated,
)

_SAFE = frozenset({"GET", "HEAD"})


def _bare_viewer(request: Request) -> Viewer:
    """A viewer for an error page: the principal the request authenticated, if any."""
    edge = edge_of(request)
    browser = security.read_cookie(request, edge.app.settings, "browser")
    principal = edge.unit(request).principal
    return Viewer(request, edge, principal, browser or security.new_browser_value(), not browser)


async def _back(request: Request) -> str:
    """The page to go back to: this one (GET), or the page whose form was posted."""
    if request.method in _SAFE:
        return safe_path(request.url.path, "/console/")
    try:
        return safe_path((await parse_form(request))[0].get("back"), "/console/")
    except (CsrfRefused, BastionError):
        return "/console/"


async def _problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    back: str | None = None,
) -> Response:
    viewer = _bare_viewer(request)
    return render(
        viewer,
        "problem.html",
        status=status,
        headers=headers,
        title=title,
        detail=detail,
        errors=errors or [],
        back=back or await _back(request),
    )


def _next(request: Request) -> str:
    return safe_path(request.url.path, "/console/")


async def on_sign_in_needed(request: Request, exc: Exception) -> Response:
    if request.method in _SAFE:
        response: Response = RedirectResponse(f"{SIGN_IN}?next={_next(request)}", status_code=303)
    else:
        response = await _problem(
            request, 401, "Signed out", "Your session has ended. Sign in again, then retry."
        )
    security.clear_cookie(response, edge_of(request).app.settings, "session")
    return response


async def on_csrf(request: Request, exc: Exception) -> Response:
    return await _problem(
        request,
        403,
        "Form refused",
        "This form did not come from this console page, or it has expired. Reload the"
        " page and try again.",
    )


async def on_enrolment_owed(request: Request, exc: Exception) -> Response:
    if request.method in _SAFE:
        return RedirectResponse(ENROL, status_code=303)
    return await _problem(
        request,
        403,
        "Second factor required",
        "Your organisation requires a second factor: set one up on the Security page first.",
        back=ENROL,
    )


async def on_domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, BastionError):  # registered for this type only
        raise exc
    edge = edge_of(request)
    await edge.refused(request, exc)
    if isinstance(exc, FormRefused):
        return exc.page
    if isinstance(exc, StepUpRequired):
        back = await _back(request)
        return render(
            _bare_viewer(request),
            "step_up.html",
            status=401,
            headers={"www-authenticate": exc.challenge},
            title="Confirm it's you",
            path=back,  # the step-up form's `back`: the page to repeat the action on
            back=back,
            max_age=exc.max_age,
        )
    if isinstance(exc, MfaEnrolmentRequired):
        return await on_enrolment_owed(request, exc)
    if isinstance(exc, Unauthenticated) and exc.code == "unauthenticated":
        return await on_sign_in_needed(request, exc)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return await _problem(request, exc.status, exc.title, exc.detail, exc.errors, headers)


async def on_validation(request: Request, exc: Exception) -> Response:
    """A form value the API's schema refuses: 422 naming the fields, never their values."""
    raw = exc.errors() if isinstance(exc, ValidationError | RequestValidationError) else []
    errors = []
    for err in raw:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        message = "is invalid" if err.get("type") not in _PLAIN else str(err.get("msg"))
        errors.append(FieldError(".".join(loc) or "form", message))
    problem = InvalidInput(
        "invalid fields: " + ", ".join(sorted({e.field for e in errors})), errors=errors
    )
    await edge_of(request).refused(request, problem)
    return await _problem(request, 422, problem.title, problem.detail, errors)


# Pydantic messages that never quote the input.
_PLAIN = frozenset({"missing", "string_too_short", "string_too_long", "extra_forbidden"})


async def on_http(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    titles = {404: "Not found", 405: "Method not allowed"}
    return await _problem(
        request, status, titles.get(status, "Error"), "There is nothing to do here."
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(SignInNeeded, on_sign_in_needed)
    app.add_exception_handler(CsrfRefused, on_csrf)
    app.add_exception_handler(EnrolmentOwed, on_enrolment_owed)
    app.add_exception_handler(BastionError, on_domain_error)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
