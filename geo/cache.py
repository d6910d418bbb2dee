"""A short-lived cache of computed answers for the web app, computed once per key.

A month of a province takes a fraction of a second to classify and about a second to
render as a map page (bench/geo.py). Twenty officers opening the map at once must not
make twenty such computations: the first request of a key computes, the others wait
for it and get the same answer ("single flight"), and the answer is served for
``max_age_s`` seconds. Answers are therefore at most ``max_age_s`` old; the app says so
in a ``Cache-Control: max-age`` header, and an import through the API clears the cache.

``max_age_s`` = 0 turns the cache off: every request computes its own answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# How old an answer of `coverwatch serve` may be (--cache-s): a minute, the collector's
# rollup refresh period, so the map is as current as the rollups it reads.
DEFAULT_CACHE_S = 60.0


@dataclass
class _Entry(Generic[T]):
    value: T
    computed_at: float


class AnswerCache:
    """Answers by key, each computed at most once per ``max_age_s`` (see module doc)."""

    def __init__(
        self,
        max_age_s: float,
        *,
        max_entries: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age_s < 0:
            raise ValueError(f"max_age_s must be >= 0, got {max_age_s}")
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[Any]] = OrderedDict()
        self._in_flight: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.computations = 0  # for tests and metrics: how often compute ran

    def get(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, float]:
        """The answer for ``key`` and its age in seconds; ``compute`` runs only when
        there is no fresh answer and no other thread is computing it already. An
        exception from ``compute`` reaches its caller and is not kept (the callers that
        waited compute again)."""
        if self.max_age_s == 0:
            self.computations += 1
            return compute(), 0.0
        while True:
            with self._lock:
                fresh = self._fresh(key)
                if fresh is not None:
                    return fresh
                flight = self._in_flight.get(key)
                if flight is None:
                    flight = self._in_flight[key] = threading.Lock()
                    flight.acquire()
                    generation = self._generation
                    break
            # Another thread computes this key: wait for it, then look again.
            with flight:
                pass
            with self._lock:
                fresh = self._fresh(key)
            if fresh is not None:
                return fresh
        try:
            value = compute()
            with self._lock:
                self.computations += 1
                if self._generation == generation:
                    self._entries[key] = _Entry(value, self._clock())
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            return value, 0.0
        finally:
            with self._lock:
                del self._in_flight[key]
            flight.release()

    def clear(self) -> None:
        """Forget every answer (data changed); answers being computed are not kept."""
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def _fresh(self, key: Hashable) -> tuple[Any, float] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.computed_at
        if age >= self.max_age_s:
            del self._entries[key]
            return None
        return entry.value, age
