"""The one source of "now", so tests can move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """Wall clock in UTC. Tests swap in a frozen or offset clock via `set_offset`."""

    def __init__(self) -> None:
        self._offset_seconds = 0.0

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if self._offset_seconds:
            from datetime import timedelta

            now += timedelta(seconds=self._offset_seconds)
        return now

    def advance(self, seconds: float) -> None:
        self._offset_seconds += seconds

    def reset(self) -> None:
        self._offset_seconds = 0.0


clock = Clock()


def utcnow() -> datetime:
    return clock.now()


def as_utc(value: datetime) -> datetime:
    """Databases may hand back naive datetimes (SQLite); every stored time is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")
