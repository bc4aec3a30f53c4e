"""The cache under both paths: keys, freshness, stores (cachetools or Redis), single-flight.

What is stored is the upstream's answer to a GET (status 200, and 404 when ``negative_ttl`` is set),
never anything made per request: CORS grants and JSONP wrapping are computed from the entry by the
views, so the key never holds the Origin or the callback. The policy (the key, RFC 9111 freshness, Vary,
conditional requests, RFC 9211 ``Cache-Status`` values) is plain functions over plain values. The two
stores keep ``CacheEntry`` objects: ``MemoryStore`` in process (a cachetools LRU bounded by accounted
bytes), ``RedisStore`` shared by several instances; a Redis that goes away turns every operation into a
miss (logged once, shown by ``health()``), never an error. ``SingleFlight`` lets one thread per key ask
the upstream while the others wait; with Redis, a short lock with a timeout does the same across
instances. This module does not talk to upstreams and knows nothing about Flask: ``gateway.py`` drives it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, Protocol

import cachetools

from .config import CacheConfig, Config
from .handoff import WorkerHandoff
from .upstream import (
    FORWARDED_REQUEST_HEADERS,
    HOP_BY_HOP,
    NEVER_FORWARDED,
    UpstreamRequest,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

CACHE_NAME = "jsonp-cors-bridge"
Clock = Callable[[], float]
EventHook = Callable[[str], None]
# The names ``on_event`` is called with; the metrics count them.
EVENTS = ("hit", "miss", "stored", "stale", "revalidated", "collapsed", "eviction",
          "redis_down", "redis_up")
# Client conditionals are answered by the bridge from the entry; they never shape the key.
CONDITIONAL_HEADERS = frozenset({"if-none-match", "if-modified-since", "if-match",
                                 "if-unmodified-since", "if-range"})
# RFC 5861 section 4: the upstream failures for which a stale entry may stand in.
STALE_IF_ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Fields a 304 may not change in the stored answer (RFC 9111 section 3.2 excludes framing fields).
NOT_RENEWED = frozenset({"content-length", "content-type", "content-encoding"}) | HOP_BY_HOP
# What an entry costs beyond its strings: the entry, its response, the LRU's three dict slots.
ENTRY_OVERHEAD = 640
REDIS_TIMEOUT = 0.5  # seconds; a Redis slower than this is treated as gone for the request
REDIS_RETRY_AFTER = 2.0  # seconds between attempts while Redis is down, so requests don't queue on it
LOCK_POLL = 0.02  # seconds between looks at Redis while another instance fetches


# --- the key ---


def primary_key(upstream: str, path: str, query: str) -> str:
    """Upstream, path and query of the forwarded request: the entry's address before Vary applies.

    Taken from the request as it is forwarded (``proxy/forward.py`` builds it), never from the
    client's: whatever reaches the upstream is in the key, so no request can store an answer that
    another, forwarded differently, is then served.
    """
    text = json.dumps([upstream, path, query], separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def bypass_reason(request: UpstreamRequest) -> str | None:
    """Why the cache stays out of this request (``fwd=method``: not a bodiless GET or HEAD;
    ``fwd=bypass``: the upstream's ttl is 0), or None when the cache answers it."""
    if request.method not in ("GET", "HEAD") or request.body is not None:
        return "method"
    if request.upstream.ttl <= 0:
        return "bypass"
    return None


def as_cached(request: UpstreamRequest) -> UpstreamRequest:
    """The request as the cache sends it upstream, and keys it: without the client's validators,
    which the cache answers from the entry (sent upstream they could only earn a 304 there is
    nothing to store from)."""
    if not any(k.lower() in CONDITIONAL_HEADERS for k, _ in request.headers):
        return request
    return replace(request, headers=tuple((k, v) for k, v in request.headers
                                          if k.lower() not in CONDITIONAL_HEADERS))


def header_values(headers: Iterable[tuple[str, str]], name: str) -> str:
    """All values of one request header, joined as RFC 9110 section 5.3 allows, spaces normalised."""
    lowered = name.lower()
    values = [" ".join(v.split()) for k, v in headers if k.lower() == lowered]
    return ", ".join(values)


def variant_key(primary: str, vary: Iterable[str], headers: Iterable[tuple[str, str]]) -> str:
    """The entry's full key: the primary key plus the forwarded Accept and the forwarded value of
    every header the upstream varies on. Accept always counts: the bridge sends one Accept for
    every request a JSON answer satisfies (``proxy/forward.py``), so it splits only what differs."""
    pairs = list(headers)
    names = {name.lower() for name in vary} | {"accept"}
    parts = [primary, *(f"{name}:{header_values(pairs, name)}" for name in sorted(names))]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=20).hexdigest()


def request_keys(request: UpstreamRequest, vary: tuple[str, ...] | None) -> tuple[str, str]:
    """The primary and variant keys of a request as the cache sends it, kept on the request (the
    road hands the gateway the same planned request again and again)."""
    derived = request.derived
    primary = derived.get(None)
    if primary is None:
        primary = derived[None] = primary_key(request.upstream.name, request.path, request.query)
    key = derived.get(vary or ())
    if key is None:
        key = derived[vary or ()] = variant_key(primary, vary or (), request.headers)
    return primary, key


def response_vary(response: UpstreamResponse,
                  forward_headers: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The request headers this answer varies on that the upstream could see; None for ``Vary: *``.

    Names the bridge never forwards (Origin, Cookie, Accept-Encoding, which the bridge sets itself)
    cannot have changed the answer, so they are left out: keying on them would only split the cache.
    """
    forwarded = (set(FORWARDED_REQUEST_HEADERS) | {h.lower() for h in forward_headers}) \
        - NEVER_FORWARDED - CONDITIONAL_HEADERS
    names: set[str] = set()
    for key, value in response.headers:
        if key.lower() != "vary":
            continue
        for token in value.split(","):
            token = token.strip().lower()
            if token == "*":
                return None
            if token in forwarded:
                names.add(token)
    return tuple(sorted(names))


# --- freshness (RFC 9111) ---


def cache_control(headers: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """The Cache-Control directives of a header list, names lowercased, quoted values unquoted."""
    directives: dict[str, str | None] = {}
    for key, value in headers:
        if key.lower() != "cache-control":
            continue
        for part in value.split(","):
            name, sep, arg = part.strip().partition("=")
            if name:
                directives.setdefault(name.strip().lower(), arg.strip().strip('"') if sep else None)
    return directives


def _seconds(value: str | None) -> int | None:
    """A delta-seconds argument, or None when missing or malformed (RFC 9111 section 1.2.2)."""
    if value is None or not value.isdigit():
        return None
    return int(value)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def freshness_lifetime(response: UpstreamResponse, ttl: int) -> int | None:
    """Seconds the answer stays fresh, or None when it must not be stored at all.

    The bridge's ``ttl`` is the ceiling; the upstream can only tighten it. ``no-store`` and ``private``
    are never stored (the bridge is a shared cache, RFC 9111 section 3); ``s-maxage``, else ``max-age``,
    else ``Expires`` below the ttl wins; ``no-cache`` stores for revalidation only (lifetime 0, and only
    with a validator to revalidate with).
    """
    if ttl <= 0:
        return None
    directives = cache_control(response.headers)
    if "no-store" in directives or "private" in directives:
        return None
    lifetime = ttl
    if "s-maxage" in directives or "max-age" in directives:
        given = _seconds(directives.get("s-maxage")) if "s-maxage" in directives \
            else _seconds(directives.get("max-age"))
        lifetime = min(lifetime, given if given is not None else 0)  # malformed: treat as stale
    elif response.header("expires") is not None:
        expires = _http_date(response.header("expires"))
        date = _http_date(response.header("date"))
        if expires is None or date is None:
            lifetime = 0  # RFC 9111 section 5.3: an invalid Expires means already expired
        else:
            lifetime = min(lifetime, max(0, int(expires - date)))
    if "no-cache" in directives:
        lifetime = 0
    if lifetime == 0 and not has_validator(response):
        return None  # stale at once with nothing to revalidate with: storing it helps nobody
    return lifetime


def storable_lifetime(response: UpstreamResponse, ttl: int, negative_ttl: int) -> int | None:
    """The lifetime to store this answer with, or None: 200s within ``ttl``, 404s within both."""
    if response.status == 200:
        limit = ttl
    elif response.status == 404 and negative_ttl > 0:
        limit = min(ttl, negative_ttl)
    else:
        return None
    return freshness_lifetime(response, limit)


def may_share(response: UpstreamResponse) -> bool:
    """Whether an answer fetched for one client may be handed to others who asked at the same time.

    Any answer a shared cache could reuse may be, stored or not (a 404 or a 503 included, so a herd
    on a failing resource stays one request); ``no-store``, ``private`` and ``Vary: *`` may not.
    """
    directives = cache_control(response.headers)
    return "no-store" not in directives and "private" not in directives and \
        response_vary(response) is not None


def initial_age(response: UpstreamResponse) -> int:
    """The upstream's own Age header (RFC 9111 section 5.1): time it spent in caches before us."""
    return _seconds((response.header("age") or "").strip()) or 0


def has_validator(response: UpstreamResponse) -> bool:
    return response.header("etag") is not None or response.header("last-modified") is not None


def retention(lifetime: int, validator: bool, ttl: int, stale_if_error: int) -> int:
    """How long a store keeps an entry: its lifetime, then long enough to be useful stale.

    A stale entry helps for ``stale_if_error`` seconds, and one with a validator for another ``ttl``
    so a conditional request can renew it instead of fetching it again.
    """
    return max(1, lifetime + max(stale_if_error, ttl if validator else 0))


def conditional_headers(entry_response: UpstreamResponse) -> tuple[tuple[str, str], ...]:
    """The validators to send when revalidating an entry (RFC 9111 section 4.3.1)."""
    headers = []
    if (etag := entry_response.header("etag")) is not None:
        headers.append(("If-None-Match", etag))
    if (modified := entry_response.header("last-modified")) is not None:
        headers.append(("If-Modified-Since", modified))
    return tuple(headers)


def renewed_headers(stored: Iterable[tuple[str, str]],
                    fresh: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The stored headers updated by a 304's (RFC 9111 section 4.3.4): its fields replace ours."""
    new = [(k, v) for k, v in fresh if k.lower() not in NOT_RENEWED]
    replaced = {k.lower() for k, _ in new}
    return tuple((k, v) for k, v in stored if k.lower() not in replaced) + tuple(new)


_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(,|$)')


def _etags(header: str) -> list[str] | None:
    """The opaque tags of an If-None-Match list (weakness dropped), or None when it is ``*``."""
    if header.strip() == "*":
        return None
    tags, position = [], 0
    while position < len(header):
        match = _ETAG.match(header, position)
        if match is None:
            break
        tags.append(match.group(2))
        position = match.end()
    return tags


def not_modified(request_headers: Iterable[tuple[str, str]], response: UpstreamResponse) -> bool:
    """Whether a client's conditional GET is answered 304 by ``response`` (RFC 9110 section 13.2.2).

    If-None-Match uses the weak comparison; If-Modified-Since counts only without If-None-Match.
    """
    if response.status != 200:
        return False
    pairs = list(request_headers)
    if_none_match = header_values(pairs, "if-none-match")
    if if_none_match:
        etag = response.header("etag")
        if etag is None:
            return False
        tags = _etags(if_none_match)
        opaque = etag.strip().removeprefix("W/")
        return tags is None or opaque in tags
    since = _http_date(header_values(pairs, "if-modified-since"))
    modified = _http_date(response.header("last-modified"))
    return since is not None and modified is not None and modified <= since


def not_modified_response(response: UpstreamResponse) -> UpstreamResponse:
    """The 304 for ``response``: its validators and caching fields, no body (RFC 9110 15.4.5)."""
    kept = {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
    return UpstreamResponse(304, tuple((k, v) for k, v in response.headers if k.lower() in kept), b"")


# --- Cache-Status (RFC 9211) ---


def status_hit(ttl: float, detail: str | None = None) -> str:
    text = f"{CACHE_NAME}; hit; ttl={int(ttl)}"
    return text + (f"; detail={detail}" if detail else "")


def status_forward(reason: str, *, stored: bool = False, fwd_status: int | None = None,
                   ttl: float | None = None, collapsed: bool = False) -> str:
    parts = [CACHE_NAME, f"fwd={reason}"]
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if stored:
        parts.append("stored")
        if ttl is not None:
            parts.append(f"ttl={int(ttl)}")
    if collapsed:
        parts.append("collapsed")
    return "; ".join(parts)


# --- entries ---

_MEMO_LOCK = threading.Lock()  # guards the once-per-entry script JSON; taken only on the first hit


def pairs_size(pairs: tuple[tuple[str, str], ...]) -> int:
    """Accounted bytes of a tuple of header pairs: the tuple, each pair and its two strings."""
    return sys.getsizeof(pairs) + sum(
        sys.getsizeof(pair) + sys.getsizeof(pair[0]) + sys.getsizeof(pair[1]) for pair in pairs)


def _strings_size(key: str, response: UpstreamResponse) -> int:
    return sys.getsizeof(key) + sys.getsizeof(response.body) + pairs_size(response.headers)


@dataclass(slots=True, eq=False)
class CacheEntry:
    """One stored answer and what the cache knows about it. Everything per request is made elsewhere."""

    response: UpstreamResponse
    stored_at: float  # wall-clock seconds (shared by instances through Redis) when received or renewed
    lifetime: int  # seconds fresh from ``stored_at``, already reduced by nothing: see ``age``
    initial_age: int = 0  # the upstream's Age when received
    vary: tuple[str, ...] = ()
    script_json: str | None = None  # the script-safe JSON text, made on the first JSONP read
    size: int = 0  # accounted bytes, for the memory bound
    # The CORS path's headers for this answer that are the same on every hit (hitpath.py makes them
    # on the first one, in the memory store only, and adds them to ``size``).
    cors_headers: tuple[tuple[str, str], ...] | None = None
    jsonp_headers: tuple[tuple[str, str], ...] | None = None  # the same for the JSONP path

    def age(self, now: float) -> int:
        return max(0, int(self.initial_age + now - self.stored_at))

    def ttl(self, now: float) -> float:
        return self.lifetime - (self.initial_age + now - self.stored_at)

    def is_fresh(self, now: float) -> bool:
        return self.ttl(now) > 0

    def script_json_of(self, make: Callable[[bytes], str],
                       remember: Callable[[str], None] | None = None) -> str:
        """The script-safe JSON of the body, made once per entry; ``remember`` persists it."""
        if self.script_json is None:
            with _MEMO_LOCK:
                if self.script_json is None:
                    text = make(self.response.body)
                    self.script_json = text
                    self.size += sys.getsizeof(text)
                    if remember is not None:
                        remember(text)
        return self.script_json


def new_entry(key: str, response: UpstreamResponse, stored_at: float, lifetime: int,
              vary: tuple[str, ...] = (), script_json: str | None = None) -> CacheEntry:
    size = ENTRY_OVERHEAD + _strings_size(key, response) + sum(sys.getsizeof(v) for v in vary)
    if script_json is not None:
        size += sys.getsizeof(script_json)
    return CacheEntry(response, stored_at, lifetime, initial_age(response), vary, script_json, size)


# --- stores ---


class Store(Protocol):
    """Where entries live. Every method answers (None, False) instead of raising when the store is
    unreachable: a cache that is down is a cache that misses."""

    name: str

    def get(self, key: str) -> CacheEntry | None: ...
    def put(self, key: str, entry: CacheEntry, retain: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def get_vary(self, primary: str) -> tuple[str, ...] | None: ...
    def put_vary(self, primary: str, vary: tuple[str, ...], retain: int) -> None: ...
    def remember_script_json(self, key: str, entry: CacheEntry) -> None: ...
    def acquire(self, key: str, seconds: float) -> str | None: ...
    def release(self, key: str, token: str) -> None: ...
    def locked(self, key: str) -> bool: ...
    def waited_for(self, key: str) -> CacheEntry | None: ...
    def health(self) -> dict[str, Any]: ...


class _BytesLRU(cachetools.LRUCache):
    """An LRU whose evictions are reported (cachetools evicts through ``popitem``)."""

    def __init__(self, maxsize: int, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize, getsizeof=_value_size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_evict()
        return item


def _value_size(value: tuple[float, Any]) -> int:
    stored = value[1]
    if isinstance(stored, CacheEntry):
        return stored.size
    return ENTRY_OVERHEAD + sum(sys.getsizeof(v) for v in stored)


class MemoryStore:
    """In-process entries in a cachetools LRU bounded by accounted bytes; one lock around it all.

    Each value is kept with the clock time after which it is dropped (its retention), so a stale
    entry lingers only as long as it can be revalidated or stand in for a failing upstream.
    """

    name = "memory"

    def __init__(self, max_bytes: int, clock: Clock = time.time,
                 on_event: EventHook | None = None, handoff: WorkerHandoff | None = None) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        # Shared by the worker processes of one bridge (made before they fork): one upstream request
        # per cold key across them all (handoff.py). None: each process is on its own.
        self.handoff = handoff
        self._on_event = on_event or (lambda name: None)
        self._lru = _BytesLRU(max_bytes, lambda: self._on_event("eviction"))
        self._lock = threading.Lock()

    def _get(self, key: str) -> Any:
        with self._lock:
            value = self._lru.get(key)
            if value is None:
                return None
            if value[0] <= self.clock():
                del self._lru[key]
                return None
            return value[1]

    def _put(self, key: str, value: Any, retain: int) -> None:
        with self._lock:
            try:
                self._lru[key] = (self.clock() + retain, value)
            except ValueError:
                self._lru.pop(key, None)  # larger than the whole cache: not stored

    def get(self, key: str) -> CacheEntry | None:
        value = self._get("e:" + key)
        return value if isinstance(value, CacheEntry) else None

    def put(self, key: str, entry: CacheEntry, retain: int) -> None:
        self._put("e:" + key, entry, retain)
        if self.handoff is not None and self.handoff.holds(key):  # others may be waiting for it
            self.handoff.publish(key, entry_to_bytes(entry, self.clock() + retain))

    def delete(self, key: str) -> None:
        with self._lock:
            self._lru.pop("e:" + key, None)
        if self.handoff is not None:  # nor may another worker take it from the handoff
            self.handoff.withdraw(key)

    def get_vary(self, primary: str) -> tuple[str, ...] | None:
        value = self._get("v:" + primary)
        return value if isinstance(value, tuple) else None

    def put_vary(self, primary: str, vary: tuple[str, ...], retain: int) -> None:
        self._put("v:" + primary, vary, retain)

    def remember_script_json(self, key: str, entry: CacheEntry) -> None:
        """Re-account the entry now that it holds more: its script JSON, or its kept headers."""
        with self._lock:
            value = self._lru.get("e:" + key)
            if value is not None and value[1] is entry:
                try:
                    self._lru["e:" + key] = value
                except ValueError:
                    self._lru.pop("e:" + key, None)

    # Within one process the gateway's SingleFlight already lets one thread fetch per key; across
    # the workers of one bridge, the handoff's lock does (``seconds`` is Redis's; a flock dies with
    # its holder).
    def acquire(self, key: str, seconds: float) -> str | None:
        if self.handoff is None or self.handoff.acquire(key):
            return "local"
        return None

    def release(self, key: str, token: str) -> None:
        if self.handoff is not None:
            self.handoff.release(key)

    def locked(self, key: str) -> bool:
        return self.handoff is not None and self.handoff.locked(key)

    def waited_for(self, key: str) -> CacheEntry | None:
        """The entry for ``key``: this process's, or the one another worker fetched and handed over
        (kept here from then on, for the rest of its retention)."""
        entry = self.get(key)
        if entry is not None or self.handoff is None:
            return entry
        data = self.handoff.collect(key)
        now = self.clock()
        shared = entry_from_bytes(key, data, now) if data is not None else None
        if shared is None:
            return None
        self._put("e:" + key, shared.entry, max(1, int(shared.retain_until - now)))
        return shared.entry

    @property
    def accounted_bytes(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": "memory", "entries": len(self._lru),
                    "bytes": int(self._lru.currsize), "max_bytes": self.max_bytes}


_SET_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 1 then return redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def entry_to_redis(entry: CacheEntry, retain_until: float) -> dict[str, bytes]:
    meta = {"s": entry.response.status, "h": entry.response.headers, "t": entry.stored_at,
            "l": entry.lifetime, "a": entry.initial_age, "v": entry.vary, "r": retain_until}
    fields = {"m": json.dumps(meta, separators=(",", ":")).encode(), "b": entry.response.body}
    if entry.script_json is not None:
        fields["j"] = entry.script_json.encode()
    return fields


class SharedEntry(NamedTuple):
    entry: CacheEntry
    retain_until: float


def entry_to_bytes(entry: CacheEntry, retain_until: float) -> bytes:
    """An entry as one byte string (the Redis hash's fields, framed), for the worker handoff."""
    fields = entry_to_redis(entry, retain_until)
    head = json.dumps([[name, len(value)] for name, value in fields.items()]).encode()
    return head + b"\n" + b"".join(fields.values())


def entry_from_bytes(key: str, data: bytes, now: float) -> SharedEntry | None:
    """The entry of ``entry_to_bytes``, or None for one past its retention or not an entry."""
    head, _, rest = data.partition(b"\n")
    try:
        fields: dict[bytes, bytes] = {}
        offset = 0
        for name, length in json.loads(head):
            fields[str(name).encode()] = rest[offset:offset + int(length)]
            offset += int(length)
    except (ValueError, TypeError):
        return None
    return _shared_entry(key, fields, now)


def entry_from_redis(key: str, fields: Mapping[bytes, bytes], now: float) -> CacheEntry | None:
    """The entry of a Redis hash, or None for one past its retention by the bridge's clock (Redis
    expires keys by its own) or that is not an entry (half-written, or foreign)."""
    shared = _shared_entry(key, fields, now)
    return None if shared is None else shared.entry


def _shared_entry(key: str, fields: Mapping[bytes, bytes], now: float) -> SharedEntry | None:
    """The entry of the Redis hash's fields and the time it is retained until, reading the
    metadata once; None past its retention or for fields that are not an entry."""
    try:
        meta = json.loads(fields[b"m"])
        retain_until = float(meta["r"])
        if retain_until <= now:
            return None
        response = UpstreamResponse(int(meta["s"]), tuple((str(k), str(v)) for k, v in meta["h"]),
                                    fields[b"b"])
        script_json = fields[b"j"].decode() if b"j" in fields else None
        entry = new_entry(key, response, float(meta["t"]), int(meta["l"]),
                          tuple(meta["v"]), script_json)
        entry.initial_age = int(meta["a"])
        return SharedEntry(entry, retain_until)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None


class RedisStore:
    """Entries in Redis, shared by every instance that names the same server.

    Each entry is a hash (``m`` metadata, ``b`` body, ``j`` script JSON once made) that expires with
    its retention, so Redis drops what the bridge no longer needs; the memory bound is Redis's own
    ``maxmemory``. Every Redis failure is caught here: the store turns into one that always misses,
    says so once in the log and in ``health()``, and tries Redis again after ``REDIS_RETRY_AFTER``.
    """

    name = "redis"

    def __init__(self, url: str, clock: Clock = time.time, on_event: EventHook | None = None,
                 prefix: str = "jcb:", timeout: float = REDIS_TIMEOUT) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.url = url
        self.clock = clock
        self.prefix = prefix
        self._on_event = on_event or (lambda name: None)
        self._up = True
        self._retry_at = 0.0
        self._state_lock = threading.Lock()
        self._set_if_exists = self.client.register_script(_SET_IF_EXISTS)
        self._release = self.client.register_script(_RELEASE)

    @property
    def up(self) -> bool:
        return self._up

    def _call(self, operation: Callable[[], Any], default: Any = None) -> Any:
        if not self._up and self.clock() < self._retry_at:
            return default
        try:
            result = operation()
        except self._errors as exc:
            self._went_down(exc)
            return default
        if not self._up:
            with self._state_lock:
                was_down, self._up = not self._up, True
            if was_down:
                log.warning("cache: redis at %s is reachable again; sharing entries again",
                            _redacted(self.url))
                self._on_event("redis_up")
        return result

    def _went_down(self, exc: BaseException) -> None:
        with self._state_lock:
            was_up, self._up = self._up, False
            self._retry_at = self.clock() + REDIS_RETRY_AFTER
        if was_up:
            # Once per outage, not per request: the bridge keeps serving from the upstreams.
            log.warning("cache: redis at %s is unreachable (%s); serving from the upstreams "
                        "uncached until it is back", _redacted(self.url), type(exc).__name__)
            self._on_event("redis_down")

    def get(self, key: str) -> CacheEntry | None:
        fields = self._call(lambda: self.client.hgetall(self.prefix + "e:" + key))
        return entry_from_redis(key, fields, self.clock()) if fields else None

    def put(self, key: str, entry: CacheEntry, retain: int) -> None:
        def write() -> None:
            name = self.prefix + "e:" + key
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(name)
            pipe.hset(name, mapping=entry_to_redis(entry, self.clock() + retain))  # type: ignore[arg-type,unused-ignore]
            pipe.expire(name, retain)
            pipe.execute()
        self._call(write)

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete(self.prefix + "e:" + key))

    def get_vary(self, primary: str) -> tuple[str, ...] | None:
        raw = self._call(lambda: self.client.get(self.prefix + "v:" + primary))
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            if float(record["r"]) <= self.clock():
                return None
            return tuple(str(name) for name in record["v"])
        except (ValueError, KeyError, TypeError):
            return None

    def put_vary(self, primary: str, vary: tuple[str, ...], retain: int) -> None:
        record = json.dumps({"r": self.clock() + retain, "v": list(vary)})
        self._call(lambda: self.client.set(self.prefix + "v:" + primary, record, ex=retain))

    def remember_script_json(self, key: str, entry: CacheEntry) -> None:
        """Add the script JSON to the stored hash, only if it still exists (never revive a key)."""
        text = entry.script_json
        if text is not None:
            self._call(lambda: self._set_if_exists(keys=[self.prefix + "e:" + key],
                                                   args=["j", text.encode()]))

    def waited_for(self, key: str) -> CacheEntry | None:
        return self.get(key)  # what another instance stores is in Redis for everyone

    def acquire(self, key: str, seconds: float) -> str | None:
        """The fetch lock for ``key``, held at most ``seconds`` (a dead holder blocks nobody longer).

        Without Redis every instance fetches for itself, so the lock is granted.
        """
        token = secrets.token_hex(8)
        acquired = self._call(lambda: self.client.set(self.prefix + "l:" + key, token, nx=True,
                                                      px=max(1, int(seconds * 1000))),
                              default=True)
        return token if acquired else None

    def release(self, key: str, token: str) -> None:
        self._call(lambda: self._release(keys=[self.prefix + "l:" + key], args=[token]))

    def locked(self, key: str) -> bool:
        return bool(self._call(lambda: self.client.exists(self.prefix + "l:" + key), default=False))

    def health(self) -> dict[str, Any]:
        # A ping, unless Redis is known down and not yet due another try.
        reachable = bool(self._call(self.client.ping, default=False))
        return {"backend": "redis", "redis": "up" if reachable else "down"}


def _redacted(url: str) -> str:
    """The url without a password, for logs."""
    return re.sub(r"//[^@/]*@", "//***@", url)


# --- single-flight ---


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

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)

    def waiting(self, key: str | None = None) -> int:
        """How many threads wait for the call under way for ``key`` (for any key: None)."""
        with self._lock:
            if key is None:
                return sum(flight.waiters for flight in self._flights.values())
            flight = self._flights.get(key)
            return flight.waiters if flight is not None else 0


# --- the cache as the gateway sees it ---


class Cache:
    """The store, the settings and the clock, and the single-flight of this process."""

    def __init__(self, settings: CacheConfig, store: Store, clock: Clock = time.time,
                 on_event: EventHook | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_event = on_event or (lambda name: None)
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
        if settings.backend == "memory":
            # Several workers of this bridge share one herd lock and hand entries over (handoff.py).
            handoff = None
            if config.server.workers > 1:
                try:
                    handoff = WorkerHandoff()
                except OSError as exc:  # no writable temporary directory: each worker on its own
                    log.warning("cache: no worker handoff (%s); a herd costs one upstream request per "
                                "worker", exc)
            store = MemoryStore(settings.max_bytes, clock, relay, handoff)
        else:
            store = RedisStore(settings.backend, clock, relay)
        cache = cls(settings, store, clock, hook)
        return cache

    def event(self, name: str) -> None:
        try:
            self.on_event(name)
        except Exception:  # a broken metrics hook must never fail a request
            log.exception("cache: the on_event hook failed for %r", name)

    def health(self) -> dict[str, Any]:
        return self.store.health()
