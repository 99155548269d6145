"""A bounded, thread-safe least-recently-used map: what the process-wide memos keep their entries in.

Owns: :class:`BoundedLRU`, a mapping holding at most ``budget`` of weight (one per entry, or the
bytes an entry holds), the least recently used entry dropped first. Must not: decide what is worth
remembering (its users record only what a real check or decode produced).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedLRU"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """At most ``budget`` of weight, least recently used out first (0: holds nothing). Thread-safe."""

    __slots__ = ("_budget", "_entries", "_held", "_lock")

    def __init__(self, budget: int) -> None:
        self._budget = _checked(budget)
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return self._budget

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def resize(self, budget: int) -> None:
        """Hold at most ``budget`` from now on (0 empties it and keeps it empty)."""
        with self._lock:
            self._budget = _checked(budget)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keep ``value`` under ``key`` (replacing what was there), then drop the oldest past the budget."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= old[1]
            self._entries[key] = (value, weight)
            self._held += weight
            self._evict()

    def _evict(self) -> None:
        while self._held > self._budget:
            _key, (_value, weight) = self._entries.popitem(last=False)
            self._held -= weight


def _checked(budget: int) -> int:
    if budget < 0:
        raise ValueError(f"memo budget must be >= 0, got {budget}")
    return budget
