"""Which header crosses the bridge in which direction: every header rule, written once.

The request headers a browser may pass on to an upstream (an allowlist), those never forwarded even
when configured (credentials, hop-by-hop, forwarding headers), those the transport writes itself, the
answer headers dropped on the way back, the CORS-safelisted response headers (Fetch), and RFC 9110's
token grammar for header names, used by the config, the CORS policy, the browser model and the
upstream reader alike, and its HTTP-date (read by the cache's freshness and the upstream reader).
Plain constants and pure functions: no I/O.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from functools import lru_cache

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


# RFC 9110 section 5.6.7: the three forms of an HTTP-date a recipient reads, and nothing looser (a
# "UTC" zone, a missing comma, a one-digit hour, a two-digit year outside rfc850-date: invalid, and an
# invalid Expires means already expired). Names are matched case-insensitively, as caches do.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF_FIXDATE = re.compile(r"(?:mon|tue|wed|thu|fri|sat|sun), (\d\d) ([a-z]{3}) (\d{4}) " + _TIME + " gmt",
                          re.IGNORECASE)
_RFC850_DATE = re.compile(r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), "
                          r"(\d\d)-([a-z]{3})-(\d\d) " + _TIME + " gmt", re.IGNORECASE)
_ASCTIME_DATE = re.compile(r"(?:mon|tue|wed|thu|fri|sat|sun) ([a-z]{3}) ([ \d]\d) " + _TIME + r" (\d{4})",
                           re.IGNORECASE)


def http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date as a POSIX timestamp, or None when it is not one of RFC 9110's three forms."""
    if not value:
        return None
    value = value.strip()
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # A two-digit year more than 50 years ahead is the latest past year with those digits.
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        year_number = this_year - this_year % 100 + int(short_year)
        if year_number > this_year + 50:
            year_number -= 100
        year = str(year_number)
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    if month.lower() not in _MONTHS:
        return None
    fields = (int(year), _MONTHS.index(month.lower()) + 1, int(day), int(hour), int(minute),
              int(second))
    if not (1 <= fields[2] <= calendar.monthrange(fields[0], fields[1])[1] and fields[3] < 24
            and fields[4] < 60 and fields[5] < 61):
        return None
    return float(calendar.timegm((*fields, 0, 0, 0)))


@lru_cache(maxsize=64)
def is_http_date(value: str) -> bool:
    """Whether ``value`` is an HTTP-date; remembered for the last few values (an upstream's Date
    changes once a second, and every answer that arrives is checked)."""
    return http_date(value) is not None
