"""``GET /explain``: the bridge's CORS verdict for a request a page would make, as JSON.

A thin view over ``explain.py``: it parses the query, finds the upstream, and returns what
``explain_bridge`` concludes. It never contacts the upstream. The answer is granted to the origins of
the ``[cors]`` section (the comparison page among them), by ``cors.py``'s own ``grant_headers``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from .config import Config
from .cors import grant_headers, origin_allowed, parse_origin
from .errors import BadRequest, UnknownApi
from .explain import (
    CREDENTIALS_MODES,
    FORBIDDEN_METHODS,
    BrowserRequest,
    explain_bridge,
    jsonp_verdict,
    verdict_dict,
)

explain = Blueprint("explain", __name__)
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
MAX_HEADERS = 64


def parse_headers_param(text: str, content_type: str | None) -> tuple[tuple[str, str], ...]:
    """``H1,H2`` or ``H1: value,H2``: the headers a page sets (a value cannot hold a comma here)."""
    headers: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition(":")
        name = name.strip()
        if not name or not set(name) <= _TOKEN_CHARS:
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
    if not set(method) <= _TOKEN_CHARS:
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
    verdict = explain_bridge(upstream, browser_request)
    body = verdict_dict(verdict)
    body["jsonp"] = jsonp_verdict(upstream, browser_request.method,
                                  bool(browser_request.headers)).as_dict()
    return jsonify(body)


@explain.after_request
def grant_explain(response: Response) -> Response:
    """The page on another origin reads /explain too: grant it to the [cors] section's origins."""
    config: Config = current_app.extensions["bridge.config"]
    origin = request.headers.get("Origin")
    response.vary.add("Origin")
    if origin is not None and origin_allowed(config.cors, origin):
        for name, value in grant_headers(config.cors, origin):
            response.headers[name] = value
    return response
