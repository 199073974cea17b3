"""The garbage-collector policy for request and batch work: no cyclic collection while a parsed body is alive.

Why: a hook call parses a prefetch of up to 20,000 resources into hundreds of thousands of dicts and lists.
CPython's cyclic collector counts those allocations and runs full collections over them again and again while
the tree is being built and read (measured: 39x the resources cost 195x the time; with the collector off the
cost per resource stays flat, see docs/performance.md). Parsed JSON holds no reference cycles, so reference
counting frees it the moment the call ends; the cyclic collector has nothing to find in it.

Policy: the collector is switched off while any paused block runs (:func:`collector_paused`, thread-safe and
reentrant: a counter, off on the first entry, back on when the last block leaves). What the work itself leaves
in cycles is young, so it is collected by the first generation-0 collection after the collector is back on.
Memory stays bounded when blocks overlap without a gap (a busy threaded server): a block that leaves after the
collector has been off for longer than :data:`MAX_PAUSE_S` runs one generation-0 collection itself (everything
allocated during a pause is in generation 0 until the next collection).
A caller that turned the collector off itself keeps it off.
"""
from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

MAX_PAUSE_S = 1.0

_lock = threading.Lock()
_active = 0
_restore = False        # the collector was on when the first block entered: turn it back on at the end
_since = 0.0            # when the collector was last switched off (or collected) by this policy


@contextlib.contextmanager
def collector_paused(max_pause_s: float = MAX_PAUSE_S) -> Iterator[None]:
    """Run the block with the cyclic garbage collector off (see the module's docstring)."""
    global _active, _restore, _since
    with _lock:
        if _active == 0:
            _restore = gc.isenabled()
            _since = time.monotonic()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                if _restore:
                    gc.enable()
            elif time.monotonic() - _since >= max_pause_s:
                gc.collect(0)  # other blocks keep it off: collect what this stretch left behind
                _since = time.monotonic()


class PausedCollectorMiddleware:
    """WSGI middleware: each request runs in :func:`collector_paused` (the body is built before it returns)."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        with collector_paused():
            return self.app(environ, start_response)
