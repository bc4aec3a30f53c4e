"""RFC 9111 as pure functions of an answer's headers and the time: how long it is fresh, and after.

Whether an answer may be stored at all and for how long (``freshness_lifetime``, within the bridge's
``ttl`` as a ceiling), how long a store keeps it once stale (``retention``), whether it may be shared
with requests that waited for it, how a 304 renews it, and whether a client's conditional request is
answered 304 from it. No store and no clock of its own: callers pass ``now`` where it matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..policy.headers import HOP_BY_HOP, http_date
from ..upstream.message import UpstreamResponse
from .key import header_values, response_vary

# RFC 5861 section 4: the upstream failures for which a stale entry may stand in.
STALE_IF_ERROR_STATUSES = frozenset({500, 502, 503, 504})


# Fields a 304 may not change in the stored answer (RFC 9111 section 3.2 excludes framing fields).
NOT_RENEWED = frozenset({"content-length", "content-type", "content-encoding"}) | HOP_BY_HOP


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


# RFC 9213 targeted fields, most specific first: the bridge's own (its name in Cache-Status), then
# the one every CDN reads. A valid one replaces Cache-Control and Expires for the bridge's caching.
TARGETED_FIELDS = ("jsonp-cors-bridge-cache-control", "cdn-cache-control")
# RFC 8941 section 3.2 dictionary members as targeted fields use them: a key, or key=value (an
# integer, a token or a quoted string), with parameters; no whitespace around "=".
_SF_KEY = r"[a-z*][a-z0-9_.*-]*"
_SF_TOKEN = r"[a-z*][!#$%&'*+.^_`|~:/0-9a-z-]*"
_SF_STRING = r'"(?:[^"\\]|\\.)*"'
_SF_VALUE = rf"-?\d{{1,15}}|{_SF_TOKEN}|{_SF_STRING}"
_SF_MEMBER = re.compile(rf"({_SF_KEY})(?:=({_SF_VALUE}))?((?:;{_SF_KEY}(?:=[^;,]*)?)*)", re.IGNORECASE)


_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def targeted_directives(headers: Iterable[tuple[str, str]]) -> dict[str, str | None] | None:
    """The directives of the first targeted field present with a valid, non-empty value (RFC 9213
    section 2.1), or None: then Cache-Control and Expires decide."""
    pairs = list(headers)
    for field in TARGETED_FIELDS:
        values = [value for name, value in pairs if name.lower() == field]
        if not values:
            continue
        directives: dict[str, str | None] = {}
        for member in ",".join(values).split(","):
            match = _SF_MEMBER.fullmatch(member.strip(" \t"))
            if match is None:
                directives = {}
                break
            key, value = match.group(1).lower(), match.group(2)
            if key in _INTEGER_DIRECTIVES and (value is None or not value.isdigit()):
                directives = {}  # max-age="10000" is a string where an integer is due: invalid
                break
            directives.setdefault(key, value.strip('"') if value is not None else None)
        if directives:
            return directives
    return None


def caching_directives(response: UpstreamResponse) -> tuple[dict[str, str | None], bool]:
    """The directives the bridge caches by, and whether they came from a targeted field."""
    targeted = targeted_directives(response.headers)
    if targeted is not None:
        return targeted, True
    return cache_control(response.headers), False


def _seconds(value: str | None) -> int | None:
    """A delta-seconds argument, or None when missing or malformed (RFC 9111 section 1.2.2)."""
    if value is None or not value.isdigit():
        return None
    return int(value)


def freshness_lifetime(response: UpstreamResponse, ttl: int, heuristic: bool = True) -> int | None:
    """Seconds the answer stays fresh, counted from its own age, or None when it must not be stored.

    The bridge's ``ttl`` is the ceiling on how long it holds an answer fresh itself (so an answer
    that arrives with ``Age: 3600`` and ``max-age=10000`` is fresh here for ``ttl`` seconds); the
    upstream can only tighten it. The directives are a targeted field's when one is valid (RFC 9213:
    the bridge's own, then ``CDN-Cache-Control``, and then ``Cache-Control`` and ``Expires`` are not
    read), else ``Cache-Control``'s. ``no-store`` and ``private`` are never stored (the bridge is a
    shared cache, RFC 9111 section 3); ``s-maxage``, else ``max-age``, else ``Expires`` below the
    ceiling wins; ``no-cache`` stores for revalidation only (lifetime 0, and only with a validator to
    revalidate with). Without any of them the lifetime is the ttl, unless ``heuristic`` is off: then
    such an answer is kept only to revalidate.
    """
    if ttl <= 0:
        return None
    directives, targeted = caching_directives(response)
    if "no-store" in directives or "private" in directives:
        return None
    age = initial_age(response)
    lifetime = ttl + age
    if "s-maxage" in directives or "max-age" in directives:
        given = _seconds(directives.get("s-maxage")) if "s-maxage" in directives \
            else _seconds(directives.get("max-age"))
        lifetime = min(lifetime, given if given is not None else 0)  # malformed: treat as stale
    elif not targeted and response.header("expires") is not None:
        expires = http_date(response.header("expires"))
        date = http_date(response.header("date"))
        if expires is None or date is None:
            lifetime = 0  # RFC 9111 section 5.3: an invalid Expires means already expired
        else:
            lifetime = min(lifetime, max(0, int(expires - date)))
    elif not heuristic:
        lifetime = 0
    if "no-cache" in directives:
        lifetime = 0
    if lifetime <= age and not has_validator(response):
        return None  # stale at once with nothing to revalidate with: storing it helps nobody
    return lifetime


def storable_lifetime(response: UpstreamResponse, ttl: int, negative_ttl: int,
                      heuristic: bool = True) -> int | None:
    """The lifetime to store this answer with, or None: 200s within ``ttl``, 404s within both."""
    if response.status == 200:
        limit = ttl
    elif response.status == 404 and negative_ttl > 0:
        limit = min(ttl, negative_ttl)
    else:
        return None
    return freshness_lifetime(response, limit, heuristic)


def may_share(response: UpstreamResponse) -> bool:
    """Whether an answer fetched for one client may be handed to others who asked at the same time.

    Any answer a shared cache could reuse may be, stored or not (a 404 or a 503 included, so a herd
    on a failing resource stays one request); ``no-store``, ``private`` and ``Vary: *`` may not.
    """
    directives, _ = caching_directives(response)
    return "no-store" not in directives and "private" not in directives and \
        response_vary(response) is not None


def initial_age(response: UpstreamResponse) -> int:
    """The upstream's own Age (RFC 9111 section 5.1): time it spent in caches before us.

    Age is a single number; given as a list (``7200, 0``, or two lines) its first member counts, as
    the public cache suite requires (``0, 7200`` is fresh, ``7200, 0`` is old). A first member that is
    not delta-seconds (``abc``, ``-7200``, ``7200.0``) is ignored: 0.
    """
    for name, value in response.headers:
        if name.lower() == "age":
            return _seconds(value.split(",", 1)[0].strip()) or 0
    return 0


def has_validator(response: UpstreamResponse) -> bool:
    return response.header("etag") is not None or response.header("last-modified") is not None


def retention(lifetime: int, validator: bool, ttl: int, stale_use: int) -> int:
    """How long a store keeps an entry: its lifetime, then long enough to be useful stale.

    A stale entry helps for ``stale_use`` seconds (the longer of ``stale_if_error`` and its
    stale-while-revalidate window), and one with a validator for another ``ttl`` so a conditional
    request can renew it instead of fetching it again.
    """
    return max(1, lifetime + max(stale_use, ttl if validator else 0))


# RFC 9111 section 4.2.4: directives that forbid serving the answer stale. s-maxage implies
# proxy-revalidate for a shared cache, so only the answer's own stale-while-revalidate overrides it.
_NO_STALE = ("no-cache", "must-revalidate", "proxy-revalidate")


def stale_while_revalidate(response: UpstreamResponse, default: int) -> int:
    """Seconds after going stale that ``response`` may still be served while it is refreshed in the
    background (RFC 5861 section 3): its own ``stale-while-revalidate``, else ``default`` (the
    bridge's setting), and 0 when the answer forbids serving it stale."""
    directives, _ = caching_directives(response)
    if any(name in directives for name in _NO_STALE):
        return 0
    if "stale-while-revalidate" in directives:
        return _seconds(directives["stale-while-revalidate"]) or 0
    return 0 if "s-maxage" in directives else default


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
    since = http_date(header_values(pairs, "if-modified-since"))
    modified = http_date(response.header("last-modified"))
    return since is not None and modified is not None and modified <= since


def not_modified_response(response: UpstreamResponse) -> UpstreamResponse:
    """The 304 for ``response``: its validators and caching fields, no body (RFC 9110 15.4.5)."""
    kept = {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
    return UpstreamResponse(304, tuple((k, v) for k, v in response.headers if k.lower() in kept), b"")
