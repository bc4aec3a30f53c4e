"""Thin Flask views: parse the request, call the policy and the gateway, shape the response.

The decisions live elsewhere: who may read what in ``cors.py``, what a callback may be in
``jsonp.py``, where a path may go in ``upstream.py``, how an answer is obtained in ``gateway.py``.
Refusals are raised as ``BridgeError`` and rendered at one boundary: ``render_error`` here, with the
CORS grant added by the CORS blueprint's ``after_request`` and the envelope by the JSONP blueprint's
error handler.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import Headers
from werkzeug.http import parse_set_header
from werkzeug.wrappers import Request

from . import jsonp as jsonp_policy
from .config import Config, UpstreamConfig
from .cors import CorsPolicy, granted_headers, origin_allowed, preflight_verdict
from .errors import (
    BadRequest,
    BridgeError,
    JsonpDisabled,
    MethodNotAllowed,
    OriginNotAllowed,
    PayloadTooLarge,
    UnknownApi,
    error_body,
    error_response,
)
from .gateway import Answer, Gateway
from .observe import current_request_id
from .upstream import UpstreamRequest, checked_path, forward_request_headers

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Response headers a page can read without being told (Fetch: CORS-safelisted response-header names)
SAFELISTED_RESPONSE_HEADERS = ("cache-control", "content-language", "content-length",
                               "content-type", "expires", "last-modified", "pragma")
# Upstream answer headers worth passing on to a JSONP response; the rest describe the JSON, not it.
JSONP_PASSED_HEADERS = ("cache-control", "expires", "last-modified")
JSONP_DROPPED_REQUEST_HEADERS = frozenset({"accept", "if-none-match", "if-modified-since"})

PROXIED_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

core = Blueprint("core", __name__)
cors = Blueprint("cors", __name__, url_prefix="/cors")
jsonp = Blueprint("jsonp", __name__, url_prefix="/jsonp")


def bridge_config() -> Config:
    config: Config = current_app.extensions["bridge.config"]
    return config


def gateway() -> Gateway:
    gw: Gateway = current_app.extensions["bridge.gateway"]
    return gw


def find_upstream(name: str) -> UpstreamConfig:
    upstream = bridge_config().upstreams.get(name)
    if upstream is None:
        raise UnknownApi(f"no api named {name!r}; GET /apis lists them")
    return upstream


# The request-reading helpers take werkzeug's Request (Flask's is one) so that hitpath.py, which
# answers fresh cache hits before Flask, reads a request exactly as the views do.


def raw_rest(req: Request) -> str:
    """The REST of ``/KIND/NAME/REST`` as the client sent it, still percent-encoded.

    Werkzeug decodes PATH_INFO, which would turn ``%2F`` into a real separator; the raw request
    line keeps the difference, so an encoded slash or dot is seen for what it is.
    """
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI")
    path = urlsplit(raw).path if raw else req.path
    root = req.script_root
    if root and path.startswith(root):
        path = path[len(root):]
    parts = path.split("/", 3)  # "", KIND, NAME, REST
    return parts[3] if len(parts) == 4 else ""


def query_pairs(req: Request, limit: int) -> tuple[tuple[str, str], ...]:
    if not req.environ.get("QUERY_STRING"):
        return ()  # no query: nothing to parse (werkzeug would still build an empty MultiDict)
    pairs = tuple(req.args.items(multi=True))
    if len(pairs) > limit:
        raise BadRequest(f"more than {limit} query parameters")
    return pairs


def read_body() -> bytes | None:
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS") and not request.content_length:
        return None
    limit = bridge_config().limits.max_request_body
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
    return data


def origin_values(req: Request) -> list[str]:
    """The request's Origin values. The WSGI environ holds at most one (``HTTP_ORIGIN``), so this is
    one lookup; werkzeug's ``getlist`` would title-case every header of the request to find it."""
    origin = req.headers.get("Origin")
    return [] if origin is None else [origin]


def single_origin(req: Request) -> str | None:
    origins = origin_values(req)
    # WSGI servers (gunicorn, werkzeug) join a repeated header with commas into one value, and no
    # serialised origin contains a comma: either way the client sent Origin more than once.
    if len(origins) > 1 or any("," in origin for origin in origins):
        raise BadRequest("more than one Origin header; send exactly one")
    return origins[0] if origins else None


def upstream_request(req: Request, upstream: UpstreamConfig, method: str,
                     query: tuple[tuple[str, str], ...], headers: tuple[tuple[str, str], ...],
                     body: bytes | None, request_id: str | None) -> UpstreamRequest:
    return UpstreamRequest(upstream=upstream, method=method, path=checked_path(raw_rest(req)),
                           query=query, headers=forward_request_headers(headers, upstream),
                           body=body, request_id=request_id)


def jsonp_request_headers(req: Request) -> tuple[tuple[str, str], ...]:
    """What the JSONP path sends upstream of the browser's headers: it asks for JSON only, and the
    client's validators describe the wrapped script, not the upstream's JSON, so they stay here."""
    return (("Accept", "application/json"),
            *((k, v) for k, v in req.headers.items() if k.lower() not in JSONP_DROPPED_REQUEST_HEADERS))


def answer_headers(answer: Answer) -> list[tuple[str, str]]:
    """The answer's headers with the cache's ``Cache-Status`` member and, for an answer the cache
    holds, its own ``Age`` in place of the upstream's (RFC 9111 section 5.1: one Age, the cache's)."""
    if answer.age is None:
        headers = list(answer.response.headers)
    else:
        headers = [(k, v) for k, v in answer.response.headers if k.lower() != "age"]
    if answer.cache_status:
        headers.append(("Cache-Status", answer.cache_status))
    if answer.age is not None:
        headers.append(("Age", str(answer.age)))
    return headers


def proxied_headers(answer: Answer) -> Headers:
    """The CORS path's headers for an upstream answer, before the grant (``grant_cors``)."""
    headers = Headers(answer_headers(answer))
    headers.setdefault("Content-Type", "application/octet-stream")
    # Whatever the upstream sends is data, never a page on the bridge's origin: an upstream that
    # reflects input into HTML must not become an XSS on the bridge.
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = PROXIED_CSP
    return headers


def grant_cors(headers: Headers, policy: CorsPolicy, origins: list[str]) -> None:
    """Every CORS-path answer varies by Origin; an allowed origin may read it, errors included."""
    add_vary_origin(headers)
    if "Access-Control-Allow-Origin" in headers or len(origins) != 1:
        return
    for header, value in granted_headers(policy, origins[0]):
        headers[header] = value


# --- core ---


@core.get("/healthz")
def healthz() -> Response:
    # What is unreachable is reported, not judged: a bridge whose Redis is down still serves.
    return jsonify(current_app.extensions["bridge.health"].report())


@core.get("/apis")
def apis() -> Response:
    upstreams = bridge_config().upstreams.values()
    return jsonify(apis=[u.public_view() for u in sorted(upstreams, key=lambda u: u.name)])


# --- CORS ---


def cors_policy_for(name: str | None) -> CorsPolicy:
    upstream = bridge_config().upstreams.get(name or "")
    return upstream.cors if upstream is not None else bridge_config().cors


@cors.route("/<name>/", methods=ALL_METHODS)
@cors.route("/<name>/<rest:rest>", methods=ALL_METHODS)
def cors_proxy(name: str, rest: str = "") -> Response:
    upstream = find_upstream(name)
    origin = single_origin(request)
    if origin is not None and not origin_allowed(upstream.cors, origin):
        raise OriginNotAllowed(f"origin {origin!r} may not read api {name!r}; add it to "
                               "allow_origins in the bridge's config")
    if is_preflight():
        verdict = preflight_verdict(upstream.cors, upstream.methods, origin,
                                    request.headers["Access-Control-Request-Method"],
                                    request.headers.get("Access-Control-Request-Headers"))
        if verdict.error is not None:
            raise BridgeError(verdict.message, code=verdict.error, status=verdict.status,
                              headers=verdict.headers)
        response = Response(status=204, headers=list(verdict.headers))
        response.vary.update(("Access-Control-Request-Method", "Access-Control-Request-Headers"))
        return response
    if request.method not in upstream.methods:
        raise MethodNotAllowed(f"method {request.method} is not configured for api {name!r}",
                               upstream.methods)
    request_headers = tuple(request.headers.items())
    forwarded = upstream_request(request, upstream, request.method,
                                 query_pairs(request, bridge_config().limits.max_query_params),
                                 request_headers,
                                 read_body() if request.method not in ("GET", "HEAD") else None,
                                 current_request_id())
    answer = gateway().fetch_once(request.environ, forwarded).conditional(request_headers)
    return Response(answer.response.body, status=answer.response.status, headers=proxied_headers(answer))


def is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


@cors.after_request
def add_cors_grant(response: Response) -> Response:
    """Every response of this path varies by Origin; allowed origins can read it, errors included.

    Preflights are left exactly as the view answered them: a refused preflight grants nothing.
    """
    if is_preflight():
        add_vary_origin(response.headers)
        return response
    grant_cors(response.headers, cors_policy_for((request.view_args or {}).get("name")),
               origin_values(request))
    return response


@lru_cache(maxsize=256)
def _vary_with_origin(vary: str | None) -> str | None:
    """The Vary value werkzeug's ``response.vary.add("Origin")`` writes for ``vary``; None when it
    leaves the header alone (Origin already named). Computed by werkzeug itself, once per value."""
    names = parse_set_header(vary)
    if "origin" in names:
        return None
    names.add("Origin")
    return names.to_header()


def add_vary_origin(headers: Headers) -> None:
    """``response.vary.add("Origin")`` without parsing and rebuilding the same Vary every time."""
    new = _vary_with_origin(headers.get("Vary"))
    if new is not None:
        headers["Vary"] = new


# --- JSONP ---


JSONP_CONTENT_TYPE = "text/javascript; charset=utf-8"  # RFC 9239


def jsonp_headers(headers: list[tuple[str, str]] | None = None) -> Headers:
    result = Headers(headers or [])
    result["Content-Type"] = JSONP_CONTENT_TYPE
    result["X-Content-Type-Options"] = "nosniff"
    return result


def _jsonp_script_response(callback: str, json_text: str, status: int,
                           headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(jsonp_policy.script(callback, json_text), status=status,
                    headers=jsonp_headers(headers))


def jsonp_params_of(req: Request, config: Config) -> jsonp_policy.JsonpParams:
    return jsonp_policy.jsonp_params(req.args.to_dict(flat=False), config.jsonp.callback_param,
                                     config.jsonp.max_callback_length)


def jsonp_answer(answer: Answer, params: jsonp_policy.JsonpParams, upstream: UpstreamConfig,
                 max_json_depth: int) -> tuple[bytes, int, Headers]:
    """The script, status and headers of the JSONP path for an upstream answer."""
    all_headers = answer_headers(answer)
    body, status = jsonp_script(answer, params, upstream, max_json_depth, all_headers)
    return body, status, jsonp_headers(jsonp_passed_headers(all_headers))


def jsonp_script(answer: Answer, params: jsonp_policy.JsonpParams, upstream: UpstreamConfig,
                 max_json_depth: int, all_headers: list[tuple[str, str]]) -> tuple[bytes, int]:
    """The script and status of the JSONP path; ``all_headers`` is ``answer_headers(answer)``."""
    status = answer.response.status
    body_json = answer.script_json(
        lambda body: jsonp_policy.script_safe_json(body, max_json_depth) if body.strip() else "null")
    if params.envelope:
        wrapped = jsonp_policy.envelope(status, envelope_headers(all_headers, upstream.cors), body_json)
        status = 200
    else:
        wrapped = body_json
    return jsonp_policy.script(params.callback, wrapped), status


def jsonp_passed_headers(all_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The answer's headers that describe a JSONP script too; the rest describe only the JSON."""
    return [(k, v) for k, v in all_headers
            if k.lower() in JSONP_PASSED_HEADERS or k in ("Cache-Status", "Age")]


def _current_jsonp_params() -> jsonp_policy.JsonpParams | None:
    """The callback and envelope of this request, or None when they are not valid."""
    try:
        return jsonp_params_of(request, bridge_config())
    except BridgeError:
        return None


def envelope_headers(answer_headers: list[tuple[str, str]],
                     policy: CorsPolicy) -> dict[str, str]:
    """The headers a CORS page could read: the safelisted ones and those the policy exposes."""
    readable = set(SAFELISTED_RESPONSE_HEADERS) | {h.lower() for h in policy.expose_headers}
    return {name.lower(): value for name, value in answer_headers if name.lower() in readable}


@jsonp.errorhandler(BridgeError)
def jsonp_error(error: BridgeError) -> Response:
    """Bridge errors in envelope mode are still a script that runs, with the status inside it."""
    params = _current_jsonp_params() if request.method in ("GET", "HEAD") else None
    if params is None or not params.envelope:
        return error_response(error)
    data = jsonp_policy.script_safe_dumps(error.body())
    headers = {name.lower(): value for name, value in error.headers}
    headers["content-type"] = "application/json"
    response = _jsonp_script_response(params.callback,
                                      jsonp_policy.envelope(error.status, headers, data), 200)
    response.headers["Cache-Control"] = "no-store"
    return response


@jsonp.route("/<name>/", methods=ALL_METHODS)
@jsonp.route("/<name>/<rest:rest>", methods=ALL_METHODS)
def jsonp_proxy(name: str, rest: str = "") -> Response:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("the JSONP path answers GET and HEAD only; use /cors/ for "
                               f"{request.method}", ("GET", "HEAD"))
    upstream = find_upstream(name)
    if not upstream.jsonp:
        raise JsonpDisabled(f"JSONP is turned off for api {name!r}; use /cors/{name}/")
    config = bridge_config()
    params = jsonp_params_of(request, config)
    query = jsonp_policy.forwarded_query(query_pairs(request, config.limits.max_query_params),
                                         config.jsonp.callback_param)
    # A script tag asks for */*; this path only ever wants JSON, and never sends credentials.
    forwarded = upstream_request(request, upstream, "GET", query, jsonp_request_headers(request),
                                 None, current_request_id())
    body, status, headers = jsonp_answer(gateway().fetch_once(request.environ, forwarded), params,
                                         upstream, config.limits.max_json_depth)
    return Response(body, status=status, headers=headers)


def render_error(error: BridgeError) -> Response:
    return error_response(error)


def render_http_error(error: Any) -> Response:
    """Werkzeug's own refusals (404 for unknown paths, 405, 413) in the bridge's JSON shape."""
    body = BridgeError(error.description or error.name, code=error.name.lower().replace(" ", "_"),
                       status=error.code)
    response = error_response(body)
    if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


__all__ = ["core", "cors", "jsonp", "render_error", "render_http_error", "error_body"]
