"""One stored answer and what the cache knows about it: ``CacheEntry``, its size, its names in a store.

An entry is the upstream's answer to a GET (status, filtered headers, body) with when it was stored,
how long it is fresh, the upstream's own Age, the request headers it varies on, and what is made from
it once and kept (its script-safe JSON; the CORS and JSONP paths' unchanging headers, in the memory
store). ``size`` is what it is accounted at against ``max_bytes``. ``ENTRY``/``VARY`` prefix the keys
stores keep entries and Vary records under. Nothing here is per request, and nothing reads a clock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..upstream.message import UpstreamResponse
from .freshness import initial_age

ENTRY = "e:"  # a store's key of the entry under a variant key
VARY = "v:"  # a store's key of the Vary record under a primary key


@dataclass(frozen=True, slots=True)
class Vary:
    """The request headers a primary key's answers vary on (lowercase names)."""

    names: tuple[str, ...]

# What an entry costs beyond its strings: the entry, its response, the LRU's three dict slots.
ENTRY_OVERHEAD = 640

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
    retain_until: float = 0.0  # when a store lets it go: its freshness, then its use when stale
    # The CORS path's headers for this answer that are the same on every request (the road's
    # renderer makes them once, in the memory store only, and adds them to ``size``).
    cors_headers: tuple[tuple[str, str], ...] | None = None
    jsonp_headers: tuple[tuple[str, str], ...] | None = None  # the same for the JSONP path
    # What a purge finds it by: the upstream, path and query it was forwarded as, and the tags the
    # upstream gave it (Surrogate-Key / Cache-Tag, never sent to clients).
    address: tuple[str, str, str] = ("", "", "")
    tags: tuple[str, ...] = ()
    invalidation_slot: int = -1  # where the invalidation table keeps its url's time, once looked up

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
              vary: tuple[str, ...] = (), script_json: str | None = None,
              retain_until: float = 0.0, address: tuple[str, str, str] = ("", "", ""),
              tags: tuple[str, ...] = ()) -> CacheEntry:
    size = ENTRY_OVERHEAD + _strings_size(key, response) + sum(sys.getsizeof(v) for v in vary) \
        + sum(sys.getsizeof(part) for part in (*address, *tags))
    if script_json is not None:
        size += sys.getsizeof(script_json)
    return CacheEntry(response, stored_at, lifetime, initial_age(response), vary, script_json, size,
                      retain_until, address=address, tags=tags)
