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
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..config import CacheConfig, Config
from .entry import ENTRY, VARY, CacheEntry, Vary
from .handoff import WorkerHandoff
from .herd import FetchLocks, LocalLocks, RedisLocks, SingleFlight
from .memory import MemoryStore
from .purge import EVERYTHING, RECORDS, InvalidationTable, PurgeLog, Scope
from .redis import RedisConnection, RedisStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EventHook = Callable[[str], None]
# The names ``on_event`` is called with; the metrics count them.
EVENTS = ("hit", "miss", "stored", "stale", "revalidated", "collapsed", "eviction",
          "redis_down", "redis_up", "refresh", "refresh_failed", "invalidated", "purged")


class Store(Protocol):
    """Where entries and Vary records live: get, put, delete. Every method answers (None) instead of
    raising when the store is unreachable: a cache that is down is a cache that misses."""

    name: str

    def get(self, key: str) -> CacheEntry | Vary | None: ...

    def put(self, key: str, value: CacheEntry | Vary, retain: float, *,
            replacing: CacheEntry | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def purge(self, scope: Scope) -> list[str]:
        """Drop every entry in ``scope``; the keys dropped."""

    def health(self) -> dict[str, Any]: ...


def _nobody_listens(name: str) -> None:
    pass


class Cache:
    """The store, the locks across processes, the settings and the clock, and this process's flight."""

    def __init__(self, settings: CacheConfig, store: Store, clock: Clock = time.time,
                 on_event: EventHook | None = None, locks: FetchLocks | None = None,
                 purge_log: PurgeLog | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._hooks: tuple[EventHook, ...] = ()
        self.on_event: EventHook = _nobody_listens
        if on_event is not None:
            self.listen(on_event)
        self.locks: FetchLocks = locks or LocalLocks(None)
        self.flight = SingleFlight()
        # With the memory store, purges reach the other workers through the shared log; the purges
        # this process has applied are kept a while, for fetches that began before one.
        self.purge_log = purge_log if purge_log is not None or not isinstance(store, MemoryStore) \
            else PurgeLog()
        self.invalidations = InvalidationTable() if isinstance(store, MemoryStore) else None
        self._purge_seen = self.purge_log.head() if self.purge_log is not None else 0
        self._purges: deque[tuple[float, Scope]] = deque(maxlen=RECORDS)
        self._purge_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, clock: Clock = time.time,
                    on_event: EventHook | None = None) -> Cache:
        settings = config.cache

        # The store reports through the cache, so a hook added later (``listen``) hears it too.
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
        cache = cls(settings, store, clock, on_event, locks)  # made before gunicorn forks: one purge log
        return cache

    # --- entries and Vary records, by the keys ``key.py`` derives ---

    def entry(self, key: str) -> CacheEntry | None:
        found = self.store.get(ENTRY + key)
        if not isinstance(found, CacheEntry):
            return None
        if self._invalidated(found):
            self.drop(key)
            return None
        return found

    def _invalidated(self, entry: CacheEntry) -> bool:
        """Whether an unsafe request invalidated the entry's url since it was stored (memory store;
        with Redis such entries are deleted at once)."""
        table = self.invalidations
        if table is None:
            return False
        slot = entry.invalidation_slot
        if slot < 0:
            slot = entry.invalidation_slot = table.slot(entry.address)
        return table.at(slot) >= entry.stored_at

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
        if left is None or (entry is not None and left.stored_at <= entry.stored_at) \
                or self._invalidated(left):
            return entry
        self.store.put(ENTRY + key, left, left.retain_until - now)
        return left

    # --- purges: every worker, and with Redis every instance ---

    def purge(self, scope: Scope) -> int:
        """Drop every entry in ``scope``, here and in every worker (memory) or instance (Redis);
        how many this process's store held (with Redis: how many Redis held)."""
        now = self.clock()
        if self.purge_log is not None:
            sequence = self.purge_log.write(scope, now)
            return self.catch_up().get(sequence, 0)
        with self._purge_lock:
            dropped = self._apply(scope, now)
        if isinstance(self.store, RedisStore):
            self.store.mark_purged(scope.api if scope.tag is None and scope.api else "*", now)
        return dropped

    def invalidate(self, address: tuple[str, str, str]) -> None:
        """RFC 9111 section 4.4: entries of this url (every variant) are not served again, in any
        worker or instance: a time in the shared table (memory store), read on each hit, or the
        entries deleted from Redis."""
        now = self.clock()
        if self.invalidations is not None:
            self.invalidations.mark(address, now)
        elif isinstance(self.store, RedisStore):
            for key in self.store.invalidate(address, now):
                self.locks.withdraw(key.removeprefix(ENTRY))

    def catch_up(self) -> dict[int, int]:
        """Apply the purges other workers wrote since this process last looked (memory store): one
        read of shared memory when there are none. How many entries each dropped, by sequence."""
        purge_log = self.purge_log
        if purge_log is None or purge_log.head() == self._purge_seen:
            return {}
        counts: dict[int, int] = {}
        with self._purge_lock:
            records = purge_log.since(self._purge_seen)
            if records is None:  # further behind than the ring holds: drop everything held
                head = purge_log.head()
                counts[head] = self._apply(EVERYTHING, self.clock())
                self._purge_seen = head
                return counts
            for sequence, at, scope in records:
                counts[sequence] = self._apply(scope, at)
                self._purge_seen = sequence
        return counts

    def purged_since(self, address: tuple[str, str, str], tags: tuple[str, ...], since: float) -> bool:
        """Whether a purge at or after ``since`` covers an entry at ``address`` with ``tags``: a
        fetch that began before it must not store what it got."""
        self.catch_up()
        with self._purge_lock:
            for at, scope in reversed(self._purges):  # in the order written: newest last
                if at < since:
                    break  # the rest are older still: a miss pays only for purges since it began
                if scope.matches(address, tags):
                    return True
        if self.invalidations is not None and self.invalidations.invalidated_at(address) >= since:
            return True
        if isinstance(self.store, RedisStore):
            return self.store.last_purged(address) >= since
        return False

    def _apply(self, scope: Scope, at: float) -> int:
        """Drop ``scope`` from the store and the handoff, and remember it (the purge lock held)."""
        dropped = self.store.purge(scope)
        for key in dropped:
            self.locks.withdraw(key.removeprefix(ENTRY))
        self._purges.append((at, scope))
        return len(dropped)

    def listen(self, hook: EventHook) -> None:
        """Have ``hook`` hear every event too, after those already listening: called as it is when
        it is the only one (a hit's count is one call), else with the others in turn."""
        hooks = self._hooks = (*self._hooks, hook)
        if len(hooks) == 1:
            self.on_event = hook
            return

        def each(name: str) -> None:
            for listener in hooks:
                listener(name)

        self.on_event = each

    def event(self, name: str) -> None:
        try:
            self.on_event(name)
        except Exception:  # a broken metrics hook must never fail a request
            log.exception("cache: the on_event hook failed for %r", name)

    def health(self) -> dict[str, Any]:
        """The store's own report, and this process's herd: keys being fetched, requests waiting."""
        return {**self.store.health(), "fetching": self.flight.under_way(),
                "waiting": self.flight.waiting()}


__all__ = ["EVENTS", "Cache", "CacheEntry", "MemoryStore", "RedisStore", "Scope", "Store"]
