"""The value parsers of the bridge's settings: each takes the INI text and returns a typed value.

Each raises ``ValueError`` with a message that says what is wrong and what would do, such as
``expected a size such as 65536 or 64 MiB``; the reader (``config/__init__.py``) adds the file,
section and key, and masks any part of the message that came from the environment. ``upstream_headers``
is the one parser that sees the text before ``${VAR}`` is expanded: it splits the lines first and
expands each value whole, so a secret holding ``;`` stays one value. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from ..policy.cors import OriginPattern, parse_origin_pattern
from ..policy.headers import HOP_BY_HOP, TOKEN, TRANSPORT_HEADERS
from ..policy.jsonp import CONTROL_PARAMS, CallbackPattern, parse_callback_pattern

T = TypeVar("T", int, float)

MAX_AGE_CAP = 7200  # Chromium caps Access-Control-Max-Age at 2 hours; more is a promise nobody keeps

# The methods of RFC 9110 and RFC 5789, matched in any case and forwarded upper-cased; any other
# method token is forwarded as written (method names are case-sensitive), except the ones a proxy for
# pages must not forward: CONNECT, TRACE and TRACK, which Fetch forbids pages to send, and OPTIONS,
# which the bridge answers itself as the preflight.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
REFUSED_METHODS = frozenset({"CONNECT", "TRACE", "TRACK", "OPTIONS"})

UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

MIB = 1024 * 1024

WILDCARD_WITH_CREDENTIALS = ("allow_origins = * cannot be combined with allow_credentials = true: "
                             "browsers refuse credentials with a wildcard origin; list the origins")


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _number(raw: str, convert: Callable[[str], T], expected: str, least: str | None = None) -> T:
    """A finite number not below 0 (``least`` says what a 0 should have been, where 0 is refused)."""
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ValueError(f"expected {expected}, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"must not be negative, got {raw.strip()}")
    if not value < float("inf"):  # inf and nan, which float() also reads
        raise ValueError(f"must be a finite number, got {raw.strip()}")
    if least is not None and value == 0:
        raise ValueError(f"must be {least}")
    return value


def non_negative_int(raw: str) -> int:
    return _number(raw, int, "a whole number")


def positive_int(raw: str) -> int:
    return _number(raw, int, "a whole number", "at least 1")


def positive_float(raw: str) -> float:
    return _number(raw, float, "a number of seconds", "more than 0")


SIZE_PATTERN = re.compile(r"^(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?$", re.IGNORECASE)

SIZE_UNITS = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": MIB,
               "gb": 1000**3, "gib": 1024**3}


def size(raw: str) -> int:
    """A byte count: ``1048576``, ``512 KiB``, ``64 MiB``."""
    match = SIZE_PATTERN.match(raw.strip())
    if not match:
        if raw.strip().startswith("-"):
            raise ValueError(f"must not be negative, got {raw.strip()}")
        raise ValueError(f"expected a size such as 65536 or 64 MiB, got {raw!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * SIZE_UNITS[unit]


def text(raw: str) -> str:
    return raw.strip()


def admin_token(raw: str) -> str:
    """The bearer token that turns ``POST /purge`` on, or "" (off). Never quoted back in an error."""
    token = raw.strip()
    if token and (len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token)):
        raise ValueError("the token must be at least 16 printable characters with no spaces "
                         "(use a long random value, e.g. from `openssl rand -hex 32`)")
    return token


def bind(raw: str) -> str:
    value = raw.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8000, got {raw!r}")
    return value


def header_names(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n for n in re.split(r"[\s,]+", raw.strip()) if n))
    for name in names:
        if not TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
    return names


def methods(raw: str) -> frozenset[str]:
    names = [m for m in re.split(r"[\s,]+", raw.strip()) if m]
    if not names:
        raise ValueError("list at least one method")
    for name in names:
        if name.upper() in REFUSED_METHODS:
            raise ValueError(f"{name} cannot be forwarded: CONNECT, TRACE and TRACK are forbidden to "
                             "pages, and the bridge answers OPTIONS itself; list the others")
        if not TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a method name (an RFC 9110 token)")
    return frozenset(name.upper() if name.upper() in HTTP_METHODS else name for name in names)


def origins(raw: str) -> tuple[OriginPattern, ...] | None:
    """Space-separated origins or ``https://*.example.org`` patterns; ``*`` alone means any (None)."""
    items = raw.split()
    if items == ["*"]:
        return None
    if "*" in items:
        raise ValueError("'*' means every origin and cannot be combined with other origins")
    return tuple(parse_origin_pattern(item) for item in items)


def callback_param(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value) or value in CONTROL_PARAMS:
        raise ValueError(f"expected a query parameter name other than _ and envelope, got {raw!r}")
    return value


def callback_patterns(raw: str) -> tuple[CallbackPattern, ...] | None:
    """Space-separated callback patterns (``jQuery* angular.callbacks.*``); empty means any name the
    grammar accepts (None)."""
    items = raw.split()
    return tuple(parse_callback_pattern(item) for item in items) if items else None


def max_age(raw: str) -> int:
    return min(non_negative_int(raw), MAX_AGE_CAP)


def upstream_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"must be an http:// or https:// url, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"names no host: {value!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment; it is the base that paths join below")
    if parts.username or parts.password:
        raise ValueError("must not carry user:password; send credentials with the headers key")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def upstream_headers(raw: str, expand: Callable[[str], str] = str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` pairs, one a line (or separated by ``;``), sent to the upstream server-side.

    ``raw`` is the file's own text: it is split into lines first and each value is then expanded
    whole by ``expand`` (``${VAR}``), so what the environment holds can never add a header, and an
    error quotes the file's text, never a value from the environment."""
    headers = []
    for line in re.split(r"[\n;]", raw):
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not TOKEN.fullmatch(name):
            raise ValueError(f"expected 'Name: value', got {line!r}")
        if name.lower() in TRANSPORT_HEADERS | HOP_BY_HOP:
            raise ValueError(f"{name} is written by the bridge's transport itself; leave it out")
        value = expand(value.strip())
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {name} contains a control character")
        headers.append((name, value))
    return tuple(headers)


def rate_limit(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^\d+\s*(/|per)\s*\d*\s*[a-z]+(\s*[;,]\s*\d+\s*(/|per)\s*\d*\s*[a-z]+)*$",
                              value, re.IGNORECASE):
        raise ValueError(f"expected a rate such as 600/minute, got {raw!r}")
    if value:
        from limits import parse_many  # the budgets' own parser: what it accepts, we accept

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"expected a rate such as 600/minute (units: second, minute, hour, "
                             f"day, month, year), got {raw!r}") from None
    return value


@dataclass(frozen=True)
class RedisBackend:
    """A Redis ``[cache] backend``: one server (``redis://``, ``rediss://``, ``unix://``: ``url`` as
    given), a Sentinel set (``redis+sentinel://H:P[,H:P...]/MASTER[/DB]``) or a Cluster
    (``redis+cluster://H:P[,H:P...]``); a password as ``//:PASSWORD@H:P``."""

    kind: str  # "server", "sentinel" or "cluster"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    password: str | None = field(default=None, repr=False)


BACKEND_FORMS = ("memory, redis://host:port/db (rediss://, unix:// too), "
                 "redis+sentinel://host:port[,host:port...]/master[/db] or "
                 "redis+cluster://host:port[,host:port...]")


def _hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("host:port")
        hosts.append((host.strip("[]"), int(port)))
    return tuple(hosts)


def _without_password(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def redis_backend(value: str) -> RedisBackend | None:
    """The Redis a backend names, or None for ``memory``; ValueError (never quoting a password)."""
    if value == "memory":
        return None
    scheme, sep, rest = value.partition("://")
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(value)
        if not (parts.hostname or parts.path):
            raise ValueError(f"expected {BACKEND_FORMS}, got {_without_password(value)!r}")
        return RedisBackend("server", value)
    if scheme not in ("redis+sentinel", "redis+cluster") or not sep:
        raise ValueError(f"expected {BACKEND_FORMS}, got {_without_password(value)!r}")
    netloc, _, path = rest.partition("/")
    userinfo, at, netloc = netloc.rpartition("@")
    password = userinfo.partition(":")[2] or None if at else None
    try:
        hosts = _hosts(netloc)
    except ValueError:
        raise ValueError(f"expected host:port[,host:port...] after {scheme}://") from None
    if scheme == "redis+cluster":
        if path.strip("/"):
            raise ValueError("a cluster has no master name or database: redis+cluster://host:port,...")
        return RedisBackend("cluster", value, hosts, password=password)
    master, _, db = path.strip("/").partition("/")
    if not master or (db and not db.isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/master[/db]")
    return RedisBackend("sentinel", value, hosts, master, int(db or 0), password)


def cache_backend(raw: str) -> str:
    value = raw.strip()
    redis_backend(value)
    return value
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"} or not (parts.hostname or parts.path):
        raise ValueError(f"expected memory or redis://host:port/db, got {raw!r}")
    return value
