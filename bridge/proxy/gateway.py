"""How an upstream answer is obtained for the road, shared by the CORS and JSONP paths.

``Gateway.fetch`` takes the request the road built and returns an ``Answer``: the upstream's response
and what the cache says about it (``CacheStatus``, ``Age``). Both paths come here, so they share one
cache and one upstream client. The steps are here (look up, wait for a fetch already under way,
revalidate, serve stale while one background refresh renews the entry, serve stale on error, store);
the rules they follow are the cache's pure functions
(``cache/key.py``, ``cache/freshness.py``), and the herd is ``cache/herd.py``'s. Wrapping (CORS grants,
JSONP scripts) happens in ``render.py``, per request, never in what is stored.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from threading import Lock

from ..cache import Cache, CacheEntry
from ..cache.entry import new_entry
from ..cache.freshness import (
    STALE_IF_ERROR_STATUSES,
    conditional_headers,
    has_validator,
    may_share,
    not_modified,
    not_modified_response,
    renewed_headers,
    retention,
    stale_while_revalidate,
    storable_lifetime,
)
from ..cache.herd import LOCK_POLL
from ..cache.key import as_cached, bypass_reason, request_keys, response_vary, variant_key
from ..cache.status import CacheStatus, forwarded_status, hit_status
from ..config import UpstreamConfig
from ..errors import UpstreamError, UpstreamTimeout
from ..policy.paths import below_base, redirect_target
from ..upstream.client import UpstreamClient
from ..upstream.message import UpstreamRequest, UpstreamResponse

log = logging.getLogger(__name__)

# RFC 9111 section 4.4: the success of any other method (unsafe, or of unknown safety) invalidates
# what the cache holds for the url (RFC 9110 section 9.2.1 names these safe).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_SCRIPT_LOCK = Lock()  # taken once per answer that no entry holds, on its first JSONP read


@dataclass(slots=True)
class Answer:
    response: UpstreamResponse
    cache_status: CacheStatus | None = None
    age: int | None = None
    entry: CacheEntry | None = field(default=None, repr=False)  # the cache entry it was served from
    key: str = field(default="", repr=False)  # the entry's variant key
    cache: Cache | None = field(default=None, repr=False)  # where the entry is kept
    _script_json: str | None = field(default=None, repr=False)

    def script_json(self, make: Callable[[bytes], str]) -> str:
        """The script-safe JSON text of the body, made once by ``make(body)``: once per cache entry
        when the answer came from one (so a hit parses no JSON), else once per answer."""
        if self.entry is not None:
            return self.entry.script_json_of(make, self.renew_entry)
        if self._script_json is None:
            with _SCRIPT_LOCK:  # a collapsed answer is shared by the threads that waited for it
                if self._script_json is None:
                    self._script_json = make(self.response.body)
        return self._script_json

    def renew_entry(self, _: str = "") -> None:
        """Write the entry again now that it holds more (script JSON, kept headers)."""
        if self.entry is not None and self.cache is not None:
            self.cache.renew(self.key, self.entry)

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
class FetchOutcome:
    """What the request that asked the upstream hands to the requests that waited for it."""

    answer: Answer
    key: str | None  # the variant it answers; None when it may not be shared (no-store, private)
    vary: tuple[str, ...] = ()


class Refresher:
    """Background refreshes (stale-while-revalidate): at most one per key in this process, on a few
    threads started on first use, in the process that uses them (a gunicorn worker, after the fork).
    Past ``pending`` keys waiting, a refresh is not queued: the entry is served stale, and a later
    request asks again."""

    def __init__(self, threads: int = 2, pending: int = 256) -> None:
        self.threads = threads
        self.pending = pending
        self._lock = Lock()
        self._keys: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, key: str, work: Callable[[], None]) -> bool:
        """Run ``work`` in the background unless ``key`` is already being refreshed here."""
        with self._lock:
            if key in self._keys or len(self._keys) >= self.pending:
                return False
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bridge-refresh")
                self._pid = os.getpid()
            self._keys.add(key)
            pool = self._pool

        def run() -> None:
            try:
                work()
            except Exception:  # a refresh must never take its thread down with it
                log.exception("cache: a background refresh failed")
            finally:
                with self._lock:
                    self._keys.discard(key)

        pool.submit(run)
        return True


class Gateway:
    def __init__(self, client: UpstreamClient, cache: Cache | None = None) -> None:
        self.client = client
        self.cache = cache
        self.refresher = Refresher()

    def fetch(self, request: UpstreamRequest, request_id: str | None = None) -> Answer:
        """The answer to ``request``; ``request_id`` goes upstream with any trip it causes."""
        cache = self.cache
        bypass = bypass_reason(request) or ("bypass" if cache is None else None)
        if bypass is not None or cache is None:
            response = self.client.send(request, request_id)
            if cache is not None and request.method not in SAFE_METHODS and 200 <= response.status < 400:
                self._invalidate(request, response)
            return Answer(response, forwarded_status(bypass or "bypass"))
        cache.catch_up()  # purges written by other workers since this one last looked
        request = as_cached(request)  # the client's validators are answered from the entry
        # An answer that varies on nothing is kept under the key of no Vary: looked for first, it is
        # found in one lookup; only when there is none does the Vary record say which variant to
        # look for (a stored answer without Vary suits every request, RFC 9111 section 4.1).
        primary, key = request_keys(request, ())
        entry = cache.entry(key)
        vary: tuple[str, ...] | None = ()
        if entry is None:
            vary = cache.vary(primary)
            if vary:
                _, key = request_keys(request, vary)
                entry = cache.entry(key)
        now = cache.clock()
        if entry is not None and entry.is_fresh(now):
            cache.event("hit")
            return self._entry_answer(entry, key, hit_status(entry.ttl(now)), now)
        if entry is not None and -entry.ttl(now) < stale_while_revalidate(
                entry.response, request.upstream.stale_while_revalidate):
            # RFC 5861: answered at once from the stale entry while one refresh renews it.
            cache.event("hit")
            refresh = request if request.method == "GET" else replace(request, method="GET")
            self.refresher.submit(key, lambda: self._refresh(refresh, primary, key, entry))
            return self._entry_answer(entry, key, hit_status(entry.ttl(now),
                                                             detail="stale-while-revalidate"), now)
        reason = "stale" if entry is not None else ("vary-miss" if vary else "uri-miss")
        if request.method == "HEAD":
            # HEAD is served from GET's entries, but a HEAD miss has no body to store.
            cache.event("miss")
            return Answer(self.client.send(request, request_id), forwarded_status(reason))
        # A waiter may wait for the fetcher's upstream deadline and its wait on another instance.
        wait = 2 * request.upstream.timeout + 2
        try:
            outcome, fetched = cache.flight.run(
                key, lambda: self._fill(request, request_id, primary, key, entry, reason), wait)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {request.upstream.name!r} did not answer within "
                                  f"{wait:g}s") from None
        if fetched:
            return outcome.answer
        cache.event("collapsed")
        if outcome.key is not None and variant_key(primary, outcome.vary, request.headers) == outcome.key:
            shared = outcome.answer
            status = shared.cache_status.shared() if shared.cache_status is not None else None
            return replace(shared, cache_status=status, _script_json=None)
        # What the fetcher got may not be shared (no-store, private, another variant): ask ourselves.
        return Answer(self.client.send(request, request_id), forwarded_status(reason))

    def _entry_answer(self, entry: CacheEntry, key: str, status: CacheStatus, now: float) -> Answer:
        return Answer(entry.response, status, entry.age(now), entry, key, self.cache)

    def _fill(self, request: UpstreamRequest, request_id: str | None, primary: str, key: str,
              entry: CacheEntry | None, reason: str) -> FetchOutcome:
        """Ask the upstream for ``key``, unless someone filled it while this thread waited its turn."""
        assert self.cache is not None
        cache, locks = self.cache, self.cache.locks
        lock_seconds = request.upstream.timeout + 1
        token = locks.acquire(key, lock_seconds)
        if token is None:
            # Another process is asking the upstream for this key: wait for its entry instead.
            waited = self._await_other_process(key, lock_seconds)
            if waited is not None:
                cache.event("hit")
                now = cache.clock()
                status = hit_status(waited.ttl(now)).shared()
                return FetchOutcome(self._entry_answer(waited, key, status, now), key, waited.vary)
        try:
            # Looked at again only now, holding the lock: a holder stores before it releases, so an
            # entry filled by another thread, worker or instance since our first look is seen here
            # (another worker's through the handoff).
            current = cache.entry_after_wait(key)
            now = cache.clock()
            if current is not None and current.is_fresh(now):
                cache.event("hit")
                return FetchOutcome(self._entry_answer(current, key, hit_status(current.ttl(now)),
                                                       now), key, current.vary)
            return self._ask_upstream(request, request_id, primary, key, current or entry, reason)
        finally:
            if token is not None:
                locks.release(key, token)

    def _refresh(self, request: UpstreamRequest, primary: str, key: str, entry: CacheEntry) -> None:
        """Renew a stale entry in the background: one refresh per key across the workers and, with
        Redis, the instances (whoever holds the key's lock refreshes; the others keep serving stale).
        A failed refresh leaves the entry as a failed foreground request would."""
        assert self.cache is not None
        cache = self.cache
        token = cache.locks.acquire(key, request.upstream.timeout + 1)
        if token is None:
            return  # another worker or instance is refreshing it, or fetching it
        try:
            current = cache.entry_after_wait(key)
            if current is not None and current.is_fresh(cache.clock()):
                return  # renewed since this request looked
            cache.event("refresh")
            try:
                outcome = self._ask_upstream(request, None, primary, key, current or entry, "stale")
            except (UpstreamError, UpstreamTimeout) as exc:
                cache.event("refresh_failed")
                log.warning("cache: background refresh of %s %s failed: %s", request.upstream.name,
                            request.path, exc)
                return
            answer = outcome.answer
            if answer.response.status >= 500 or (answer.cache_status is not None
                                                  and answer.cache_status.detail == "stale-if-error"):
                cache.event("refresh_failed")
                log.warning("cache: background refresh of %s %s: the upstream answered %d",
                            request.upstream.name, request.path, answer.response.status)
        finally:
            cache.locks.release(key, token)

    def _invalidate(self, request: UpstreamRequest, response: UpstreamResponse) -> None:
        """RFC 9111 section 4.4: a successful unsafe request invalidates its url, and the urls its
        Location and Content-Location name below the same base, in every worker and instance."""
        assert self.cache is not None
        upstream = request.upstream
        targets = {(request.path, request.query)}
        for name in ("location", "content-location"):
            value = response.header(name)
            target = redirect_target(request.url, value) if value else None
            below = below_base(upstream.url, target) if target is not None else None
            if below is not None:
                targets.add(below)
        for path, query in sorted(targets):
            self.cache.invalidate((upstream.name, path, query))
        self.cache.event("invalidated")

    def _await_other_process(self, key: str, seconds: float) -> CacheEntry | None:
        assert self.cache is not None
        cache = self.cache
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(LOCK_POLL)
            entry = cache.entry_after_wait(key)
            if entry is not None and entry.is_fresh(cache.clock()):
                return entry
            if not cache.locks.locked(key):
                break  # the holder finished without storing, or died and its lock expired
        return None

    def _ask_upstream(self, request: UpstreamRequest, request_id: str | None, primary: str,
                      key: str, entry: CacheEntry | None, reason: str) -> FetchOutcome:
        assert self.cache is not None
        cache, upstream = self.cache, request.upstream
        settings = cache.settings
        revalidating = entry is not None and has_validator(entry.response)
        sent = replace(request, headers=request.headers + conditional_headers(entry.response)) \
            if entry is not None and revalidating else request
        cache.event("miss")
        started = cache.clock()
        address = (upstream.name, request.path, request.query)
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
            lifetime = storable_lifetime(renewed, upstream.ttl, settings.negative_ttl,
                                         settings.heuristic)
            if lifetime is None:
                cache.drop(key)
                return FetchOutcome(Answer(renewed, forwarded_status("stale", fwd_status=304)),
                                    None)
            keep = retention(lifetime, True, upstream.ttl, self._stale_use(renewed, upstream))
            # The body did not change, so neither did its script JSON.
            tags = response.tags or entry.tags
            if cache.purged_since(address, tags, started):
                return FetchOutcome(Answer(renewed, forwarded_status("stale", fwd_status=304)), None)
            fresh = new_entry(key, renewed, now, lifetime, entry.vary, entry.script_json, now + keep,
                              address, tags)
            cache.keep(key, fresh)
            cache.event("revalidated")
            status = forwarded_status("stale", fwd_status=304, stored=True, ttl=fresh.ttl(now))
            return FetchOutcome(self._entry_answer(fresh, key, status, now), key, fresh.vary)

        vary = response_vary(response, upstream.forward_headers)
        lifetime = storable_lifetime(response, upstream.ttl, settings.negative_ttl,
                                     settings.heuristic) \
            if vary is not None else None
        if lifetime is None or vary is None:
            if entry is not None:
                cache.drop(key)
            answer = Answer(response, forwarded_status(reason, fwd_status=response.status))
            if vary is None or not may_share(response):
                return FetchOutcome(answer, None)
            return FetchOutcome(answer, variant_key(primary, vary, request.headers), vary)
        if cache.purged_since(address, response.tags, started):
            # Purged while it was being fetched: this answer may be what the purge was meant to drop.
            return FetchOutcome(Answer(response, forwarded_status(reason, fwd_status=response.status)),
                                None)
        keep = retention(lifetime, has_validator(response), upstream.ttl,
                         self._stale_use(response, upstream))
        cache.keep_vary(primary, vary, keep)
        key = variant_key(primary, vary, request.headers)
        if vary:  # an answer of this url that varied on nothing is looked up first: not any longer
            cache.drop(request_keys(request, ())[1])
        fresh = new_entry(key, response, now, lifetime, vary, retain_until=now + keep,
                          address=address, tags=response.tags)
        cache.keep(key, fresh)
        cache.event("stored")
        status = forwarded_status(reason, stored=True, ttl=fresh.ttl(now))
        return FetchOutcome(self._entry_answer(fresh, key, status, now), key, vary)

    def _stale_use(self, response: UpstreamResponse, upstream: UpstreamConfig) -> int:
        """Seconds a stale entry of ``response`` is still of use: for stale-if-error or
        stale-while-revalidate, whichever is longer."""
        assert self.cache is not None
        return max(self.cache.settings.stale_if_error,
                   stale_while_revalidate(response, upstream.stale_while_revalidate))

    def _stale_if_error(self, entry: CacheEntry | None, key: str) -> FetchOutcome | None:
        """The stale entry standing in for a failed upstream, within ``stale_if_error`` (RFC 5861)."""
        assert self.cache is not None
        now = self.cache.clock()
        if entry is None or -entry.ttl(now) > self.cache.settings.stale_if_error:
            return None
        self.cache.event("stale")
        status = hit_status(entry.ttl(now), detail="stale-if-error")
        return FetchOutcome(self._entry_answer(entry, key, status, now), key, entry.vary)
