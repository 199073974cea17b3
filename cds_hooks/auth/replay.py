"""Remembering ``jti`` values so that a client JWT is never accepted twice (X7)."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol


class ReplayStore(Protocol):
    def seen(self, iss: str, jti: str, exp: float) -> bool:
        """Record ``(iss, jti)`` until ``exp`` (epoch seconds); True if it was already recorded."""
        ...


class InMemoryReplayStore:
    """Thread-safe ``jti`` memory with expiry purge. Per process: see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            exp, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == exp:
                del self._expiry[key]

    def seen(self, iss: str, jti: str, exp: float) -> bool:
        key = (iss, jti)
        with self._lock:
            now = self._clock()
            self._purge(now)
            if key in self._expiry:
                return True
            self._expiry[key] = exp
            heapq.heappush(self._heap, (exp, key))
            return False
