"""Per-client rate budgets, counted with the ``limits`` package's public interface.

``RateBudget.charge`` counts one request of a client against ``[limits] per_client`` (the whole
bridge) and, when the upstream has one, against that upstream's own ``per_client`` (shared by its CORS
and JSONP paths), and raises ``RateLimited`` with ``Retry-After`` when either is spent. The counters
are fixed windows counted through ``limits``' public ``Storage`` interface: in the Redis that
``[cache] backend`` names, so that every instance shares one budget, and otherwise in
``SharedCounters``, a table in shared memory made before gunicorn forks its workers, so that a budget
is the whole instance's and never one per worker. When Redis fails, the bridge counts in that table
until Redis answers again (logged once each way): requests neither fail nor go unlimited. This module
decides who is over budget; it knows nothing about CORS, JSONP or how a refusal is rendered.
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import multiprocessing
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string

from ..cache.redis import redacted
from ..config import Config, UpstreamConfig
from ..config.values import redis_backend
from ..errors import RateLimited
from . import process

log = logging.getLogger(__name__)

KEY_PREFIX = "jsonp-cors-bridge"
REDIS_TIMEOUT = 0.5  # seconds: a slower Redis is treated as gone for this request
REDIS_RETRY_AFTER = 2.0  # seconds between attempts while Redis is down
COUNTER_SLOTS = 65536  # clients (per window and limit) the shared table holds at once: 2 MiB
PROBES = 8  # slots looked at per key before the one closest to its window's end is reused
_SLOT = struct.Struct("<16sdq")  # key digest, window end (epoch seconds), count
KEY_MEMO_SIZE = 4096  # clients whose counter keys a rule remembers
_HOLDER = struct.Struct("<q")  # the pid holding the lock, at the table's start
LOCK_PATIENCE = 0.5  # seconds a waiter waits before it looks whether the holder is still alive


class SharedCounters(Storage):
    """Fixed-window counters in a shared-memory table, for every process forked after it is made.

    A key's digest picks a slot and the ``PROBES`` slots after it; a full neighbourhood reuses the
    slot whose window ends first (so a flood of made-up clients can only ever hand fresh budgets to
    the clients it evicts, never take one away). Writers exclude each other with one process-shared
    semaphore, which neither takes a system call nor lets go of the GIL when it is free (a lock that
    does, such as a file lock, convoys the request threads behind it). Its holder's pid is kept in the
    table: a waiter that finds the holder gone (a worker killed inside the few microseconds it holds
    it) releases it, so no budget ever waits for a dead process.
    """

    STORAGE_SCHEME = None  # made directly, never by a storage url

    def __init__(self, slots: int = COUNTER_SLOTS) -> None:
        super().__init__()
        self.slots = slots
        # The first slot's room holds the lock holder's pid; the counters follow it.
        self._table = mmap.mmap(-1, (slots + 1) * _SLOT.size, flags=mmap.MAP_SHARED)
        self._semaphore = multiprocessing.get_context("fork").Lock()
        weakref.finalize(self, self._table.close)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return OSError

    def _lock(self) -> None:
        if self._semaphore.acquire(False):  # free: no system call, the GIL kept
            _HOLDER.pack_into(self._table, 0, process.pid)
            return
        while not self._semaphore.acquire(timeout=LOCK_PATIENCE):
            holder = _HOLDER.unpack_from(self._table, 0)[0]
            if holder and not _alive(holder):
                log.warning("rate limits: worker %d died holding the budgets' lock; releasing it",
                            holder)
                _HOLDER.pack_into(self._table, 0, 0)
                try:
                    self._semaphore.release()
                except ValueError:  # another waiter released it first
                    pass
        _HOLDER.pack_into(self._table, 0, process.pid)

    def _unlock(self) -> None:
        _HOLDER.pack_into(self._table, 0, 0)
        try:
            self._semaphore.release()
        except ValueError:  # released for us while we were slow: the lock is free either way
            pass

    def _find(self, digest: bytes, now: float) -> tuple[int | None, int]:
        """The offset of the key's live slot (or None), and the offset to take for it otherwise."""
        table, slots, size, unpack = self._table, self.slots, _SLOT.size, _SLOT.unpack_from
        start = int.from_bytes(digest[:8], "little")
        victim, victim_end = -1, math.inf
        for probe in range(PROBES):
            offset = ((start + probe) % slots + 1) * size
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
        table = self._table
        offset = (int.from_bytes(digest[:8], "little") % self.slots + 1) * _SLOT.size
        self._lock()
        try:
            slot_digest, window_end, count = _SLOT.unpack_from(table, offset)
            if slot_digest != digest or window_end <= now:  # not in its first slot: look further
                live, offset = self._find(digest, now)
                if live is None:
                    _SLOT.pack_into(table, offset, digest, now + expiry, amount)
                    return amount
                slot_digest, window_end, count = _SLOT.unpack_from(table, offset)
            _SLOT.pack_into(table, offset, digest, window_end, count + amount)
            return int(count + amount)
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
            self._table[_SLOT.size:] = bytes(len(self._table) - _SLOT.size)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process by now: not ours, so ours is gone
        return False
    return True


@lru_cache(maxsize=KEY_MEMO_SIZE)
def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def redis_storage(backend: str) -> tuple[str, dict[str, Any]] | None:
    """The ``limits`` storage url and options for the cache's Redis (the same servers), or None
    for the memory backend. limits reads a Sentinel url's whole path as the master's name, so the
    database goes as an option; counters are read from the master, never a lagging replica."""
    target = redis_backend(backend)
    if target is None:
        return None
    options: dict[str, Any] = {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT}
    if target.kind == "server":
        url = target.url
        return ("redis+unix://" + url[len("unix://"):] if url.startswith("unix://") else url), options
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options["retry"] = Retry(NoBackoff(), 0)  # redis-py 7 retries by default; an outage falls back
    hosts = ",".join(f"{host}:{port}" for host, port in target.hosts)
    auth = f":{target.password}@" if target.password else ""
    if target.kind == "sentinel":
        options.update(use_replicas=False, db=target.db)
        return f"redis+sentinel://{auth}{hosts}/{target.master}", options
    return f"redis+cluster://{auth}{hosts}", options


@dataclass(slots=True)
class Rule:
    """One rate of one budget (``600/minute`` of the whole bridge, or of one upstream), and the
    counter keys of recent clients (``limits``' own ``key_for``, remembered: a key names a client
    and a window length, never a window, so it is the same for every request of that client)."""

    item: RateLimitItem
    scope: tuple[str, ...]  # ("client",) or ("upstream", NAME)
    keys: dict[str, str] = field(default_factory=dict)
    expiry: int = field(init=False)
    amount: int = field(init=False)

    def __post_init__(self) -> None:
        self.expiry, self.amount = self.item.get_expiry(), self.item.amount

    def key_for(self, client: str) -> str:
        key = self.keys.get(client)
        if key is None:
            if len(self.keys) >= KEY_MEMO_SIZE:
                self.keys.clear()
            key = self.keys[client] = self.item.key_for(KEY_PREFIX, *self.scope, client)
        return key


class RateBudget:
    """The bridge's rate limits: ``charge`` a request, or learn it is over budget.

    A fixed window, counted as ``limits``' ``FixedWindowRateLimiter`` counts it (``Storage.incr`` of
    the item's key and expiry, over budget past the item's amount), through ``limits``' public
    ``Storage`` interface: Redis's storage, or the shared table.
    """

    def __init__(self, config: Config, counters: SharedCounters | None = None) -> None:
        bridge = tuple(Rule(item, ("client",)) for item in parse_many(config.limits.per_client)) \
            if config.limits.per_client else ()
        self.rules: dict[str | None, tuple[Rule, ...]] = {None: bridge}
        for name, upstream in config.upstreams.items():
            own = tuple(Rule(item, ("upstream", name)) for item in parse_many(upstream.per_client)) \
                if upstream.per_client else ()
            self.rules[name] = bridge + own
        self.enabled = any(self.rules.values())
        self._local: Storage | None = None
        self._shared: Storage | None = None
        storage = redis_storage(config.cache.backend)
        self._redis_url = storage[0] if storage is not None else None
        self._redis_down = False
        self._retry_at = 0.0
        self._state_lock = threading.Lock()
        if self.enabled:
            self._local = counters or SharedCounters()
            if storage is not None:
                shared = storage_from_string(storage[0], **storage[1])
                assert isinstance(shared, Storage)  # a redis:// url names the synchronous one
                self._shared = shared

    def charge(self, client: str, upstream: UpstreamConfig | None = None) -> None:
        """Count one request of ``client`` (to ``upstream``, if any); RateLimited when over budget."""
        if not self.enabled:
            return
        rules = self.rules.get(upstream.name if upstream is not None else None) or ()
        for rule in rules:
            key = rule.key_for(client)
            storage = self._local if self._shared is None else self._storage()
            assert storage is not None
            try:
                count = storage.incr(key, rule.expiry)
            except Exception as exc:
                if storage is self._local or not isinstance(exc, storage.base_exceptions):
                    raise
                self._went_down(exc)
                storage = self._local_storage()
                count = storage.incr(key, rule.expiry)
            if count > rule.amount:
                seconds = max(1, math.ceil(storage.get_expiry(key) - time.time()))
                raise RateLimited(f"too many requests from this client ({rule.item}); try again in "
                                  f"{seconds} s", headers=(("Retry-After", str(seconds)),))

    def reset(self) -> None:
        """Forget every count (for tests and for an operator's console)."""
        for storage in (self._local, self._shared):
            if storage is not None:
                storage.reset()

    def _local_storage(self) -> Storage:
        assert self._local is not None  # made whenever a limit is configured
        return self._local

    def _storage(self) -> Storage:
        """Redis's storage while it answers, else the shared table; once every
        ``REDIS_RETRY_AFTER`` seconds of an outage one request tries Redis again."""
        shared = self._shared
        if shared is None:
            return self._local_storage()
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
                        redacted(self._redis_url or ""))
            return shared
        return self._local_storage()

    @staticmethod
    def _answers(storage: Storage) -> bool:
        try:
            return bool(storage.check())
        except Exception:  # still down: the shared table keeps counting
            return False

    def _went_down(self, exc: BaseException) -> None:
        with self._state_lock:
            was_up, self._redis_down = not self._redis_down, True
            self._retry_at = time.monotonic() + REDIS_RETRY_AFTER
        if was_up:
            log.warning("rate limits: redis at %s is unreachable (%s); falling back to in-memory "
                        "storage shared by this instance's workers until it answers",
                        redacted(self._redis_url or ""), type(exc).__name__)
