"""Which header crosses the bridge in which direction: every header rule, written once.

The request headers a browser may pass on to an upstream (an allowlist), those never forwarded even
when configured (credentials, hop-by-hop, forwarding headers), those the transport writes itself, the
answer headers dropped on the way back, the CORS-safelisted response headers (Fetch), and RFC 9110's
token grammar for header names, used by the config, the CORS policy, the browser model and the
upstream reader alike. Plain constants and pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 9110 section 5.6.2: a header field name is a token.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TOKEN_BYTES = re.compile(TOKEN.pattern.encode("ascii"))  # the same grammar, for raw header lines

# RFC 9110 section 7.6.1: hop-by-hop fields, never forwarded in either direction.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})


# What a browser's request may pass on to an upstream; everything else stays at the bridge.
FORWARDED_REQUEST_HEADERS = ("accept", "accept-language", "content-type", "if-none-match",
                             "if-modified-since")


# Never forwarded, even when configured: credentials belong to the bridge, not to the browser.
NEVER_FORWARDED = frozenset({"cookie", "authorization", "host", "content-length", "origin",
                             "referer", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
                             "forwarded", "x-real-ip"})


# Dropped from upstream answers: the bridge computes these itself (length, encoding after decoding,
# CORS grants), must never pass them on (cookies), or would be promising what it does not do (the
# bridge never forwards Range nor serves part of an answer, so Accept-Ranges would be untrue), or are
# the bridge's alone (an entry's purge tags, TAG_HEADERS).
TAG_HEADERS = ("surrogate-key", "cache-tag")
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"set-cookie", "set-cookie2", "content-length",
                                         "content-encoding", "server", "x-powered-by", "alt-svc",
                                         "accept-ranges", *TAG_HEADERS}


def parse_tags(value: str | None) -> tuple[str, ...]:
    """The purge tags of a ``Surrogate-Key`` or ``Cache-Tag`` value: space- or comma-separated."""
    if not value:
        return ()
    return tuple(dict.fromkeys(tag for tag in value.replace(",", " ").split() if tag))


def connection_tokens(pairs: Iterable[tuple[str, str]]) -> set[str]:
    """The header names a message's Connection header declares hop-by-hop (RFC 9110 section 7.6.1)."""
    return {token.strip().lower()
            for name, value in pairs if name.lower() == "connection"
            for token in value.split(",")}


def filter_response_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The upstream's response headers a browser may see: no hop-by-hop, cookies or CORS fields."""
    pairs = list(headers)
    connection_named = connection_tokens(pairs)
    return tuple(
        (name, value) for name, value in pairs
        if (lowered := name.lower()) not in DROPPED_RESPONSE_HEADERS
        and lowered not in connection_named
        and not lowered.startswith("access-control-")
    )


# Written by the transport itself (http1.py): never taken from a request's headers.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


# Response headers a page can read without being told (Fetch: CORS-safelisted response-header names).
SAFELISTED_RESPONSE_HEADERS = frozenset({"cache-control", "content-language", "content-length",
                                         "content-type", "expires", "last-modified", "pragma"})
