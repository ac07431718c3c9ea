"""One log line per HTTP request (logger `bastion.request`, level INFO).

Fields: `time` (RFC 3339, UTC), `level`, `event` ("request"), `request_id`, `method`,
`route` (the route's template, e.g. `/v1/orgs/{org_id}/teams`, never the raw path, so
no identifier or token in a URL reaches the log; null when no route matched), `status`,
`duration_ms`, `principal_id` and `org_id` (null when unauthenticated). Never a header,
query string, body or secret.

Format: BASTION_LOG_FORMAT=json (one JSON object a line, the default) or text; with
BASTION_LOG_LEVEL above info (logger `bastion.request`) the line is not built at all.

Cost: the line is written straight to stderr (where the other logs go), one `write` of
one line (atomic between worker processes: under PIPE_BUF), not through a `logging`
record and handler, which cost several times more; its values are all known-safe
(validated request id, HTTP method token, our route templates and ids), so it is built
with one f-string, and the time's seconds are formatted once a second.
docs/observability.md gives the measured figure.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from bastion.api.context import RequestContext

LOGGER = "bastion.request"
LEAN_ROUTE_KEY = "bastion.route"  # the scope key of a lean route's template
log = logging.getLogger(LOGGER)


def route_template(scope: dict[str, Any] | Any) -> str | None:
    """The template of the route that served the request (set by Starlette's router, or
    by the middleware for a lean route), or None when none matched."""
    route = scope.get("route")
    if route is None:
        return scope.get(LEAN_ROUTE_KEY)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


class RequestLog:
    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self.json = json
        self.stream = stream  # None: sys.stderr at the time of writing
        self._second = -1
        self._prefix = ""

    @property
    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"

    def emit(self, ctx: RequestContext, route: str | None, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        principal = ctx.principal
        principal_id = principal.id if principal is not None else None
        org_id = principal.org_id if principal is not None else None
        method = ctx.method if ctx.method.isalpha() else json.dumps(ctx.method)[1:-1]
        if self.json:
            line = (
                f'{{"time":"{self._time()}","level":"info","event":"request",'
                f'"request_id":"{ctx.request_id}","method":"{method}",'
                f'"route":{_quoted(route)},"status":{status},"duration_ms":{duration_ms},'
                f'"principal_id":{_quoted(principal_id)},"org_id":{_quoted(org_id)}}}\n'
            )
        else:
            line = (
                f"{self._time()} info request {ctx.request_id} {method} {route or '-'} "
                f"{status} {duration_ms}ms principal={principal_id or '-'} org={org_id or '-'}\n"
            )
        (self.stream or sys.stderr).write(line)
