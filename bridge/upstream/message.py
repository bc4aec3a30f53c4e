"""What crosses to and from an upstream: the request the road builds and the answer the client reads.

``UpstreamRequest`` is checked already (its path by ``policy.paths``, its headers by
``proxy/forward.py``); ``UpstreamResponse`` carries headers already filtered for the browser
(``policy.headers.filter_response_headers``). Plain frozen data, so the cache can keep an answer and
the road a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import UpstreamConfig
from ..policy.paths import upstream_url


@dataclass(frozen=True)
class UpstreamRequest:
    upstream: UpstreamConfig
    method: str
    path: str  # percent-encoded, relative to the upstream's base, already checked by split_rest
    query: str = ""  # the raw query string, as forwarded (proxy/forward.py)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    # What the cache derives from this request (its keys, its cached form), kept with it: the road
    # plans one request per request shape and hands the same one to the gateway every time. No part
    # of its equality.
    derived: dict[object, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def url(self) -> str:
        return upstream_url(self.upstream.url, self.path, self.query)



@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: tuple[tuple[str, str], ...]  # already filtered for the browser
    body: bytes
    elapsed: float = 0.0
    # The upstream's Surrogate-Key / Cache-Tag tags, for purging; their headers are not in ``headers``.
    tags: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None
