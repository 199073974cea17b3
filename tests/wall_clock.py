"""pytest plugin: run the suite as if today were another day (no test may depend on the real clock).

``CRAMP_TEST_WALL_CLOCK=YYYY-MM-DD`` moves the wall clock of the whole test session to that day with
time-machine (``datetime.now``, ``date.today``, ``time.time``; the clock keeps ticking, monotonic clocks are
untouched). ``tests/test_clock.py`` runs the date-sensitive tests (marker ``date_sensitive``: they go
through code that reads the wall clock, e.g. the service's "now" or the batch review's default ``--as-of``)
two years ahead this way, so a test that would start failing when its data ages out fails today instead.

``frozen_now`` is for tests whose expectations depend on "now": it freezes the wall clock at
``tests.builders.NOW`` (the day the samples and the hand-written resources are dated around).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import time_machine

from tests.builders import NOW

ENV = "CRAMP_TEST_WALL_CLOCK"


def shifted_day() -> date | None:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise pytest.UsageError(f"{ENV} must be a day, YYYY-MM-DD, not {value!r}") from None


@pytest.fixture(scope="session", autouse=True)
def _shifted_wall_clock() -> Iterator[date | None]:
    day = shifted_day()
    if day is None:
        yield None
        return
    with time_machine.travel(datetime(day.year, day.month, day.day, 12, tzinfo=UTC), tick=True):
        yield day


def pytest_terminal_summary(terminalreporter) -> None:
    day = shifted_day()
    if day is not None:
        terminalreporter.write_line(f"{ENV}: wall clock moved to {day.isoformat()}")


@pytest.fixture
def frozen_now() -> Iterator[datetime]:
    """The wall clock stands still at ``NOW`` for this test (threads such as a loopback server too)."""
    with time_machine.travel(NOW, tick=False):
        yield NOW
