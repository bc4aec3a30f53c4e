"""How an upstream answer is obtained for the proxy road, shared by the CORS and JSONP paths.

``Gateway.fetch`` takes a checked ``UpstreamRequest`` and returns an ``Answer``: the upstream's
response plus what the cache says about it (``Cache-Status``, ``Age``). Both paths go through here, so
they share one cache and one upstream client; neither knows how the answer was obtained. The steps are
here (look up, wait for a fetch already under way, revalidate, serve stale on error, store); the rules
they follow are the pure functions of ``cache.py``. Wrapping (CORS grants, JSONP scripts) happens on
the road (``proxy/render.py``), per request, never in what is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from threading import Lock

from .cache import (
    CACHE_NAME,
    LOCK_POLL,
    STALE_IF_ERROR_STATUSES,
    Cache,
    CacheEntry,
    as_cached,
    bypass_reason,
    conditional_headers,
    has_validator,
    may_share,
    new_entry,
    not_modified,
    not_modified_response,
    renewed_headers,
    request_keys,
    response_vary,
    retention,
    status_forward,
    status_hit,
    storable_lifetime,
    variant_key,
)
from .errors import UpstreamError, UpstreamTimeout
from .upstream import UpstreamClient, UpstreamRequest, UpstreamResponse

__all__ = ["CACHE_NAME", "Answer", "Gateway"]

_SCRIPT_LOCK = Lock()  # taken once per answer that no entry holds, on its first JSONP read


@dataclass
class Answer:
    response: UpstreamResponse
    cache_status: str | None = None  # an RFC 9211 Cache-Status member, e.g. "jsonp-cors-bridge; hit"
    age: int | None = None
    entry: CacheEntry | None = field(default=None, repr=False)  # the cache entry it was served from
    remember: Callable[[str], None] | None = field(default=None, repr=False)  # persists script JSON
    _script_json: str | None = field(default=None, repr=False)

    def script_json(self, make: Callable[[bytes], str]) -> str:
        """The script-safe JSON text of the body, made once by ``make(body)``: once per cache entry
        when the answer came from one (so a hit parses no JSON), else once per answer."""
        if self.entry is not None:
            return self.entry.script_json_of(make, self.remember)
        if self._script_json is None:
            with _SCRIPT_LOCK:  # a collapsed answer is shared by the threads that waited for it
                if self._script_json is None:
                    self._script_json = make(self.response.body)
        return self._script_json

    def conditional(self, request_headers: Sequence[tuple[str, str]]) -> Answer:
        """This answer, or its 304 when the client's If-None-Match / If-Modified-Since matches.

        Only cached answers are checked here: for the others the client's validators went to the
        upstream, which answered them itself.
        """
        if not request_headers or self.entry is None or not not_modified(request_headers,
                                                                          self.response):
            return self
        return Answer(not_modified_response(self.response), self.cache_status, self.age)


@dataclass
class _Filled:
    """What the thread that asked the upstream hands to the threads that waited for it."""

    answer: Answer
    key: str | None  # the variant it answers; None when it may not be shared (no-store, private)
    vary: tuple[str, ...] = ()


class Gateway:
    def __init__(self, client: UpstreamClient, cache: Cache | None = None) -> None:
        self.client = client
        self.cache = cache

    def fetch(self, request: UpstreamRequest, request_id: str | None = None) -> Answer:
        """The answer to ``request``; ``request_id`` goes upstream with any trip it causes."""
        cache = self.cache
        bypass = bypass_reason(request) or ("bypass" if cache is None else None)
        if bypass is not None or cache is None:
            return Answer(self.client.send(request, request_id),
                          cache_status=status_forward(bypass or "bypass"))
        request = as_cached(request)  # the client's validators are answered from the entry
        primary, vary, key, entry, now = self._look_up(cache, request)
        if entry is not None and entry.is_fresh(now):
            cache.event("hit")
            return self._entry_answer(entry, key, status_hit(entry.ttl(now)), now)
        reason = "stale" if entry is not None else ("vary-miss" if vary else "uri-miss")
        if request.method == "HEAD":
            # HEAD is served from GET's entries, but a HEAD miss has no body to store.
            cache.event("miss")
            return Answer(self.client.send(request, request_id), cache_status=status_forward(reason))
        # A waiter may wait for the fetcher's upstream deadline and its wait on another instance.
        wait = 2 * request.upstream.timeout + 2
        try:
            filled, fetched = cache.flight.run(
                key, lambda: self._fill(request, request_id, primary, key, entry, reason), wait)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {request.upstream.name!r} did not answer within "
                                  f"{wait:g}s") from None
        if fetched:
            return filled.answer
        cache.event("collapsed")
        if filled.key is not None and variant_key(primary, filled.vary, request.headers) == filled.key:
            shared = filled.answer
            return Answer(shared.response, f"{shared.cache_status}; collapsed", shared.age,
                          shared.entry, shared.remember)
        # What the fetcher got may not be shared (no-store, private, another variant): ask ourselves.
        return Answer(self.client.send(request, request_id), cache_status=status_forward(reason))

    @staticmethod
    def _look_up(cache: Cache, request: UpstreamRequest
                 ) -> tuple[str, tuple[str, ...] | None, str, CacheEntry | None, float]:
        """The request's primary key, the Vary stored for it, its variant key, entry and the time."""
        primary, _ = request_keys(request, ())
        vary = cache.store.get_vary(primary)
        _, key = request_keys(request, vary)
        return primary, vary, key, cache.store.get(key), cache.clock()

    def _entry_answer(self, entry: CacheEntry, key: str, status: str, now: float) -> Answer:
        store = self.cache.store if self.cache is not None else None

        def remember(_: str) -> None:
            if store is not None:
                store.remember_script_json(key, entry)

        return Answer(entry.response, status, entry.age(now), entry, remember)

    def _fill(self, request: UpstreamRequest, request_id: str | None, primary: str, key: str,
              entry: CacheEntry | None, reason: str) -> _Filled:
        """Ask the upstream for ``key``, unless someone filled it while this thread waited its turn."""
        assert self.cache is not None
        cache, store = self.cache, self.cache.store
        lock_seconds = request.upstream.timeout + 1
        token = store.acquire(key, lock_seconds)
        if token is None:
            # Another instance is asking the upstream for this key: wait for its entry instead.
            waited = self._await_other_instance(key, lock_seconds)
            if waited is not None:
                cache.event("hit")
                now = cache.clock()
                return _Filled(self._entry_answer(waited, key, status_hit(waited.ttl(now)) +
                                                  "; collapsed", now), key, waited.vary)
        try:
            # Looked at again only now, holding the lock: a holder stores before it releases, so an
            # entry filled by another thread, worker or instance since our first look is seen here
            # (another worker's through the memory store's handoff).
            current = store.waited_for(key)
            now = cache.clock()
            if current is not None and current.is_fresh(now):
                cache.event("hit")
                return _Filled(self._entry_answer(current, key, status_hit(current.ttl(now)), now),
                               key, current.vary)
            return self._ask_upstream(request, request_id, primary, key, current or entry, reason)
        finally:
            if token is not None:
                store.release(key, token)

    def _await_other_instance(self, key: str, seconds: float) -> CacheEntry | None:
        assert self.cache is not None
        store = self.cache.store
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(LOCK_POLL)
            entry = store.waited_for(key)
            if entry is not None and entry.is_fresh(self.cache.clock()):
                return entry
            if not store.locked(key):
                break  # the holder finished without storing, or died and its lock expired
        return None

    def _ask_upstream(self, request: UpstreamRequest, request_id: str | None, primary: str,
                      key: str, entry: CacheEntry | None, reason: str) -> _Filled:
        assert self.cache is not None
        cache, upstream = self.cache, request.upstream
        settings = cache.settings
        revalidating = entry is not None and has_validator(entry.response)
        sent = replace(request, headers=request.headers + conditional_headers(entry.response)) \
            if entry is not None and revalidating else request
        cache.event("miss")
        try:
            response = self.client.send(sent, request_id)
        except (UpstreamError, UpstreamTimeout):
            stale = self._stale_if_error(entry, key)
            if stale is None:
                raise
            return stale
        if response.status in STALE_IF_ERROR_STATUSES:
            stale = self._stale_if_error(entry, key)
            if stale is not None:
                return stale
        now = cache.clock()

        if response.status == 304 and entry is not None and revalidating:
            renewed = UpstreamResponse(entry.response.status,
                                       renewed_headers(entry.response.headers, response.headers),
                                       entry.response.body, response.elapsed)
            lifetime = storable_lifetime(renewed, upstream.ttl, settings.negative_ttl)
            if lifetime is None:
                cache.store.delete(key)
                return _Filled(Answer(renewed, status_forward("stale", fwd_status=304)), None)
            # The body did not change, so neither did its script JSON.
            fresh = new_entry(key, renewed, now, lifetime, entry.vary, entry.script_json)
            cache.store.put(key, fresh, retention(lifetime, True, upstream.ttl, settings.stale_if_error))
            cache.event("revalidated")
            status = status_forward("stale", fwd_status=304, stored=True, ttl=fresh.ttl(now))
            return _Filled(self._entry_answer(fresh, key, status, now), key, fresh.vary)

        vary = response_vary(response, upstream.forward_headers)
        lifetime = storable_lifetime(response, upstream.ttl, settings.negative_ttl) \
            if vary is not None else None
        if lifetime is None or vary is None:
            if entry is not None:
                cache.store.delete(key)
            answer = Answer(response, status_forward(reason, fwd_status=response.status))
            if vary is None or not may_share(response):
                return _Filled(answer, None)
            return _Filled(answer, variant_key(primary, vary, request.headers), vary)
        keep = retention(lifetime, has_validator(response), upstream.ttl, settings.stale_if_error)
        cache.store.put_vary(primary, vary, keep)
        key = variant_key(primary, vary, request.headers)
        fresh = new_entry(key, response, now, lifetime, vary)
        cache.store.put(key, fresh, keep)
        cache.event("stored")
        status = status_forward(reason, stored=True, ttl=fresh.ttl(now))
        return _Filled(self._entry_answer(fresh, key, status, now), key, vary)

    def _stale_if_error(self, entry: CacheEntry | None, key: str) -> _Filled | None:
        """The stale entry standing in for a failed upstream, within ``stale_if_error`` (RFC 5861)."""
        assert self.cache is not None
        now = self.cache.clock()
        if entry is None or -entry.ttl(now) > self.cache.settings.stale_if_error:
            return None
        self.cache.event("stale")
        status = status_hit(entry.ttl(now), detail="stale-if-error")
        return _Filled(self._entry_answer(entry, key, status, now), key, entry.vary)
