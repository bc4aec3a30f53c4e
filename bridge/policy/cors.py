"""CORS policy as pure functions: origin matching, preflight verdicts and the headers they grant.

Everything here takes plain values and returns plain values, so the CORS view, ``/explain`` and the
tests use the very same code. Origins are compared as whole strings in their serialised form (the
Fetch standard's "ASCII serialization of an origin"); a ``https://*.example.org`` pattern matches whole
DNS labels only. There are no regular expressions over origins, so there is no prefix or suffix trick
(``https://example.org.evil.com``, ``https://evil-example.org``) to play. This module does no I/O and
knows nothing about Flask or the upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from .headers import TOKEN

DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]{2,45}\]$")

# Limits on Access-Control-Request-Headers: browsers send a short, sorted list of lowercase names.
MAX_REQUEST_HEADERS = 64
MAX_REQUEST_HEADERS_LENGTH = 2048
GRANT_MEMO_SIZE = 1024  # distinct origins remembered per policy


@dataclass(frozen=True)
class Origin:
    """A parsed tuple origin; ``str()`` gives its serialisation, the only form compared."""

    scheme: str
    host: str
    port: int | None  # None for the scheme's default port, which serialisation omits

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port is not None else "")


@dataclass(frozen=True)
class OriginPattern:
    """One entry of ``allow_origins``: an exact origin, ``null``, or ``scheme://*.suffix[:port]``."""

    text: str  # the normalised form, used for exact matches and in messages
    scheme: str = ""
    suffix: str = ""  # for wildcards: the host part after "*."
    port: int | None = None
    wildcard: bool = False


def _host_is_valid(host: str) -> bool:
    if len(host) > 253:  # RFC 1035 section 2.3.4: no real host name is longer
        return False
    if _IPV6.match(host) or _IPV4.match(host):
        return True
    labels = host.split(".")
    return all(_LABEL.match(label) for label in labels)


def parse_origin(value: str) -> Origin | None:
    """Parse a serialised origin strictly; None for anything a browser would not send.

    A browser sends the origin lowercase, without a path, and without the default port, so any other
    spelling (``HTTPS://A.COM``, ``https://a.com:443``, ``https://a.com/``) is not an origin at all.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not _SCHEME.match(scheme) or not rest:
        return None
    host, port = rest, None
    if not rest.endswith("]") and ":" in rest:
        host, _, port_text = rest.rpartition(":")
        if not port_text.isdigit() or port_text.startswith("0") or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
        if DEFAULT_PORTS.get(scheme) == port:
            return None
    if not host or not _host_is_valid(host):
        return None
    return Origin(scheme, host, port)


def parse_origin_pattern(text: str) -> OriginPattern:
    """Parse one configured origin or pattern, or raise ValueError saying what is wrong with it.

    Configured origins are normalised (lowercase, default port dropped) so that ``https://A.org:443``
    in the file matches what a browser sends for that origin.
    """
    if text == "null":
        return OriginPattern(text="null")
    scheme, sep, rest = text.lower().partition("://")
    if not sep or not _SCHEME.match(scheme):
        raise ValueError(f"{text!r} is not an origin: expected scheme://host[:port]")
    if any(c in rest for c in "/?#@\\ "):
        raise ValueError(f"{text!r} is not an origin: no path, query, user or trailing slash")
    host, port = rest, None
    if not rest.endswith("]") and ":" in rest:
        host, _, port_text = rest.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r} has an invalid port")
        port = int(port_text)
        if DEFAULT_PORTS.get(scheme) == port:
            port = None
    wildcard = host.startswith("*.")
    bare = host[2:] if wildcard else host
    if "*" in bare:
        raise ValueError(f"{text!r}: '*' may only stand for whole labels at the start, as in "
                         "https://*.example.org")
    if not bare or not _host_is_valid(bare):
        raise ValueError(f"{text!r} has an invalid host")
    if wildcard:
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{text!r}: wildcard patterns are for http and https only")
        if _IPV4.match(bare) or _IPV6.match(bare):
            raise ValueError(f"{text!r}: a wildcard cannot stand before an IP address")
        if "." not in bare and bare != "localhost":
            raise ValueError(f"{text!r}: a wildcard over a top-level domain allows too much")
    normalised = str(Origin(scheme, host, port))
    return OriginPattern(text=normalised, scheme=scheme, suffix=bare if wildcard else "",
                         port=port, wildcard=wildcard)


def pattern_matches(pattern: OriginPattern, origin: str) -> bool:
    """Whether one configured entry admits the serialised ``origin``; whole-string, whole-label."""
    if not pattern.wildcard:
        return origin == pattern.text  # exact (and "null" only when listed literally)
    parsed = parse_origin(origin)
    if parsed is None or parsed.scheme != pattern.scheme or parsed.port != pattern.port:
        return False
    # The suffix must end the host after a dot, so what precedes it is one or more whole labels
    # (parse_origin has checked each label already).
    return len(parsed.host) > len(pattern.suffix) + 1 and parsed.host.endswith("." + pattern.suffix)


@dataclass(frozen=True)
class CorsPolicy:
    """Who may read an upstream's answers from a browser, and what the browser is told."""

    origins: tuple[OriginPattern, ...] = ()
    allows_any_origin: bool = False
    allow_credentials: bool = False
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 0

    @cached_property
    def exact_origins(self) -> frozenset[str]:
        return frozenset(p.text for p in self.origins if not p.wildcard)

    @cached_property
    def wildcard_patterns(self) -> tuple[OriginPattern, ...]:
        return tuple(p for p in self.origins if p.wildcard)

    @cached_property
    def allow_headers_lower(self) -> frozenset[str]:
        return frozenset(h.lower() for h in self.allow_headers)

    @cached_property
    def expose_headers_lower(self) -> frozenset[str]:
        return frozenset(h.lower() for h in self.expose_headers)

    @cached_property
    def expose_headers_value(self) -> str:
        return ", ".join(self.expose_headers)

    @cached_property
    def response_grant_memo(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """``response_grant``' answers by origin (bounded there): the policy never changes."""
        return {}


def origin_allowed(policy: CorsPolicy, origin: str | None) -> bool:
    """Whether a request carrying this Origin header value may be granted. Malformed: never."""
    if origin is None:
        return False
    if policy.allows_any_origin:
        return origin == "null" or parse_origin(origin) is not None
    if origin in policy.exact_origins:
        return True
    return any(pattern_matches(p, origin) for p in policy.wildcard_patterns)


def build_grant(policy: CorsPolicy, origin: str) -> list[tuple[str, str]]:
    """The Access-Control-* headers of an actual (non-preflight) response to an allowed origin."""
    wildcard = policy.allows_any_origin and not policy.allow_credentials
    headers = [("Access-Control-Allow-Origin", "*" if wildcard else origin)]
    if policy.allow_credentials:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if policy.expose_headers:
        headers.append(("Access-Control-Expose-Headers", policy.expose_headers_value))
    return headers


def response_grant(policy: CorsPolicy, origin: str) -> tuple[tuple[str, str], ...]:
    """``build_grant`` for an allowed origin, ``()`` for any other: what an actual response gets.

    Remembered per policy and origin, so a page's repeated requests match and build nothing again;
    the memo is emptied when full, so origins a client makes up cannot grow it without bound.
    """
    memo = policy.response_grant_memo
    grant = memo.get(origin)
    if grant is None:
        grant = tuple(build_grant(policy, origin)) if origin_allowed(policy, origin) else ()
        if len(memo) >= GRANT_MEMO_SIZE:
            memo.clear()
        memo[origin] = grant
    return grant


def parse_request_headers(value: str | None) -> tuple[str, ...] | None:
    """Parse Access-Control-Request-Headers into lowercase names; None when it is malformed."""
    if value is None or not value.strip():
        return ()
    if len(value) > MAX_REQUEST_HEADERS_LENGTH:
        return None
    names = tuple(n.strip().lower() for n in value.split(","))
    if len(names) > MAX_REQUEST_HEADERS or not all(TOKEN.fullmatch(n) for n in names):
        return None
    return names


@dataclass(frozen=True)
class PreflightVerdict:
    """The bridge's answer to a preflight: status, headers, and the reasons for /explain."""

    status: int
    headers: tuple[tuple[str, str], ...]
    error: str | None = None  # an error code when refused; None when the preflight is answered
    message: str = ""
    headers_not_allowed: tuple[str, ...] = ()  # requested but not configured: the browser refuses
    method_allowed: bool = True  # False: answered, but the browser refuses the method itself

    @property
    def granted(self) -> bool:
        return self.error is None


def preflight_verdict(policy: CorsPolicy, methods: frozenset[str], origin: str | None,
                      request_method: str, request_headers: str | None) -> PreflightVerdict:
    """Answer a preflight (Fetch standard, "CORS-preflight fetch") from configuration alone.

    A preflight from an origin that is not allowed, or one that is malformed, grants nothing: no
    Access-Control-* header at all. A preflight from an allowed origin is answered 204 with the
    grant and the configured methods and headers, whatever it asked for: a method or a header that
    is not configured is never echoed, so the browser itself refuses the request and names the
    method or header and the setting that left it out (a refusal without the grant would make it
    blame the origin instead).
    """
    if not origin_allowed(policy, origin):
        return PreflightVerdict(403, (), "origin_not_allowed",
                                f"origin {origin!r} is not in allow_origins for this api")
    names = parse_request_headers(request_headers)
    if names is None:
        return PreflightVerdict(400, (), "bad_preflight",
                                "Access-Control-Request-Headers must be a comma-separated list of at "
                                f"most {MAX_REQUEST_HEADERS} header names")
    assert origin is not None  # origin_allowed() is False for None
    headers = build_grant(policy, origin)
    headers = [h for h in headers if h[0] != "Access-Control-Expose-Headers"]
    headers.append(("Access-Control-Allow-Methods", ", ".join(sorted(methods))))
    if policy.allow_headers:
        headers.append(("Access-Control-Allow-Headers", ", ".join(policy.allow_headers)))
    headers.append(("Access-Control-Max-Age", str(policy.max_age)))
    missing = tuple(n for n in names if n not in policy.allow_headers_lower)
    return PreflightVerdict(204, tuple(headers), headers_not_allowed=missing,
                            method_allowed=request_method in methods)
