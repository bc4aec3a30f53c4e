"""The one function that builds what the bridge asks an upstream, from what the client sent.

``forwarded_request`` is the only place an ``UpstreamRequest`` is made for a client's request, and the
cache key is derived from the request it makes (``cache.primary_key``, ``cache.variant_key``), so two
requests that share a key are forwarded alike: the same method class, url and Accept, and the same
value of every header the upstream's ``Vary`` names. The path is the checked REST, re-encoded
(``upstream.checked_path``); the query is passed on byte for byte, less the JSONP path's own control
parameters (the callback, ``_`` and ``envelope``), which never reach an upstream. Request headers are
an allowlist (``upstream.FORWARDED_REQUEST_HEADERS`` and the upstream's ``forward_headers``, never
credentials or hop-by-hop fields), and Accept is normalised: the bridge serves JSON, so an Accept a
JSON answer satisfies is sent as ``application/json`` on both paths. This module builds; it checks
nothing but the path and knows nothing about caching, budgets or rendering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote_plus

from ..config import UpstreamConfig
from ..policy.headers import FORWARDED_REQUEST_HEADERS, HOP_BY_HOP, NEVER_FORWARDED
from ..policy.jsonp import CONTROL_PARAMS
from ..policy.paths import checked_path
from ..upstream.message import UpstreamRequest
from .request import QUERY_MEMO_CHARS, header_key

JSON = "application/json"
JSON_MEDIA_RANGES = frozenset({"*/*", "application/*", "application/json"})
# The client's validators on the JSONP path describe the wrapped script, not the upstream's JSON.
JSONP_DROPPED_REQUEST_HEADERS = frozenset({"accept", "if-none-match", "if-modified-since"})
_REFUSED_RANGE = re.compile(r"(?:^|;)\s*q\s*=\s*0(?:\.0*)?\s*(?:;|$)")
_NOT_TARGET_SAFE = re.compile(r"[^\x21-\x7e]")


@lru_cache(maxsize=1024)
def asks_for_json(accept: str) -> bool:
    """Whether a JSON answer satisfies this Accept: missing, ``*/*``, ``application/*`` or
    ``application/json`` anywhere in the list (a range refused with ``q=0`` does not count)."""
    ranges = []
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        if media.strip() and _REFUSED_RANGE.search(params) is None:
            ranges.append(media.strip().lower())
    return not ranges or any(r in JSON_MEDIA_RANGES for r in ranges)


def upstream_accept(accept: str | None) -> str:
    """The Accept the bridge sends: ``application/json`` for anything JSON satisfies (a browser's
    ``*/*``, a script tag's, a library's list), else the client's own (``application/xml``)."""
    if accept is None:
        return JSON
    json = asks_for_json(accept) if len(accept) <= 512 else asks_for_json.__wrapped__(accept)
    return JSON if json else accept


def forwarded_query(query: str, callback_param: str | None) -> str:
    """The query sent upstream: the client's, byte for byte, less the JSONP path's control
    parameters when ``callback_param`` names that path's callback; bytes a request line cannot
    carry (which gunicorn never lets through) percent-encoded as UTF-8. Remembered for recent
    short queries."""
    if len(query) <= QUERY_MEMO_CHARS:
        return _remembered_forwarded_query(query, callback_param)
    return _forwarded_query(query, callback_param)


def _forwarded_query(query: str, callback_param: str | None) -> str:
    if callback_param is not None and query:
        control = CONTROL_PARAMS | {callback_param}
        query = "&".join(piece for piece in query.split("&")
                         if unquote_plus(piece.partition("=")[0]) not in control)
    if _NOT_TARGET_SAFE.search(query):
        query = quote(query, safe="".join(chr(c) for c in range(0x21, 0x7F)))
    return query


_remembered_forwarded_query = lru_cache(maxsize=1024)(_forwarded_query)


@dataclass(frozen=True)
class HeaderRule:
    """Which of a client's headers an upstream receives, worked out once per upstream: each
    forwardable name with its environ key and the spelling sent, then the configured headers."""

    forwardable: tuple[tuple[str, str, str], ...]  # (lower-case name, environ key, spelling)
    configured: tuple[tuple[str, str], ...]
    sends_accept: bool  # False when the configured headers name Accept themselves

    @classmethod
    def of(cls, upstream: UpstreamConfig) -> HeaderRule:
        spellings = {name: "-".join(part.capitalize() for part in name.split("-"))
                     for name in FORWARDED_REQUEST_HEADERS}
        spellings.update({name.lower(): name for name in upstream.forward_headers})
        configured = {name.lower() for name, _ in upstream.headers}
        names = [name for name in spellings
                 if name not in NEVER_FORWARDED | HOP_BY_HOP | configured and name != "accept"]
        return cls(tuple((name, header_key(name), spellings[name]) for name in names),
                   upstream.headers, "accept" not in configured)


def forwarded_headers(headers_in: Mapping[str, str], rule: HeaderRule,
                      jsonp: bool) -> tuple[tuple[str, str], ...]:
    """The headers sent upstream: Accept, the client's forwardable headers (less those its own
    Connection header names, RFC 9110 section 7.6.1, and on the JSONP path its validators), then the
    upstream's configured headers, which win. ``headers_in`` are the client's, by environ key."""
    connection = headers_in.get("HTTP_CONNECTION")
    named = {t.strip().lower() for t in connection.split(",")} if connection else ()
    headers = []
    if rule.sends_accept:
        headers.append(("Accept", JSON if jsonp else upstream_accept(headers_in.get("HTTP_ACCEPT"))))
    for name, key, spelling in rule.forwardable:
        value = headers_in.get(key)
        if value is not None and name not in named and not (
                jsonp and name in JSONP_DROPPED_REQUEST_HEADERS):
            headers.append((spelling, value))
    return (*headers, *rule.configured)


def forwarded_request(upstream: UpstreamConfig, rule: HeaderRule, *, method: str, rest: str,
                      query: str, headers: Mapping[str, str], jsonp_callback_param: str | None,
                      body: bytes | None) -> UpstreamRequest:
    """What the bridge asks ``upstream`` for this request (``jsonp_callback_param`` set on the
    JSONP path); InvalidPath when REST would leave the upstream's base."""
    jsonp = jsonp_callback_param is not None
    return UpstreamRequest(upstream=upstream, method=method, path=checked_path(rest),
                           query=forwarded_query(query, jsonp_callback_param),
                           headers=forwarded_headers(headers, rule, jsonp), body=body)
