"""No test depends on the real clock (issue 18): the date-sensitive tests pass as of two years from today.

Tests whose expectations depend on "now" pass it (``plugin.review(now=...)``, ``--as-of``) or freeze it
(``frozen_now``, tests/wall_clock.py). This check re-runs every test marked ``date_sensitive`` in a
subprocess whose wall clock is moved two years ahead, so a test that would start failing once its data ages
out of a lookback fails today instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.conftest import ROOT
from tests.wall_clock import ENV, shifted_day


@pytest.mark.slow
def test_date_sensitive_tests_pass_two_years_ahead():
    if shifted_day() is not None:
        pytest.skip(f"already running with {ENV} set")
    ahead = date.today() + timedelta(days=2 * 365)
    env = {**os.environ, ENV: ahead.isoformat()}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "date_sensitive", "-x"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert f"wall clock moved to {ahead.isoformat()}" in result.stdout, report
    assert " passed" in result.stdout.splitlines()[-1], report


@pytest.mark.date_sensitive
def test_the_moved_wall_clock_is_the_one_code_reads():
    day = shifted_day()
    if day is None:
        pytest.skip(f"only meaningful with {ENV} set (tests/test_clock.py sets it)")
    assert datetime.now(UTC).date() >= day and date.today() >= day
