"""The browser's side of CORS as pure functions, and the bridge's answers played through it.

Part one is the Fetch standard's classification of a request (CORS-safelisted methods and request
headers, the Content-Type values, the 128-byte value rule and the 1024-byte total, forbidden headers,
whether a preflight is needed) and its checks on the answers (the CORS check, the preflight's method
and header checks), reported in Chromium's own console wording (its ``cors_error_string.cc``), so a
verdict can be compared word for word with what the browser prints. Part two, ``explain_bridge``,
builds the preflight and response headers the bridge would send, from ``cors.py``'s very functions
(never a copy), and runs part one over them. ``simulate_fetch`` takes the exchange as a function, so
the ``probe`` command runs the same algorithm over a real server's real answers. This module does no
I/O; it does not model redirects, private network access, caches of preflights or opaque responses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .config import UpstreamConfig
from .cors import grant_headers, origin_allowed, preflight_verdict

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
SAFELISTED_RESPONSE_HEADERS = frozenset({"cache-control", "content-language", "content-length",
                                         "content-type", "expires", "last-modified", "pragma"})
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
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

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
    if not all(_TOKEN.match(item) for item in items if item):
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
class BrowserRequest:
    """A ``fetch(url, {method, headers, credentials})`` from a page whose origin is ``origin``."""

    url: str
    origin: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    credentials: str = "same-origin"


@dataclass(frozen=True)
class Outgoing:
    """A request the browser puts on the wire: the preflight or the request itself."""

    preflight: bool
    method: str
    headers: tuple[tuple[str, str], ...]


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


Send = Callable[[Outgoing], Observed]


@dataclass
class Verdict:
    allowed: bool
    preflight: bool
    steps: list[Step] = field(default_factory=list)
    failure: CorsFailure | None = None
    browser_error: str | None = None  # Chromium's reason, the part after "blocked by CORS policy: "
    console: str | None = None  # the whole line Chromium prints
    sent: list[Outgoing] = field(default_factory=list)
    status: int | None = None  # what the page can read; None when blocked or up to the upstream
    readable_headers: list[str] = field(default_factory=list)


def classify(request: BrowserRequest) -> tuple[str, tuple[tuple[str, str], ...], list[Step], bool]:
    """Normalise the method, drop forbidden headers, and decide whether a preflight is needed.

    Returns (method, headers sent, steps, preflight).
    """
    steps: list[Step] = []
    method = normalize_method(request.method)
    if method != request.method:
        steps.append(Step("browser", "normalize method", True,
                          f"fetch() upper-cases {request.method} to {method}"))
    elif method.upper() in ("PATCH",) and method != "PATCH":
        steps.append(Step("browser", "normalize method", True,
                          f"fetch() leaves {method} as it is: only DELETE, GET, HEAD, OPTIONS, POST "
                          "and PUT are upper-cased, and method names are case-sensitive"))
    kept: list[tuple[str, str]] = []
    for name, value in request.headers:
        if is_forbidden_header(name):
            steps.append(Step("browser", f"header {name.lower()}", False,
                              "a forbidden request header: the page cannot set it, and fetch() "
                              "drops it without an error"))
        else:
            kept.append((name, value))
    safe_method = is_safelisted_method(method)
    steps.append(Step("browser", f"method {method}", True if safe_method else None,
                      "CORS-safelisted (GET, HEAD, POST): no preflight for the method" if safe_method
                      else "not CORS-safelisted (only GET, HEAD and POST are): a preflight asks first"))
    unsafe = unsafe_header_names(kept)
    total = sum(len(v.encode("utf-8")) for n, v in kept if safelist_problem(n, v) is None)
    for name, value in kept:
        problem = safelist_problem(name, value)
        if problem is None and name.lower() in unsafe:
            problem = (f"the safelisted values add up to {total} bytes, over the "
                       f"{MAX_SAFELISTED_TOTAL}-byte total")
        steps.append(Step("browser", f"header {name.lower()}", True if problem is None else None,
                          "CORS-safelisted: no preflight for it" if problem is None
                          else f"{problem}: a preflight asks first"))
    credentials = request.credentials
    steps.append(Step("browser", f"credentials {credentials}", True,
                      "cookies go along: the answer must name the origin and allow credentials"
                      if credentials == "include" else
                      "no cookies on a cross-origin request: a '*' answer is enough"))
    preflight = not safe_method or bool(unsafe)
    return method, tuple(kept), steps, preflight


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


# Chromium's advice after a bad Access-Control-Allow-Origin value (as of Chromium 156, which no
# longer suggests mode 'no-cors'); the tests compare every message with the browser's own.
_VALID_VALUE = " Have the server send the header with a valid value."


def error_reason(failure: CorsFailure) -> str:
    """Chromium's words for a failure of fetch(), after "has been blocked by CORS policy: "."""
    error, hint = failure.error, failure.hint
    prefix = ""
    if error.startswith("kPreflight") and error not in ("kPreflightDisallowedRedirect",
                                                        "kPreflightInvalidStatus"):
        error = "k" + error[len("kPreflight"):]
    if failure.error.startswith("kPreflight"):
        prefix = "Response to preflight request doesn't pass access control check: "
    text = {
        "kMissingAllowOriginHeader":
            "No 'Access-Control-Allow-Origin' header is present on the requested resource.",
        "kWildcardOriginNotAllowed":
            "The value of the 'Access-Control-Allow-Origin' header in the response must not be the "
            "wildcard '*' when the request's credentials mode is 'include'.",
        "kMultipleAllowOriginValues":
            f"The 'Access-Control-Allow-Origin' header contains multiple values '{hint}', but only "
            "one is allowed." + _VALID_VALUE,
        "kInvalidAllowOriginValue":
            f"The 'Access-Control-Allow-Origin' header contains the invalid value '{hint}'."
            + _VALID_VALUE,
        "kAllowOriginMismatch":
            f"The 'Access-Control-Allow-Origin' header has a value '{hint}' that is not equal to the "
            "supplied origin." + _VALID_VALUE,
        "kInvalidAllowCredentials":
            f"The value of the 'Access-Control-Allow-Credentials' header in the response is '{hint}' "
            "which must be 'true' when the request's credentials mode is 'include'.",
        "kPreflightInvalidStatus": "It does not have HTTP ok status.",
        "kPreflightDisallowedRedirect": "Redirect is not allowed for a preflight request.",
        "kInvalidAllowMethodsPreflightResponse":
            "Cannot parse Access-Control-Allow-Methods response header field in preflight response.",
        "kInvalidAllowHeadersPreflightResponse":
            "Cannot parse Access-Control-Allow-Headers response header field in preflight response.",
        "kMethodDisallowedByPreflightResponse":
            f"Method {hint} is not allowed by Access-Control-Allow-Methods in preflight response.",
        "kHeaderDisallowedByPreflightResponse":
            f"Request header field {hint} is not allowed by Access-Control-Allow-Headers in "
            "preflight response.",
    }[error]
    return prefix + text


def console_message(url: str, origin: str, failure: CorsFailure) -> str:
    return (f"Access to fetch at '{url}' from origin '{origin}' has been blocked by CORS policy: "
            f"{error_reason(failure)}")


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


def simulate_fetch(request: BrowserRequest, send: Send) -> Verdict:
    """What a browser does with ``request``: classify, preflight if needed, send, check the answer.

    ``send`` is the network: the bridge's simulated answers for /explain, real HTTP for ``probe``.
    """
    method, headers, steps, preflight = classify(request)
    verdict = Verdict(allowed=False, preflight=preflight, steps=steps)
    unsafe = unsafe_header_names(headers)

    def fail(failure: CorsFailure) -> Verdict:
        verdict.failure = failure
        verdict.browser_error = error_reason(failure)
        verdict.console = console_message(request.url, request.origin, failure)
        return verdict

    if preflight:
        preflight_headers = [("Origin", request.origin), ("Access-Control-Request-Method", method)]
        if unsafe:
            preflight_headers.append(("Access-Control-Request-Headers", ",".join(sorted(unsafe))))
        outgoing = Outgoing(True, "OPTIONS", tuple(preflight_headers))
        verdict.sent.append(outgoing)
        answer = send(outgoing)
        steps.extend(answer.steps)
        failure = check_preflight(answer, request.origin, request.credentials, method, unsafe)
        steps.append(_preflight_step(answer, failure))
        if failure is not None:
            steps.append(Step("browser", "request not sent", False,
                              f"the preflight failed, so the {method} itself is never sent"))
            return fail(failure)
    outgoing = Outgoing(False, method, (("Origin", request.origin), *headers))
    verdict.sent.append(outgoing)
    answer = send(outgoing)
    steps.extend(answer.steps)
    failure = check_access(answer, request.origin, request.credentials)
    if failure is not None:
        steps.append(Step("browser", "CORS check on the response", False,
                          _access_detail(answer, failure) + " The request reached the server; the "
                          "page gets a TypeError (\"Failed to fetch\") and cannot see the status."))
        return fail(failure)
    verdict.allowed = True
    verdict.status = answer.status
    verdict.readable_headers = readable_headers(answer, request.credentials)
    status = "whatever status the upstream answers" if answer.status is None else answer.status
    steps.append(Step("browser", "CORS check on the response", True,
                      f"{_access_detail(answer, None)} The page reads the body and {status}."))
    return verdict


def _access_detail(answer: Observed, failure: CorsFailure | None) -> str:
    acao = answer.header("Access-Control-Allow-Origin")
    acac = answer.header("Access-Control-Allow-Credentials")
    text = "no Access-Control-Allow-Origin" if acao is None else f"Access-Control-Allow-Origin: {acao}"
    if acac is not None:
        text += f", Access-Control-Allow-Credentials: {acac}"
    return text + "."


def _preflight_step(answer: Observed, failure: CorsFailure | None) -> Step:
    status = "no status" if answer.status is None else f"status {answer.status}"
    detail = f"{status}; {_access_detail(answer, failure)}"
    for name in ("Access-Control-Allow-Methods", "Access-Control-Allow-Headers"):
        value = answer.header(name)
        if value is not None:
            detail = detail[:-1] + f", {name}: {value}."
    if failure is not None:
        detail += " " + error_reason(failure)
    return Step("browser", "preflight checks", failure is None, detail)


# --- the bridge's answers, from cors.py's own functions -----------------------------------------


def bridge_send(upstream: UpstreamConfig, origin: str) -> Send:
    """The network as the bridge's ``/cors/NAME/`` path would answer, without asking the upstream.

    Mirrors the proxy road (``proxy/road.py``): a disallowed origin is refused 403 with no grant; a
    preflight is answered by ``preflight_verdict``; a method that is not configured is refused 405
    with the grant; anything else goes to the upstream and comes back with ``grant_headers``.
    """
    policy = upstream.cors

    def send(outgoing: Outgoing) -> Observed:
        allowed = origin_allowed(policy, origin)
        steps = [Step("bridge", "origin", allowed,
                      f"{origin} is in allow_origins for api {upstream.name}" if allowed
                      else f"{origin} is not in allow_origins for api {upstream.name}: refused 403, "
                           "and no Access-Control-Allow-Origin is granted")]
        if outgoing.preflight:
            requested = dict(outgoing.headers)
            method = requested["Access-Control-Request-Method"]
            names = requested.get("Access-Control-Request-Headers")
            verdict = preflight_verdict(policy, upstream.methods, origin, method, names)
            if allowed:
                configured = method in upstream.methods
                steps.append(Step("bridge", f"preflight method {method}", configured,
                                  f"{method} is configured (methods = {' '.join(sorted(upstream.methods))})"
                                  if configured else f"{method} is not in methods = "
                                  f"{' '.join(sorted(upstream.methods))}: answered with the grant and "
                                  "the configured methods only, so the browser refuses the method"))
            if verdict.granted and names:
                missing = verdict.headers_not_allowed
                steps.append(Step("bridge", "preflight headers", not missing,
                                  f"requested {names}; allow_headers = "
                                  f"{' '.join(policy.allow_headers) or '(none)'}"
                                  + (f"; {', '.join(missing)} not configured, and never echoed"
                                     if missing else "")))
            return Observed(verdict.status, verdict.headers, tuple(steps))
        if not allowed:
            return Observed(403, (), tuple(steps))
        grant = tuple(grant_headers(policy, origin))
        if outgoing.method not in upstream.methods:
            steps.append(Step("bridge", f"method {outgoing.method}", False,
                              f"not in methods = {' '.join(sorted(upstream.methods))}: refused 405 "
                              "(readable, with the grant)"))
            return Observed(405, grant, tuple(steps))
        steps.append(Step("bridge", "response", True,
                          "forwarded to the upstream; its answer comes back with "
                          + ", ".join(f"{k}: {v}" for k, v in grant)))
        return Observed(None, grant, tuple(steps))

    return send


@dataclass(frozen=True)
class JsonpVerdict:
    allowed: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"allowed": self.allowed, "reason": self.reason}


def jsonp_verdict(upstream: UpstreamConfig, method: str, has_headers: bool) -> JsonpVerdict:
    """What the JSONP path does with the same request: a script tag can only GET."""
    if not upstream.jsonp:
        return JsonpVerdict(False, f"JSONP is turned off for api {upstream.name} (jsonp = false)")
    if normalize_method(method) not in ("GET", "HEAD"):
        return JsonpVerdict(False, f"a script tag can only GET; the bridge refuses {method} on "
                                   "/jsonp/ with 405, and the script's onerror fires")
    reason = ("served to any origin: a script tag is not subject to CORS, so allow_origins does not "
              "apply; errors arrive only as onerror, or inside the envelope with envelope=1")
    if has_headers:
        reason += "; a script tag cannot send custom headers, so they are not sent"
    return JsonpVerdict(True, reason)


def explain_bridge(upstream: UpstreamConfig, request: BrowserRequest) -> Verdict:
    """The verdict for ``request`` to the bridge's ``/cors/NAME/`` path, from configuration alone."""
    return simulate_fetch(request, bridge_send(upstream, request.origin))


def verdict_dict(verdict: Verdict) -> dict[str, object]:
    return {
        "allowed": verdict.allowed,
        "preflight": verdict.preflight,
        "steps": [s.as_dict() for s in verdict.steps],
        "browser_error": verdict.browser_error,
        "console": verdict.console,
        "cors_error": verdict.failure.error if verdict.failure else None,
        "requests": [{"method": o.method, "preflight": o.preflight,
                      "headers": [list(h) for h in o.headers]} for o in verdict.sent],
        "status": verdict.status,
        "readable_headers": verdict.readable_headers,
    }
