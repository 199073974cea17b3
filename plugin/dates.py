"""FHIR date / dateTime handling: partial dates, time zones, and comparisons against `now`."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def parse_when(value: object) -> datetime | None:
    """A FHIR date or dateTime ("2024", "2024-03", "2024-03-02", "2024-03-02T10:00:00+01:00") as aware UTC.

    Partial dates take their first instant; naive times are read as UTC. Anything else is None.
    """
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None


def day(value: str | None) -> str | None:
    """The calendar-day part of a FHIR date-time, for people to read."""
    return value[:10] if value else None


def within(value: str | None, now: datetime, *, days: int) -> bool:
    when = parse_when(value)
    return when is not None and now - timedelta(days=days) <= when <= now + timedelta(days=1)


def months_to_days(months: int) -> int:
    return round(months * 30.44)
