"""An entry's keys, derived from the request as it is forwarded and from nothing else.

``primary_key`` is the upstream, path and query as forwarded; ``variant_key`` adds the forwarded Accept
and the forwarded value of every header the stored ``Vary`` names; ``request_keys`` keeps both on the
planned request. ``bypass_reason`` says when the cache stays out of a request, ``as_cached`` what the
cache sends upstream for one it answers (without the client's validators), and ``response_vary``
which request headers an answer varies on. Pure functions: no store, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace

from ..policy.headers import FORWARDED_REQUEST_HEADERS, NEVER_FORWARDED
from ..upstream.message import UpstreamRequest, UpstreamResponse

# Client conditionals are answered by the bridge from the entry; they never shape the key.
CONDITIONAL_HEADERS = frozenset({"if-none-match", "if-modified-since", "if-match",
                                 "if-unmodified-since", "if-range"})
# Where a request keeps what ``as_cached`` made of it, among its keys (which are None and tuples).
_AS_CACHED = "as-cached"
_ITSELF = object()  # as_cached: the request itself (kept as a marker, not as a cycle)


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
    nothing to store from). Made once per planned request and kept with it, keys and all."""
    derived = request.derived
    cached: object = derived.get(_AS_CACHED)
    if cached is None:
        if any(k.lower() in CONDITIONAL_HEADERS for k, _ in request.headers):
            cached = replace(request, headers=tuple((k, v) for k, v in request.headers
                                                    if k.lower() not in CONDITIONAL_HEADERS))
        else:
            cached = _ITSELF
        derived[_AS_CACHED] = cached
    if cached is _ITSELF:
        return request
    assert isinstance(cached, UpstreamRequest)
    return cached


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
