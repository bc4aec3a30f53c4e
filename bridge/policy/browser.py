"""A browser's ``fetch()`` played step by step: classify, preflight when needed, send, check.

``simulate_fetch`` takes the network as a function (``Send``): ``/explain`` hands it the bridge's
answers as configuration would make them (``site/explain.py``), the ``probe`` command real HTTP
exchanges with any server. Each step says who acted (browser, bridge or server), what was checked and
how it went, so a person can read why a request is allowed or blocked. The rules are ``fetch.py``'s and
the words ``messages.py``'s; this module only plays them in order. No I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .fetch import (
    MAX_SAFELISTED_TOTAL,
    CorsFailure,
    Observed,
    Step,
    check_access,
    check_preflight,
    is_forbidden_header,
    is_safelisted_method,
    normalize_method,
    readable_headers,
    safelist_problem,
    unsafe_header_names,
)
from .messages import console_message, error_reason


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
    failed_status: int | None = None  # the status of the answer that failed the check, if any


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


def simulate_fetch(request: BrowserRequest, send: Send) -> Verdict:
    """What a browser does with ``request``: classify, preflight if needed, send, check the answer.

    ``send`` is the network: the bridge's simulated answers for /explain, real HTTP for ``probe``.
    """
    method, headers, steps, preflight = classify(request)
    verdict = Verdict(allowed=False, preflight=preflight, steps=steps)
    unsafe = unsafe_header_names(headers)

    def fail(failure: CorsFailure, answer: Observed) -> Verdict:
        verdict.failure = failure
        verdict.failed_status = answer.status
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
            return fail(failure, answer)
    outgoing = Outgoing(False, method, (("Origin", request.origin), *headers))
    verdict.sent.append(outgoing)
    answer = send(outgoing)
    steps.extend(answer.steps)
    failure = check_access(answer, request.origin, request.credentials)
    if failure is not None:
        steps.append(Step("browser", "CORS check on the response", False,
                          _access_detail(answer, failure) + " The request reached the server; the "
                          "page gets a TypeError (worded by each engine: page_error) and cannot see "
                          "the status."))
        return fail(failure, answer)
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
