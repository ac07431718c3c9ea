"""Structured logs (structlog). Every event passes through the redaction processor."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from bastion.core.redact import redact


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return redact(event)


class _Stderr:
    """structlog's output: one line per event on standard error, as the standard library's
    logging writes, looked up at each write (a test may swap the stream). Never standard
    output: the CLI's `--json` answers go there, and a log line from any thread would
    corrupt them (seen: a background notifier's warning inside `bastion user … --json`)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg
    log = msg


def _stderr_logger(*_args: Any) -> _Stderr:
    return _Stderr()


def configure_logging(level: str = "info", json: bool = True) -> None:
    logging.basicConfig(format="%(message)s", level=level.upper())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
