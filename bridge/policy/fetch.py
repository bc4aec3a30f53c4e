"""The Fetch standard's CORS rules as a browser applies them, as pure functions.

The classification of a request (CORS-safelisted methods and request headers, the Content-Type
values, the 128-byte value rule and the 1024-byte total, forbidden headers, whether a preflight is
needed) and the checks on the answers (the CORS check, the preflight's status, method and header
checks), in the order Chromium makes them (``cors.cc``), each failure named as Chromium names it
(``network::mojom::CorsError``). ``messages.py`` words a failure; ``browser.py`` plays a whole fetch
with them. No I/O; no redirects, private network access, preflight caches or opaque responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .headers import SAFELISTED_RESPONSE_HEADERS, TOKEN

# --- the Fetch standard's classification of a request -------------------------------------------

SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
# Fetch "normalize a method": only these six are upper-cased; ``patch`` stays ``patch``.
NORMALIZED_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})
FORBIDDEN_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})
SAFELISTED_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                                      "text/plain"})
# Fetch "forbidden request-header": the page cannot set these; fetch() drops them without a word.
FORBIDDEN_REQUEST_HEADERS = frozenset({
    "accept-charset", "accept-encoding", "access-control-request-headers",
    "access-control-request-method", "connection", "content-length", "cookie", "cookie2", "date",
    "dnt", "expect", "host", "keep-alive", "origin", "referer", "set-cookie", "te", "trailer",
    "transfer-encoding", "upgrade", "via",
})
MAX_SAFELISTED_VALUE = 128  # bytes, per header value
MAX_SAFELISTED_TOTAL = 1024  # bytes, all safelisted values together
# Fetch "CORS-unsafe request-header byte": controls but HT, and "():<>?@[\]{} and DEL.
_UNSAFE_BYTES = frozenset(set(range(0x20)) - {0x09} | set(b'"():<>?@[\\]{}') | {0x7F})
_LANGUAGE_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz *,-.;=")
_SIMPLE_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
SAFELISTED_REQUEST_HEADERS = frozenset({"accept", "accept-language", "content-language",
                                        "content-type", "range", "save-data", "dpr",
                                        "device-memory", "width", "viewport-width"})

CREDENTIALS_MODES = ("omit", "same-origin", "include")


def normalize_method(method: str) -> str:
    upper = method.upper()
    return upper if upper in NORMALIZED_METHODS else method


def is_safelisted_method(method: str) -> bool:
    return method in SAFELISTED_METHODS


def is_forbidden_header(name: str) -> bool:
    lower = name.lower()
    return lower in FORBIDDEN_REQUEST_HEADERS or lower.startswith(("proxy-", "sec-"))


def safelist_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` is not a CORS-safelisted request-header, or None when it is.

    Fetch's rule as Chromium implements it (``IsCorsSafelistedHeader``): Fetch's five names, plus the
    client hints Chromium itself may add (Save-Data, DPR, Device-Memory, Width, Viewport-Width).
    """
    lower, raw = name.lower(), value.encode("utf-8")
    if lower not in SAFELISTED_REQUEST_HEADERS:
        return f"{lower} is not a CORS-safelisted request header"
    if len(raw) > MAX_SAFELISTED_VALUE:
        return f"its value is {len(raw)} bytes, over the {MAX_SAFELISTED_VALUE}-byte limit"
    if lower in ("accept", "content-type") and any(b in _UNSAFE_BYTES for b in raw):
        return 'its value has a byte Fetch calls unsafe (a control, or one of "():<>?@[\\]{})'
    if lower in ("accept-language", "content-language") and any(b not in _LANGUAGE_BYTES
                                                                 for b in raw):
        return "its value has a character other than letters, digits, space and *,-.;="
    if lower == "content-type":
        essence = value.split(";", 1)[0].strip(" \t\r\n").lower()
        if essence not in SAFELISTED_CONTENT_TYPES:
            return (f"Content-Type {essence or '(empty)'} is not one of "
                    f"{', '.join(sorted(SAFELISTED_CONTENT_TYPES))}")
    if lower == "range":
        match = _SIMPLE_RANGE.match(value)
        # Chromium reads the numbers as 64-bit integers: a longer one is not a simple range.
        numbers = [int(g) for g in match.groups() if g] if match else []
        if not match or any(n >= 2**63 for n in numbers) or (len(numbers) == 2
                                                             and numbers[0] > numbers[1]):
            return "its value is not a simple range such as bytes=0-99"
    if lower == "save-data" and value.lower() != "on":
        return "Save-Data is safelisted only with the value on"
    if lower in ("dpr", "device-memory") and not _DECIMAL.match(value):
        return f"{lower} is safelisted only with a number such as 2 or 1.5"
    if lower in ("width", "viewport-width") and not value.isdigit():
        return f"{lower} is safelisted only with a whole number"
    return None


def unsafe_header_names(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Fetch "CORS-unsafe request-header names", lowercase and without duplicates, in the order
    Chromium checks them against a preflight: the unsafe ones sorted, then, once the safelisted
    values add up to more than 1024 bytes, the safelisted ones sorted (they all count as unsafe).

    Access-Control-Request-Headers carries the same names sorted as one list.
    """
    unsafe, safelisted, total = set(), set(), 0
    for name, value in headers:
        if safelist_problem(name, value) is None:
            safelisted.add(name.lower())
            total += len(value.encode("utf-8"))
        else:
            unsafe.add(name.lower())
    over = sorted(safelisted - unsafe) if total > MAX_SAFELISTED_TOTAL else []
    return (*sorted(unsafe), *over)


def parse_header_list(value: str | None) -> set[str] | None:
    """Access-Control-Allow-Methods/-Headers as a set of tokens; None when it does not parse."""
    if value is None:
        return set()
    items = [item.strip(" \t") for item in value.split(",")]
    if not all(TOKEN.fullmatch(item) for item in items if item):
        return None
    return {item for item in items if item}


# --- what happened, step by step ------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One check, by whom (``browser``, ``bridge`` or ``server``), and how it went: ``ok`` is None for
    a fact that is neither a pass nor a failure (such as "this header needs a preflight")."""

    actor: str
    check: str
    ok: bool | None
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"actor": self.actor, "check": self.check, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Observed:
    """An answer: its status (None when it is the upstream's to decide) and headers, with the
    server's own account of why, when it can give one."""

    status: int | None
    headers: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...] = ()
    redirect: str | None = None  # a Location the server answered with a 3xx

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None  # repeated fields combine, as in HTTP


@dataclass(frozen=True)
class CorsFailure:
    """Chromium's ``network::mojom::CorsError`` and its ``failed_parameter``."""

    error: str
    hint: str = ""


# --- the checks on the answers, in Chromium's order -----------------------------------------------


def check_access(observed: Observed, origin: str, credentials: str) -> CorsFailure | None:
    """Fetch "CORS check" as Chromium does it (``cors.cc``, CheckAccessInternal)."""
    allow_origin = observed.header("Access-Control-Allow-Origin")
    if allow_origin is None:
        return CorsFailure("kMissingAllowOriginHeader")
    if allow_origin == "*":
        if credentials == "include":
            return CorsFailure("kWildcardOriginNotAllowed")
    elif allow_origin != origin:
        if any(c in allow_origin for c in " ,"):
            return CorsFailure("kMultipleAllowOriginValues", allow_origin)
        if allow_origin != "null" and not re.match(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+", allow_origin,
                                                   re.IGNORECASE):
            return CorsFailure("kInvalidAllowOriginValue", allow_origin)
        return CorsFailure("kAllowOriginMismatch", allow_origin)
    if credentials == "include":
        allow_credentials = observed.header("Access-Control-Allow-Credentials")
        if allow_credentials != "true":  # case-sensitive, per Fetch
            return CorsFailure("kInvalidAllowCredentials", allow_credentials or "")
    return None


def check_preflight(observed: Observed, origin: str, credentials: str, method: str,
                    unsafe_names: tuple[str, ...]) -> CorsFailure | None:
    """Chromium's checks on a preflight answer: access, then an ok status, then methods, headers."""
    if observed.redirect is not None or (observed.status is not None
                                         and 300 <= observed.status < 400):
        return CorsFailure("kPreflightDisallowedRedirect")
    access = check_access(observed, origin, credentials)
    if access is not None:
        return CorsFailure("kPreflight" + access.error[1:], access.hint)
    if observed.status is None or not 200 <= observed.status < 300:
        return CorsFailure("kPreflightInvalidStatus")
    methods = parse_header_list(observed.header("Access-Control-Allow-Methods"))
    if methods is None:
        return CorsFailure("kInvalidAllowMethodsPreflightResponse")
    allowed_headers = parse_header_list(observed.header("Access-Control-Allow-Headers"))
    if allowed_headers is None:
        return CorsFailure("kInvalidAllowHeadersPreflightResponse")
    wildcard = credentials != "include"  # '*' is a literal name once credentials are included
    if not (method in methods or is_safelisted_method(method) or (wildcard and "*" in methods)):
        return CorsFailure("kMethodDisallowedByPreflightResponse", method)
    lowered = {h.lower() for h in allowed_headers}
    if wildcard and "*" in lowered:
        # Fetch says '*' does not cover Authorization; Chromium 156 lets it through all the same
        # (its NonWildcardRequestHeadersSupport is off), and the browser is what the page meets.
        return None
    for name in unsafe_names:
        if name not in lowered:
            return CorsFailure("kHeaderDisallowedByPreflightResponse", name)
    return None


def readable_headers(observed: Observed, credentials: str) -> list[str]:
    """Response header names a page can read: the safelisted ones and those exposed to it."""
    exposed = parse_header_list(observed.header("Access-Control-Expose-Headers")) or set()
    lowered = {h.lower() for h in exposed}
    everything = "*" in lowered and credentials != "include"
    names = []
    for name, _ in observed.headers:
        lower = name.lower()
        if lower in ("set-cookie", "set-cookie2"):
            continue
        if lower in SAFELISTED_RESPONSE_HEADERS or lower in lowered or everything:
            names.append(lower)
    return sorted(set(names))
