"""Per-client rate budgets, counted with the ``limits`` package's public interface.

``RateBudget.charge`` counts one request of a client against ``[limits] per_client`` (the whole
bridge) and, when the upstream has one, against that upstream's own ``per_client`` (shared by its CORS
and JSONP paths), and raises ``RateLimited`` with ``Retry-After`` when either is spent. The counters
are fixed windows kept by ``limits``' ``FixedWindowRateLimiter``: in the Redis that ``[cache] backend``
names, so that every instance shares one budget, and otherwise in ``SharedCounters``, a table in
shared memory made before gunicorn forks its workers, so that a budget is the whole instance's and
never one per worker. When Redis fails, the bridge counts in that table until Redis answers again
(logged once each way): requests neither fail nor go unlimited. This module decides who is over
budget; it knows nothing about CORS, JSONP or how a refusal is rendered.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import struct
import tempfile
import threading
import time
import weakref
from typing import IO

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .config import Config, UpstreamConfig
from .errors import RateLimited

log = logging.getLogger(__name__)

KEY_PREFIX = "jsonp-cors-bridge"
REDIS_TIMEOUT = 0.5  # seconds: a slower Redis is treated as gone for this request
REDIS_RETRY_AFTER = 2.0  # seconds between attempts while Redis is down
COUNTER_SLOTS = 65536  # clients (per window and limit) the shared table holds at once: 2 MiB
PROBES = 8  # slots looked at per key before the one closest to its window's end is reused
_SLOT = struct.Struct("<16sdq")  # key digest, window end (epoch seconds), count


class SharedCounters(Storage):
    """Fixed-window counters in a shared-memory table, for every process forked after it is made.

    A key's digest picks a slot and the ``PROBES`` slots after it; a full neighbourhood reuses the
    slot whose window ends first (so a flood of made-up clients can only ever hand fresh budgets to
    the clients it evicts, never take one away). Writers exclude each other with a POSIX record lock
    on the table's file, which dies with a process killed while holding it, and with a thread lock
    inside each process (record locks belong to processes, not threads).
    """

    STORAGE_SCHEME = None  # made directly, never by a storage url

    def __init__(self, slots: int = COUNTER_SLOTS) -> None:
        super().__init__()
        self.slots = slots
        self._file = tempfile.TemporaryFile(prefix="jsonp-cors-bridge-budgets-")
        self._file.truncate(slots * _SLOT.size)
        self._table = mmap.mmap(self._file.fileno(), slots * _SLOT.size, flags=mmap.MAP_SHARED)
        self._thread_lock = threading.Lock()
        weakref.finalize(self, _close, self._table, self._file)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return OSError

    def _lock(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX, 1)
        except BaseException:
            self._thread_lock.release()
            raise

    def _unlock(self) -> None:
        try:
            fcntl.lockf(self._file, fcntl.LOCK_UN, 1)
        finally:
            self._thread_lock.release()

    def _find(self, digest: bytes, now: float) -> tuple[int | None, int]:
        """The offset of the key's live slot (or None), and the offset to take for it otherwise."""
        table, slots, size, unpack = self._table, self.slots, _SLOT.size, _SLOT.unpack_from
        start = int.from_bytes(digest[:8], "little")
        victim, victim_end = -1, math.inf
        for probe in range(PROBES):
            offset = ((start + probe) % slots) * size
            slot_digest, window_end, _ = unpack(table, offset)
            if slot_digest == digest and window_end > now:
                return offset, offset
            ends = -math.inf if window_end <= now else window_end  # a free slot is taken first
            if ends < victim_end:
                victim, victim_end = offset, ends
        return None, victim

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        digest = _digest(key)
        now = time.time()
        self._lock()
        try:
            live, free = self._find(digest, now)
            if live is not None:
                _, window_end, count = _SLOT.unpack_from(self._table, live)
                _SLOT.pack_into(self._table, live, digest, window_end, count + amount)
                return int(count + amount)
            _SLOT.pack_into(self._table, free, digest, now + expiry, amount)
            return amount
        finally:
            self._unlock()

    def get(self, key: str) -> int:
        digest = _digest(key)
        live, _ = self._find(digest, time.time())
        return 0 if live is None else int(_SLOT.unpack_from(self._table, live)[2])

    def get_expiry(self, key: str) -> float:
        now = time.time()
        live, _ = self._find(_digest(key), now)
        return now if live is None else float(_SLOT.unpack_from(self._table, live)[1])

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        self._lock()
        try:
            self._table[:] = bytes(len(self._table))
        finally:
            self._unlock()
        return None

    def clear(self, key: str) -> None:
        digest = _digest(key)
        self._lock()
        try:
            live, _ = self._find(digest, time.time())
            if live is not None:
                _SLOT.pack_into(self._table, live, bytes(16), 0.0, 0)
        finally:
            self._unlock()


def _close(table: mmap.mmap, file: IO[bytes]) -> None:
    table.close()
    file.close()


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def redis_storage_uri(backend: str) -> str | None:
    """The ``limits`` storage url for the cache's Redis, or None for the memory backend."""
    if backend.startswith(("redis://", "rediss://")):
        return backend
    if backend.startswith("unix://"):
        return "redis+unix://" + backend[len("unix://"):]
    return None


class RateBudget:
    """The bridge's rate limits: ``charge`` a request, or learn it is over budget."""

    def __init__(self, config: Config, counters: SharedCounters | None = None) -> None:
        self.bridge_limits: tuple[RateLimitItem, ...] = tuple(parse_many(config.limits.per_client)) \
            if config.limits.per_client else ()
        self.upstream_limits: dict[str, tuple[RateLimitItem, ...]] = {
            name: tuple(parse_many(u.per_client)) for name, u in config.upstreams.items() if u.per_client}
        self.enabled = bool(self.bridge_limits or self.upstream_limits)
        self._local: FixedWindowRateLimiter | None = None
        self._shared: FixedWindowRateLimiter | None = None
        self._redis_url = redis_storage_uri(config.cache.backend)
        self._redis_down = False
        self._retry_at = 0.0
        self._state_lock = threading.Lock()
        if self.enabled:
            self._local = FixedWindowRateLimiter(counters or SharedCounters())
            if self._redis_url is not None:
                self._shared = FixedWindowRateLimiter(storage_from_string(
                    self._redis_url, socket_timeout=REDIS_TIMEOUT,
                    socket_connect_timeout=REDIS_TIMEOUT))

    def charge(self, client: str, upstream: UpstreamConfig | None = None) -> None:
        """Count one request of ``client`` (to ``upstream``, if any); RateLimited when over budget."""
        if not self.enabled:
            return
        for item in self.bridge_limits:
            self._hit(item, ("client", client))
        if upstream is not None:
            for item in self.upstream_limits.get(upstream.name, ()):
                self._hit(item, ("upstream", upstream.name, client))

    def reset(self) -> None:
        """Forget every count (for tests and for an operator's console)."""
        for limiter in (self._local, self._shared):
            if limiter is not None:
                limiter.storage.reset()

    def _hit(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> None:
        limiter = self._limiter()
        try:
            allowed = limiter.hit(item, KEY_PREFIX, *identifiers)
        except Exception as exc:
            if limiter is self._local or not isinstance(exc, limiter.storage.base_exceptions):
                raise
            self._went_down(exc)
            limiter = self._local_limiter()
            allowed = limiter.hit(item, KEY_PREFIX, *identifiers)
        if allowed:
            return
        reset_at = limiter.get_window_stats(item, KEY_PREFIX, *identifiers).reset_time
        seconds = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(f"too many requests from this client ({item}); try again in {seconds} s",
                          headers=(("Retry-After", str(seconds)),))

    def _local_limiter(self) -> FixedWindowRateLimiter:
        assert self._local is not None  # made whenever a limit is configured
        return self._local

    def _limiter(self) -> FixedWindowRateLimiter:
        """Redis's limiter while it answers, else the shared table's; once every
        ``REDIS_RETRY_AFTER`` seconds of an outage one request tries Redis again."""
        shared = self._shared
        if shared is None:
            return self._local_limiter()
        if not self._redis_down:
            return shared
        with self._state_lock:
            due = time.monotonic() >= self._retry_at
            if due:
                self._retry_at = time.monotonic() + REDIS_RETRY_AFTER
        if due and self._answers(shared):
            with self._state_lock:
                self._redis_down = False
            log.warning("rate limits: redis at %s answers again; budgets are shared again",
                        _redacted(self._redis_url or ""))
            return shared
        return self._local_limiter()

    @staticmethod
    def _answers(limiter: FixedWindowRateLimiter) -> bool:
        try:
            return bool(limiter.storage.check())
        except Exception:  # still down: the shared table keeps counting
            return False

    def _went_down(self, exc: BaseException) -> None:
        with self._state_lock:
            was_up, self._redis_down = not self._redis_down, True
            self._retry_at = time.monotonic() + REDIS_RETRY_AFTER
        if was_up:
            log.warning("rate limits: redis at %s is unreachable (%s); falling back to in-memory "
                        "storage shared by this instance's workers until it answers",
                        _redacted(self._redis_url or ""), type(exc).__name__)


def _redacted(url: str) -> str:
    """The url without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest.split("/", 1)[0]:
        return url
    return scheme + sep + "***@" + rest.split("@", 1)[1]
