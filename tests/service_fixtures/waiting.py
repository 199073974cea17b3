"""Waiting for a server the test started as a subprocess: until a URL answers 200, or the process dies."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import requests


def wait_until_answering(proc: subprocess.Popen, url: str, *, seconds: float = 60,
                         ready: Callable[[], bool] = lambda: True, log: Callable[[], str] = lambda: "") -> None:
    """Poll `url` until it answers 200 and `ready()` holds; AssertionError (with the end of `log()`) if the
    process exits first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {log()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200 and ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not answer {url} within {seconds:.0f} s: {log()[-3000:]}")
