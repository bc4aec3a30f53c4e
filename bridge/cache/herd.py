"""One upstream request per cold key: a single flight within a process, a lock across processes.

``SingleFlight`` lets one thread per key run the fetch while the others of this process wait for and
share its outcome. Across processes, ``FetchLocks`` does the same: the fetching process holds the key's
lock, and a process that finds it taken waits for what the holder leaves. ``LocalLocks`` serves the
workers of one bridge with the memory store (``handoff.py``: a flock per key, and the fetched entry
left in a file for the others); ``RedisLocks`` serves every instance sharing a Redis (``SET NX PX``,
released only by its holder, expiring if the holder dies; what the holder stores is in Redis for all).
The gateway (``proxy/gateway.py``) drives them; this module fetches nothing itself.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .entry import CacheEntry
from .handoff import WorkerHandoff
from .redis import RedisConnection, hash_tagged
from .serialize import entry_from_bytes, entry_to_bytes

LOCK_POLL = 0.02  # seconds between looks at Redis while another instance fetches
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    waiters: int = 0


class SingleFlight:
    """One call per key at a time in this process; the others wait for and share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def run(self, key: str, call: Callable[[], Any], timeout: float) -> tuple[Any, bool]:
        """``(result, True)`` for the thread that ran ``call``, ``(result, False)`` for those that
        waited. A waiter that outlives ``timeout`` raises TimeoutError; the caller's error is shared."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if leader:
            try:
                flight.result = call()
                return flight.result, True
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
        if not flight.done.wait(timeout):
            raise TimeoutError(key)
        if flight.error is not None:
            raise flight.error
        return flight.result, False

    def under_way(self) -> int:
        """How many keys this process is fetching now (``/healthz`` reports it)."""
        with self._lock:
            return len(self._flights)

    def waiting(self, key: str | None = None) -> int:
        """How many threads wait for the call under way for ``key`` (for any key: None); reported
        by ``/healthz`` beside ``under_way``."""
        with self._lock:
            if key is None:
                return sum(flight.waiters for flight in self._flights.values())
            flight = self._flights.get(key)
            return flight.waiters if flight is not None else 0


class FetchLocks(Protocol):
    """The lock that lets one process fetch a key while the others wait for what it leaves."""

    def acquire(self, key: str, seconds: float) -> str | None:
        """A token for the key's lock, held at most ``seconds``; None when another process holds it."""

    def release(self, key: str, token: str) -> None: ...

    def locked(self, key: str) -> bool:
        """Whether another process holds the key's lock now."""

    def left(self, key: str, now: float) -> CacheEntry | None:
        """What the holder left for the others, when it is not in the shared store itself."""

    def leave(self, key: str, entry: CacheEntry) -> None:
        """Leave ``entry`` for the processes waiting on ``key`` (if this process holds its lock)."""

    def withdraw(self, key: str) -> None:
        """Take back what was left for ``key`` (its entry was deleted)."""


class LocalLocks:
    """The workers of one bridge with the memory store, through ``WorkerHandoff``; with no handoff
    (one worker, or no writable temporary directory) every lock is granted."""

    def __init__(self, handoff: WorkerHandoff | None) -> None:
        self.handoff = handoff

    def acquire(self, key: str, seconds: float) -> str | None:
        if self.handoff is None or self.handoff.acquire(key):
            return "local"  # a flock dies with its holder: ``seconds`` is Redis's
        return None

    def release(self, key: str, token: str) -> None:
        if self.handoff is not None:
            self.handoff.release(key)

    def locked(self, key: str) -> bool:
        return self.handoff is not None and self.handoff.locked(key)

    def left(self, key: str, now: float) -> CacheEntry | None:
        data = self.handoff.collect(key) if self.handoff is not None else None
        return entry_from_bytes(key, data, now) if data is not None else None

    def leave(self, key: str, entry: CacheEntry) -> None:
        if self.handoff is not None and self.handoff.holds(key):  # others may be waiting for it
            self.handoff.publish(key, entry_to_bytes(entry))

    def withdraw(self, key: str) -> None:
        if self.handoff is not None:  # nor may another worker take it from the handoff
            self.handoff.withdraw(key)


class RedisLocks:
    """Every instance sharing one Redis; without Redis each instance fetches for itself (granted).
    A key's lock hashes to its entry's slot (``hash_tagged``), for a Cluster."""

    def __init__(self, connection: RedisConnection, prefix: str = "jcb:") -> None:
        self.connection = connection
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return hash_tagged(self.prefix, "l", key)

    def acquire(self, key: str, seconds: float) -> str | None:
        token = secrets.token_hex(8)
        name, expiry = self._name(key), max(1, int(seconds * 1000))
        acquired = self.connection.call(lambda client: client.set(name, token, nx=True, px=expiry),
                                        default=True)
        return token if acquired else None

    def release(self, key: str, token: str) -> None:
        self.connection.script(_RELEASE, [self._name(key)], [token])

    def locked(self, key: str) -> bool:
        name = self._name(key)
        return bool(self.connection.call(lambda client: client.exists(name), default=False))

    def left(self, key: str, now: float) -> CacheEntry | None:
        return None  # what the holder stores is in Redis for everyone

    def leave(self, key: str, entry: CacheEntry) -> None:
        pass

    def withdraw(self, key: str) -> None:
        pass
