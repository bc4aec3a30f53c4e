"""The one road from a view to an upstream answer, shared by the CORS and JSONP paths.

``Gateway.fetch`` takes a checked ``UpstreamRequest`` and returns an ``Answer``: the upstream's
response plus what the cache says about it (``Cache-Status``, ``Age``). Both paths go through here, so
they share one cache and one upstream client; neither knows how the answer was obtained. Wrapping
(CORS grants, JSONP scripts) happens in the views, per request, never in what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Lock

from .upstream import UpstreamClient, UpstreamRequest, UpstreamResponse

CACHE_NAME = "jsonp-cors-bridge"


@dataclass
class Answer:
    response: UpstreamResponse
    cache_status: str | None = None  # an RFC 9211 Cache-Status member, e.g. "jsonp-cors-bridge; hit"
    age: int | None = None
    _script_json: str | None = field(default=None, repr=False)
    _lock: Lock = field(default_factory=Lock, repr=False)

    def script_json(self, make: Callable[[bytes], str]) -> str:
        """The script-safe JSON text of the body, made once per answer by ``make(body)``."""
        if self._script_json is None:
            with self._lock:
                if self._script_json is None:
                    self._script_json = make(self.response.body)
        return self._script_json


class Gateway:
    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    def fetch(self, request: UpstreamRequest) -> Answer:
        response = self.client.send(request)
        return Answer(response, cache_status=f"{CACHE_NAME}; fwd=uri-miss")
