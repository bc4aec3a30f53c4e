"""The shared store: entries and Vary records in Redis, for every instance that names the same server.

A store is ``get``, ``put`` and ``delete`` (and ``health``). An entry is a hash (``serialize.py``'s
fields) and a Vary record a small JSON string, each expiring with its retention, so Redis drops what
the bridge no longer needs; the memory bound is Redis's own ``maxmemory``. Every Redis failure is
caught in ``RedisConnection.call``: the store turns into one that always misses, says so once in the
log and in ``health()``, and tries Redis again after ``REDIS_RETRY_AFTER``; a request never fails
because of Redis. The herd's Redis lock (``herd.RedisLocks``) shares the connection.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config.values import redis_backend
from .entry import VARY, CacheEntry, Vary
from .key import primary_key
from .purge import Scope
from .serialize import entry_fields, entry_from_fields, entry_meta

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 0.5  # seconds; a Redis slower than this is treated as gone for the request
REDIS_RETRY_AFTER = 2.0  # seconds between attempts while Redis is down, so requests don't queue on it
PURGE_MEMORY = 600  # seconds a purge's time is kept, for fetches that began before it (> any timeout)
Clock = Callable[[], float]
Stored = CacheEntry | Vary
# Put an entry only while the version kept is the one named (its stored time), never reviving a
# deleted one: how an entry that gained its script JSON is written again.
_PUT_IF_VERSION = """
if redis.call('hget', KEYS[1], 't') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def redacted(url: str) -> str:
    """The url without a password, for logs."""
    return re.sub(r"//[^@/]*@", "//***@", url)


class RedisConnection:
    """One Redis client with the bridge's failure rule: down means 'answer the default', for a while.

    The client is built on first use, inside ``call`` (a Cluster client asks its nodes for the slot
    map when it is made, and a Cluster that is down at start-up is down like any other Redis). For a
    Sentinel set it is the master's client, which asks the sentinels for the master again whenever
    a connection to it fails, so a failover is followed without restarting the bridge.
    """

    def __init__(self, url: str, clock: Clock = time.time,
                 on_event: Callable[[str], None] | None = None, timeout: float = REDIS_TIMEOUT) -> None:
        import redis
        from redis.exceptions import RedisClusterException

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException,
                                                         OSError)
        backend = redis_backend(url)
        assert backend is not None, "a Redis connection for the memory backend"
        self.backend = backend
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self._on_event = on_event or (lambda name: None)
        self._client: Any = None
        self._sentinel: Any = None
        self._scripts: dict[str, Any] = {}
        self._up = True
        self._retry_at = 0.0
        self._state_lock = threading.Lock()

    def _build(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        backend, timeout = self.backend, self.timeout
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                   "retry": Retry(NoBackoff(), 0)}
        if backend.kind == "server":
            return redis.Redis.from_url(backend.url, health_check_interval=0, **options)
        if backend.kind == "sentinel":
            from redis.sentinel import Sentinel

            self._sentinel = Sentinel(list(backend.hosts), sentinel_kwargs=dict(options), **options)
            return self._sentinel.master_for(backend.master, db=backend.db, password=backend.password,
                                             **options)
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in backend.hosts],
                            password=backend.password, **options)

    def call(self, operation: Callable[[Any], Any], default: Any = None) -> Any:
        """``operation(client)``, or ``default`` while Redis is down (then tried again after
        ``REDIS_RETRY_AFTER``)."""
        if not self._up and self.clock() < self._retry_at:
            return default
        try:
            if self._client is None:
                with self._state_lock:
                    if self._client is None:
                        self._client = self._build()
            result = operation(self._client)
        except self._errors as exc:
            self._went_down(exc)
            return default
        if not self._up:
            with self._state_lock:
                was_down, self._up = not self._up, True
            if was_down:
                log.warning("cache: redis at %s is reachable again; sharing entries again",
                            redacted(self.url))
                self._on_event("redis_up")
        return result

    def script(self, text: str, keys: list[str], args: list[Any], default: Any = None) -> Any:
        """Run a Lua script (loaded once per client, by its SHA after that) through ``call``."""
        def run(client: Any) -> Any:
            script = self._scripts.get(text)
            if script is None:
                script = self._scripts[text] = client.register_script(text)
            return script(keys=keys, args=args)
        return self.call(run, default)

    def topology(self) -> dict[str, Any]:
        """What /healthz says of the servers: the kind, and the master a Sentinel set names now or
        the primaries of a Cluster (asked now; nothing when Redis is down)."""
        kind = self.backend.kind
        if kind == "sentinel":
            self.call(lambda client: None)  # builds the client and the sentinel manager
            sentinel = self._sentinel
            master = self.call(lambda _: sentinel.discover_master(self.backend.master)) \
                if sentinel is not None else None
            return {"topology": kind, "master": f"{master[0]}:{master[1]}" if master else None,
                    "sentinels": len(self.backend.hosts)}
        if kind == "cluster":
            primaries = self.call(lambda client: client.get_primaries(), default=None)
            return {"topology": kind,
                    "primaries": sorted(f"{n.host}:{n.port}" for n in primaries) if primaries else []}
        return {"topology": "single"}

    def _went_down(self, exc: BaseException) -> None:
        with self._state_lock:
            was_up, self._up = self._up, False
            self._retry_at = self.clock() + REDIS_RETRY_AFTER
        if was_up:
            # Once per outage, not per request: the bridge keeps serving from the upstreams.
            log.warning("cache: redis at %s is unreachable (%s); serving from the upstreams "
                        "uncached until it is back", redacted(self.url), type(exc).__name__)
            self._on_event("redis_down")


def hash_tagged(prefix: str, kind: str, key: str) -> str:
    """A Redis key with its hash tag (``jcb:e:{KEY}``): in a Cluster an entry and its lock hash to
    one slot, so each is written atomically there."""
    return f"{prefix}{kind}:{{{key}}}"


class RedisStore:
    name = "redis"

    def __init__(self, connection: RedisConnection, prefix: str = "jcb:") -> None:
        self.connection = connection
        self.clock = connection.clock
        self.prefix = prefix

    def _name(self, key: str) -> str:
        kind, _, rest = key.partition(":")  # "e:KEY" or "v:KEY", as the cache names them
        return hash_tagged(self.prefix, kind, rest)

    def get(self, key: str) -> Stored | None:
        name = self._name(key)
        if key.startswith(VARY):
            raw = self.connection.call(lambda client: client.get(name))
            return _vary(raw, self.clock()) if raw is not None else None
        fields = self.connection.call(lambda client: client.hgetall(name))
        return entry_from_fields(key, fields, self.clock()) if fields else None

    def put(self, key: str, value: Stored, retain: float, *,
            replacing: CacheEntry | None = None) -> None:
        """Keep ``value`` for ``retain`` seconds. With ``replacing``, only while that version of the
        entry is the one kept (written again in place, its expiry as it was)."""
        name, seconds = self._name(key), max(1, int(retain))
        if isinstance(value, Vary):
            record = json.dumps({"r": self.clock() + retain, "v": list(value.names)})
            self.connection.call(lambda client: client.set(name, record, ex=seconds))
            return
        fields = entry_fields(value)
        if replacing is not None:
            arguments = [fields["t"]] + [item for pair in fields.items() for item in pair]
            self.connection.script(_PUT_IF_VERSION, [name], arguments)
            return
        # The indexes a purge reads: the entries of an upstream, and of each tag. Each lives as long
        # as its longest-kept entry; a member whose entry expired is skipped and removed by a purge.
        # They hash elsewhere than the entry, so they are written after it, not in its transaction.
        indexes = [self._index(value.address[0]), self._url_index(value.address)] + \
            [self._tag_index(tag) for tag in value.tags]

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(name)
            pipe.hset(name, mapping=fields)
            pipe.expire(name, seconds)
            pipe.execute()
            pipe = client.pipeline(transaction=False)
            for index in indexes:
                pipe.sadd(index, key)
                pipe.expire(index, seconds, nx=True)
                pipe.expire(index, seconds, gt=True)
            pipe.execute()
        self.connection.call(write)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self.connection.call(lambda client: client.delete(name))

    def _index(self, api: str) -> str:
        return f"{self.prefix}ix:{api}"

    def _tag_index(self, tag: str) -> str:
        return f"{self.prefix}tg:{tag}"

    def _url_index(self, address: tuple[str, str, str]) -> str:
        """The set of one url's entries (its variants), for invalidation."""
        return hash_tagged(self.prefix, "px", primary_key(*address))

    def invalidate(self, address: tuple[str, str, str], at: float) -> list[str]:
        """Delete one url's entries, every variant, for every instance; note when (for fetches
        under way). The keys deleted."""
        index = self._url_index(address)
        noted = hash_tagged(self.prefix, "iv", primary_key(*address))

        def run(client: Any) -> list[str]:
            members = [m.decode() for m in client.smembers(index)]
            for key in members:
                client.delete(self._name(key))
            client.delete(index)
            client.set(noted, repr(at), ex=PURGE_MEMORY)
            return members
        return list(self.connection.call(run, default=[]))

    def purge(self, scope: Scope) -> list[str]:
        """Drop every entry in ``scope`` from Redis (for every instance); the keys dropped."""
        index = self._tag_index(scope.tag) if scope.tag is not None else self._index(scope.api or "")

        def run(client: Any) -> list[str]:
            members = [m.decode() for m in client.smembers(index)]
            dropped: list[str] = []
            gone: list[str] = []
            for key in members:
                meta = client.hget(self._name(key), "m")
                entry = entry_meta(meta) if isinstance(meta, bytes) else None
                if entry is None:
                    gone.append(key)
                elif scope.matches(*entry):
                    dropped.append(key)
            for key in dropped:  # one key a command: in a Cluster they live in different slots
                client.delete(self._name(key))
            if dropped or gone:
                client.srem(index, *dropped, *gone)
            return dropped
        return list(self.connection.call(run, default=[]))

    def mark_purged(self, api: str, at: float) -> None:
        """Note when ``api`` (``*``: a purge by tag) was last purged, for fetches under way."""
        name = f"{self.prefix}pt:{api}"
        self.connection.call(lambda client: client.set(name, repr(at), ex=PURGE_MEMORY))

    def last_purged(self, address: tuple[str, str, str]) -> float:
        """When the entry's upstream or any tag was last purged, or its url invalidated (0: not
        within ``PURGE_MEMORY``); one round trip."""
        names = (f"{self.prefix}pt:{address[0]}", f"{self.prefix}pt:*",
                 hash_tagged(self.prefix, "iv", primary_key(*address)))

        def run(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
            return list(pipe.execute())
        values = self.connection.call(run, default=())
        return max((float(v) for v in values or () if v is not None), default=0.0)

    def health(self) -> dict[str, Any]:
        # A ping, unless Redis is known down and not yet due another try.
        reachable = bool(self.connection.call(lambda client: client.ping(), default=False))
        report = {"backend": "redis", "redis": "up" if reachable else "down"}
        return {**report, **self.connection.topology()} if reachable else report


def _vary(raw: bytes, now: float) -> Vary | None:
    try:
        record = json.loads(raw)
        if float(record["r"]) <= now:
            return None
        return Vary(tuple(str(name) for name in record["v"]))
    except (ValueError, KeyError, TypeError):
        return None
