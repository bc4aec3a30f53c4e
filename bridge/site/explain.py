"""``GET /explain``: the bridge's CORS verdict for a request a page would make, as JSON, and its JSONP one.

``bridge_send`` is the network as the bridge's ``/cors/NAME/`` path would answer, built from the CORS
policy's own functions (``origin_allowed``, ``preflight_verdict``, ``build_grant``, never a copy);
``explain_bridge`` plays a browser's fetch over it (``policy/browser.py``). The view parses the query,
finds the upstream and returns the verdict; it never contacts the upstream. The answer is granted to
any origin (``*``, without credentials): it is a public, read-only diagnostic. ``browser=`` (else
the User-Agent's engine, else chromium) chooses whose console words come first.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, request

from ..config import Config, UpstreamConfig
from ..errors import BadRequest, UnknownApi
from ..policy.browser import BrowserRequest, Outgoing, Send, Verdict, simulate_fetch
from ..policy.cors import build_grant, origin_allowed, parse_origin, preflight_verdict
from ..policy.engines import (
    ENGINE_TITLES,
    ENGINES,
    PAGE_ERRORS,
    console_lines,
    engine_of,
    preflight_cache_seconds,
)
from ..policy.fetch import CREDENTIALS_MODES, FORBIDDEN_METHODS, Observed, Step, normalize_method
from ..policy.headers import TOKEN


def bridge_send(upstream: UpstreamConfig, origin: str) -> Send:
    """The network as the bridge's ``/cors/NAME/`` path would answer, without asking the upstream.

    Mirrors the proxy road (``proxy/road.py``): a disallowed origin is refused 403 with no grant; a
    preflight is answered by ``preflight_verdict``; a method that is not configured is refused 405
    with the grant; anything else goes to the upstream and comes back with ``build_grant``.
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
        grant = tuple(build_grant(policy, origin))
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


def engine_view(engine: str, verdict: Verdict, request: BrowserRequest,
                max_age: int) -> dict[str, object]:
    """What ``engine`` makes of the verdict: its console lines, the error the page's code catches,
    and how long it keeps the preflight's answer."""
    lines = [] if verdict.failure is None else console_lines(
        engine, request.url, request.origin, verdict.failure, verdict.failed_status,
        tuple(name for name, _ in request.headers))
    return {
        "title": ENGINE_TITLES[engine],
        "console": lines,
        "page_error": PAGE_ERRORS[engine] if verdict.failure is not None else None,
        "preflight_cache_seconds": preflight_cache_seconds(engine, max_age)
        if verdict.preflight and verdict.allowed else None,
    }


def verdict_dict(verdict: Verdict, request: BrowserRequest | None = None, browser: str = "chromium",
                 max_age: int = 0) -> dict[str, object]:
    """The verdict as /explain answers it; with the request, every engine's words too, and at the top
    level ``browser``'s (``console`` is its lines, one per line; ``browser_error`` stays Chromium's
    reason, the part after "blocked by CORS policy: ")."""
    engines = {name: engine_view(name, verdict, request, max_age) for name in ENGINES} \
        if request is not None else {}
    chosen = engines.get(browser)
    console = "\n".join(chosen["console"]) if chosen and chosen["console"] else verdict.console  # type: ignore[arg-type]
    return {
        "allowed": verdict.allowed,
        "preflight": verdict.preflight,
        "steps": [s.as_dict() for s in verdict.steps],
        "browser": browser,
        "browser_error": verdict.browser_error,
        "console": console,
        "page_error": chosen["page_error"] if chosen else None,
        "preflight_cache_seconds": chosen["preflight_cache_seconds"] if chosen else None,
        "engines": engines,
        "cors_error": verdict.failure.error if verdict.failure else None,
        "requests": [{"method": o.method, "preflight": o.preflight,
                      "headers": [list(h) for h in o.headers]} for o in verdict.sent],
        "status": verdict.status,
        "readable_headers": verdict.readable_headers,
    }


explain = Blueprint("explain", __name__)
MAX_HEADERS = 64


def parse_headers_param(text: str, content_type: str | None) -> tuple[tuple[str, str], ...]:
    """``H1,H2`` or ``H1: value,H2``: the headers a page sets (a value cannot hold a comma here)."""
    headers: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition(":")
        name = name.strip()
        if not TOKEN.fullmatch(name):
            raise BadRequest(f"headers: {name!r} is not a header name; give names such as "
                             "X-Custom or Accept-Language: en, separated by commas")
        headers.append((name, value.strip()))
    if len(headers) > MAX_HEADERS:
        raise BadRequest(f"headers: give at most {MAX_HEADERS} headers")
    if content_type is not None:
        headers = [h for h in headers if h[0].lower() != "content-type"]
        headers.append(("Content-Type", content_type))
    return tuple(headers)


def parse_explain_query(args: dict[str, str], base_url: str) -> tuple[str, BrowserRequest]:
    """The api name and the BrowserRequest a page would make, or BadRequest saying what to fix."""
    api = args.get("api", "")
    if not api:
        raise BadRequest("give api=NAME (GET /apis lists them)")
    origin = args.get("origin", "")
    if origin != "null" and parse_origin(origin) is None:
        raise BadRequest("give origin= the page's origin as a browser sends it, such as "
                         "https://app.example.com (lowercase, no path, no default port)")
    method = args.get("method", "GET") or "GET"
    if not TOKEN.fullmatch(method):
        raise BadRequest(f"method {method!r} is not an HTTP method name")
    if method.upper() in FORBIDDEN_METHODS:
        raise BadRequest(f"fetch() refuses the method {method.upper()} itself (a TypeError)")
    credentials = args.get("credentials", "same-origin") or "same-origin"
    if credentials not in CREDENTIALS_MODES:
        raise BadRequest(f"credentials must be one of {', '.join(CREDENTIALS_MODES)}")
    headers = parse_headers_param(args.get("headers", ""), args.get("content_type"))
    path = args.get("path", "").lstrip("/")
    url = f"{base_url.rstrip('/')}/cors/{api}/{path}"
    return api, BrowserRequest(url=url, origin=origin, method=method, headers=headers,
                               credentials=credentials)


@explain.get("/explain")
def explain_view() -> Response:
    config: Config = current_app.extensions["bridge.config"]
    api, browser_request = parse_explain_query(request.args.to_dict(), request.host_url)
    upstream = config.upstreams.get(api)
    if upstream is None:
        raise UnknownApi(f"no api named {api!r}; GET /apis lists them")
    browser = request.args.get("browser") or engine_of(request.headers.get("User-Agent")) or "chromium"
    if browser not in ENGINES:
        raise BadRequest(f"browser must be one of {', '.join(ENGINES)} (default: the one your "
                         "User-Agent names, else chromium)")
    verdict = explain_bridge(upstream, browser_request)
    body = verdict_dict(verdict, browser_request, browser, upstream.cors.max_age)
    body["jsonp"] = jsonp_verdict(upstream, browser_request.method,
                                  bool(browser_request.headers)).as_dict()
    return jsonify(body)


@explain.after_request
def grant_explain(response: Response) -> Response:
    """Any page reads /explain: it is a public, read-only diagnostic (it says what the config
    grants, which the grants themselves say to anyone who asks), and a page on an origin the config
    does not list is the one that most needs to be told why. ``*``, never with credentials."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
