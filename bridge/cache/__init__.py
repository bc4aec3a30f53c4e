"""The cache under both paths, policy apart from storage: what is kept, for how long, and where.

``key.py`` derives an entry's keys from the forwarded request; ``freshness.py`` is RFC 9111 as pure
functions of headers and a clock; ``status.py`` is RFC 9211 ``Cache-Status`` as data; ``entry.py`` is
one stored answer. A store keeps values by key and nothing else: ``memory.py`` (an LRU bounded by
accounted bytes, per process) or ``redis.py`` (shared by instances); ``serialize.py`` turns entries into
bytes for Redis and the handoff. ``herd.py`` lets one request per key reach the upstream, through a
process's single flight and a lock across processes (``handoff.py`` for the workers of one bridge).
``Cache`` holds the store, the locks, the settings and the clock; the gateway (``proxy/gateway.py``)
drives it. Nothing here talks to upstreams or knows Flask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..config import CacheConfig, Config
from .entry import ENTRY, VARY, CacheEntry, Vary
from .handoff import WorkerHandoff
from .herd import FetchLocks, LocalLocks, RedisLocks, SingleFlight
from .memory import MemoryStore
from .redis import RedisConnection, RedisStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EventHook = Callable[[str], None]
# The names ``on_event`` is called with; the metrics count them.
EVENTS = ("hit", "miss", "stored", "stale", "revalidated", "collapsed", "eviction",
          "redis_down", "redis_up", "refresh", "refresh_failed")


class Store(Protocol):
    """Where entries and Vary records live: get, put, delete. Every method answers (None) instead of
    raising when the store is unreachable: a cache that is down is a cache that misses."""

    name: str

    def get(self, key: str) -> CacheEntry | Vary | None: ...

    def put(self, key: str, value: CacheEntry | Vary, retain: float, *,
            replacing: CacheEntry | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def health(self) -> dict[str, Any]: ...


class Cache:
    """The store, the locks across processes, the settings and the clock, and this process's flight."""

    def __init__(self, settings: CacheConfig, store: Store, clock: Clock = time.time,
                 on_event: EventHook | None = None, locks: FetchLocks | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_event = on_event or (lambda name: None)
        self.locks: FetchLocks = locks or LocalLocks(None)
        self.flight = SingleFlight()

    @classmethod
    def from_config(cls, config: Config, clock: Clock = time.time,
                    on_event: EventHook | None = None) -> Cache:
        settings = config.cache
        hook = on_event or (lambda name: None)

        # The store reports through the cache's hook, so replacing ``cache.on_event`` reaches both.
        def relay(name: str) -> None:
            cache.event(name)

        store: Store
        locks: FetchLocks
        if settings.backend == "memory":
            # Several workers of this bridge share one herd lock and hand entries over (handoff.py).
            handoff = None
            if config.server.workers > 1:
                try:
                    handoff = WorkerHandoff()
                except OSError as exc:  # no writable temporary directory: each worker on its own
                    log.warning("cache: no worker handoff (%s); a herd costs one upstream request per "
                                "worker", exc)
            store, locks = MemoryStore(settings.max_bytes, clock, relay), LocalLocks(handoff)
        else:
            connection = RedisConnection(settings.backend, clock, relay)
            store, locks = RedisStore(connection), RedisLocks(connection)
        cache = cls(settings, store, clock, hook, locks)
        return cache

    # --- entries and Vary records, by the keys ``key.py`` derives ---

    def entry(self, key: str) -> CacheEntry | None:
        found = self.store.get(ENTRY + key)
        return found if isinstance(found, CacheEntry) else None

    def vary(self, primary: str) -> tuple[str, ...] | None:
        found = self.store.get(VARY + primary)
        return found.names if isinstance(found, Vary) else None

    def keep(self, key: str, entry: CacheEntry) -> None:
        """Store ``entry`` until its ``retain_until``, and leave it for other processes waiting."""
        self.store.put(ENTRY + key, entry, entry.retain_until - self.clock())
        self.locks.leave(key, entry)

    def keep_vary(self, primary: str, names: tuple[str, ...], retain: float) -> None:
        self.store.put(VARY + primary, Vary(names), retain)

    def renew(self, key: str, entry: CacheEntry) -> None:
        """Write ``entry`` again, now that it holds more (its script JSON, its kept headers), only
        while it is still the one stored: a deleted or replaced entry is never revived."""
        self.store.put(ENTRY + key, entry, entry.retain_until - self.clock(), replacing=entry)

    def drop(self, key: str) -> None:
        self.store.delete(ENTRY + key)
        self.locks.withdraw(key)

    def entry_after_wait(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` after waiting for its lock: the store's while it is fresh, else
        what the holder left when that is newer (another worker's fetch or refresh of an entry this
        process holds stale), kept in this process's store from then on."""
        entry = self.entry(key)
        now = self.clock()
        if entry is not None and entry.is_fresh(now):
            return entry
        left = self.locks.left(key, now)
        if left is None or (entry is not None and left.stored_at <= entry.stored_at):
            return entry
        self.store.put(ENTRY + key, left, left.retain_until - now)
        return left

    def event(self, name: str) -> None:
        try:
            self.on_event(name)
        except Exception:  # a broken metrics hook must never fail a request
            log.exception("cache: the on_event hook failed for %r", name)

    def health(self) -> dict[str, Any]:
        """The store's own report, and this process's herd: keys being fetched, requests waiting."""
        return {**self.store.health(), "fetching": self.flight.under_way(),
                "waiting": self.flight.waiting()}


__all__ = ["EVENTS", "Cache", "CacheEntry", "MemoryStore", "RedisStore", "Store"]
