"""The in-process store: entries and Vary records in a cachetools LRU bounded by accounted bytes.

A store is ``get``, ``put``, ``delete`` and ``purge`` (and ``health``, what it reports of itself).
Each value is kept with the time after which it is dropped (its retention), so a stale entry lingers
only as long as it can be revalidated or stand in for a failing upstream; an entry is accounted at
its ``size``, and evictions are reported through ``on_event``. cachetools is not thread-safe by
itself: one lock around it all. This store belongs to one process; the workers of one bridge share a
herd through ``herd.LocalLocks`` and purges through ``purge.PurgeLog``, not through here.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import cachetools

from .entry import ENTRY_OVERHEAD, CacheEntry, Vary
from .purge import Scope

Clock = Callable[[], float]
Stored = CacheEntry | Vary


class _BytesLRU(cachetools.LRUCache):
    """An LRU whose evictions are reported (cachetools evicts through ``popitem``)."""

    def __init__(self, maxsize: int, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize, getsizeof=_value_size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_evict()
        return item


def _value_size(value: tuple[float, Stored]) -> int:
    stored = value[1]
    if isinstance(stored, CacheEntry):
        return stored.size
    return ENTRY_OVERHEAD + sum(sys.getsizeof(name) for name in stored.names)


class MemoryStore:
    name = "memory"

    def __init__(self, max_bytes: int, clock: Clock = time.time,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        self._on_event = on_event or (lambda name: None)
        self._lru = _BytesLRU(max_bytes, lambda: self._on_event("eviction"))
        self._lock = threading.Lock()

    def get(self, key: str) -> Stored | None:
        with self._lock:
            try:
                value = self._lru[key]  # not .get(): that asks ``in`` first, a second lookup
            except KeyError:
                return None
            if value[0] <= self.clock():
                del self._lru[key]
                return None
            stored: Stored = value[1]
            return stored

    def put(self, key: str, value: Stored, retain: float, *,
            replacing: CacheEntry | None = None) -> None:
        """Keep ``value`` for ``retain`` seconds. With ``replacing``, only while that very entry is
        the one kept (an entry that gained its script JSON is accounted again, never revived)."""
        with self._lock:
            if replacing is not None:
                current = self._lru.get(key)
                if current is None or current[1] is not replacing:
                    return
            try:
                self._lru[key] = (self.clock() + retain, value)
            except ValueError:
                self._lru.pop(key, None)  # larger than the whole cache: not stored

    def delete(self, key: str) -> None:
        with self._lock:
            self._lru.pop(key, None)

    def purge(self, scope: Scope) -> list[str]:
        """Drop every entry in ``scope``; the keys dropped."""
        with self._lock:
            dropped = [key for key, (_, stored) in list(self._lru.items())
                       if isinstance(stored, CacheEntry) and scope.matches(stored.address, stored.tags)]
            for key in dropped:
                del self._lru[key]
        return dropped

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": "memory", "entries": len(self._lru),
                    "bytes": int(self._lru.currsize), "max_bytes": self.max_bytes}
