"""Where a request may go below an upstream's base: REST checked in every encoding, joined, redirected.

``split_rest`` refuses every way of leaving the configured base url (``.`` and ``..`` raw or
percent-encoded, even doubly, encoded slashes and backslashes, empty segments, control characters,
invalid UTF-8); ``checked_path`` re-encodes what it accepted; ``upstream_url`` joins a checked path and
a query below the base and checks the result; ``redirect_target`` and ``within_base`` decide whether a
redirect may be followed. Pure functions over strings: no I/O, nothing about CORS, JSONP or caching.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, unquote, urljoin, urlsplit

from ..errors import InvalidPath

_PCHAR_SAFE = "!$&'()*+,;=:@-._~"  # RFC 3986 pchar, minus percent which quote() handles


def _decodes_to_traversal(segment: str) -> bool:
    """Whether a segment is, or decodes in up to three rounds to, a dot-segment or a separator."""
    for _ in range(3):
        if segment in {".", ".."} or "/" in segment or "\\" in segment:
            return True
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in segment):
            return True
        try:
            decoded = unquote(segment, errors="strict") if "%" in segment else segment
        except UnicodeDecodeError:
            # "%25aa" decodes once to the name "%aa", which a server that decodes again would
            # turn into invalid UTF-8: no real name looks like that, so refuse it.
            return True
        if decoded == segment:
            return False
        segment = decoded
    return True  # still changing after three rounds of decoding: nobody needs that


def split_rest(raw_rest: str) -> tuple[str, ...]:
    """Split the percent-encoded REST of ``/cors/NAME/REST`` into decoded, checked segments.

    Refuses (InvalidPath) every way of leaving the base: ``..`` and ``.`` raw or percent-encoded (even
    doubly), encoded slashes and backslashes, empty segments (``//host``), control characters. A
    trailing slash is kept as a final empty segment.
    """
    if raw_rest == "":
        return ()
    segments = raw_rest.split("/")
    result = []
    for index, raw in enumerate(segments):
        if raw == "" and index == len(segments) - 1:
            result.append("")
            continue
        if raw == "":
            raise InvalidPath("empty path segment ('//'): paths may not name another host")
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidPath("path segment is not valid percent-encoded UTF-8") from None
        if _decodes_to_traversal(raw) or _decodes_to_traversal(decoded):
            raise InvalidPath("path may not contain '.', '..', encoded slashes or control "
                              "characters: it must stay below the api's base url")
        result.append(decoded)
    return tuple(result)


def encode_rest(segments: Iterable[str]) -> str:
    return "/".join(quote(segment, safe=_PCHAR_SAFE) for segment in segments)


PATH_MEMO_SIZE = 1024

PATH_MEMO_CHARS = 512  # longer paths are checked every time, so made-up ones cannot fill memory


@lru_cache(maxsize=PATH_MEMO_SIZE)
def _remembered_path(raw_rest: str) -> str:
    return encode_rest(split_rest(raw_rest))


def checked_path(raw_rest: str) -> str:
    """``encode_rest(split_rest(raw_rest))``: the upstream path of a checked REST, or InvalidPath.

    Remembered for recent short paths, so a hit does not decode and check the same segments again;
    refusals are not remembered (``lru_cache`` keeps no exceptions) and are raised every time.
    """
    if len(raw_rest) > PATH_MEMO_CHARS:
        return encode_rest(split_rest(raw_rest))
    return _remembered_path(raw_rest)


def upstream_url(base: str, path: str, query: str = "") -> str:
    """Join an encoded relative ``path`` below ``base`` and check the result is still below it."""
    url = base + path
    parts, base_parts = urlsplit(url), urlsplit(base)
    if (parts.scheme, parts.netloc) != (base_parts.scheme, base_parts.netloc) or \
            not parts.path.startswith(base_parts.path):
        raise InvalidPath("path leaves the api's base url")
    return url + ("?" + query if query else "")


def redirect_target(url: str, location: str) -> str | None:
    """The absolute url a Location points to from ``url``, or None when it does not parse (an
    invalid IPv6 literal such as ``http://[foo]/``, a port that is not a number)."""
    try:
        target = urljoin(url, location)
        urlsplit(target).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return target


def within_base(base: str, url: str) -> bool:
    """Whether an absolute url (a redirect target) stays at the base's origin and below its path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    base_parts = urlsplit(base)
    if (parts.scheme, parts.netloc.lower()) != (base_parts.scheme, base_parts.netloc.lower()):
        return False
    rest = parts.path[len(base_parts.path):] if parts.path.startswith(base_parts.path) else None
    if rest is None:
        return False
    try:
        split_rest(rest)
    except InvalidPath:
        return False
    return True


def below_base(base: str, url: str) -> tuple[str, str] | None:
    """The path (relative to ``base``, as forwarded) and query of an absolute url below ``base``, or
    None when it leaves the base (how an upstream's Location names another of its resources)."""
    if not within_base(base, url):
        return None
    parts = urlsplit(url)
    return parts.path[len(urlsplit(base).path):], parts.query
