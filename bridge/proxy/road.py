"""The one road for ``/cors/`` and ``/jsonp/``: every request, read top to bottom in ``ProxyRoad``.

Every method, preflights, HEAD, conditional requests and every refusal take the same steps, once:
read the request; refuse it if it is too odd to be a browser's; charge the client's rate budget;
apply the path's policy (the upstream lookup, CORS origins and preflights, JSONP methods and callback);
build the upstream request (``forward.forwarded_request``, which the cache key is derived from); ask
the gateway; render the answer or the error (``render.py``); write the access record. A refusal is a
``BridgeError`` raised by whichever step refuses and rendered at one place, in the path's own shape. The
road is a plain WSGI application that ``create_app`` mounts in front of Flask; it keeps nothing per
request beyond the request itself and never hands a request on to another layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from .. import jsonp as jsonp_policy
from ..config import Config, UpstreamConfig
from ..cors import CorsPolicy, origin_allowed, preflight_verdict
from ..errors import (
    BadRequest,
    BridgeError,
    InternalError,
    JsonpDisabled,
    MethodNotAllowed,
    NotFound,
    OriginNotAllowed,
    PayloadTooLarge,
    UnknownApi,
)
from ..gateway import Gateway
from ..observe import AccessRecord, Recorder, accepted_request_id, cache_outcome, new_request_id
from ..ratelimit import RateBudget
from . import render
from .forward import HeaderRule, forwarded_request
from .request import ProxyRequest, raw_target, shape_problem

log = logging.getLogger(__name__)

StartResponse = Any
JSONP_METHODS = ("GET", "HEAD")
_BODILESS_METHODS = ("GET", "HEAD", "DELETE", "OPTIONS")


def status_line(status: int) -> str:
    """The status line werkzeug's ``Response`` writes for ``status`` ("404 NOT FOUND")."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


class ProxyRoad:
    """The WSGI application for every request whose path starts with ``/cors/`` or ``/jsonp/``."""

    def __init__(self, config: Config, gateway: Gateway, budget: RateBudget,
                 recorder: Recorder) -> None:
        self.config = config
        self.gateway = gateway
        self.budget = budget
        self.recorder = recorder
        self.header_rules = {name: HeaderRule.of(u) for name, u in config.upstreams.items()}
        # An entry keeps its unchanging headers only in this process's memory store: a Redis entry
        # is read afresh on every hit, so there is nothing to keep them on.
        cache = gateway.cache
        self.keep_headers = cache is not None and cache.store.name == "memory"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        kind = "cors" if environ.get("PATH_INFO", "").startswith("/cors/") else "jsonp"
        request = ProxyRequest.read(environ, kind)
        request_id = accepted_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        try:
            reply = self.serve(request, request_id)
        except BridgeError as error:
            reply = self.refusal(request, error)
        except Exception:  # a bug: the client still gets the JSON shape, the log the traceback
            log.exception("proxy road: failed on %s %s", request.method, environ.get("PATH_INFO"))
            reply = self.refusal(request, InternalError("the bridge failed on this request; the "
                                                        "operator's log has the details"))
        headers, body = render.finish(reply, request.method, request_id)
        start_response(status_line(reply.status), headers)
        self.recorder.record(AccessRecord(
            method=request.method, kind="preflight" if kind == "cors" and request.is_preflight else kind,
            upstream=request.name if request.name in self.config.upstreams else "",
            status=reply.status, cache=cache_outcome(reply.cache_status),
            duration=time.perf_counter() - started, request_id=request_id, error=reply.error))
        return [body] if body else []

    # --- the steps, in order ---

    def serve(self, request: ProxyRequest, request_id: str) -> render.Reply:
        config = self.config
        jsonp = request.kind == "jsonp"
        problem = shape_problem(request.environ, config.limits.max_url_length,
                                config.jsonp.callback_param if jsonp else None)
        if problem is not None:
            raise problem
        if request.rest is None:  # /KIND/NAME: the api's root is /KIND/NAME/
            return self.slash_redirect(request)
        upstream = config.upstreams.get(request.name)
        self.budget.charge(request.client, upstream)
        if jsonp:
            return self.jsonp(request, upstream, request_id)
        return self.cors(request, upstream, request_id)

    def cors(self, request: ProxyRequest, upstream: UpstreamConfig | None,
             request_id: str) -> render.Reply:
        upstream = self.known(request, upstream)
        origin = request.origin()
        if origin is not None and not origin_allowed(upstream.cors, origin):
            raise OriginNotAllowed(f"origin {origin!r} may not read api {upstream.name!r}; add it to "
                                   "allow_origins in the bridge's config")
        if request.is_preflight:
            environ = request.environ
            verdict = preflight_verdict(upstream.cors, upstream.methods, origin,
                                        environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"],
                                        environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"))
            if verdict.error is not None:
                raise BridgeError(verdict.message, code=verdict.error, status=verdict.status,
                                  headers=verdict.headers)
            return render.preflight_answer(verdict.status, verdict.headers)
        method = request.method
        if method not in upstream.methods:
            raise MethodNotAllowed(f"method {method} is not configured for api {upstream.name!r}",
                                   upstream.methods)
        self.count_query(request)
        forwarded = forwarded_request(upstream, self.header_rules[upstream.name], method=method,
                                      rest=request.rest or "", query=request.query,
                                      environ=request.environ, jsonp_callback_param=None,
                                      body=self.body(request), request_id=request_id)
        answer = self.gateway.fetch(forwarded).conditional(self.validators(request))
        return render.cors_answer(answer, upstream.cors, origin, self.keep_headers)

    def jsonp(self, request: ProxyRequest, upstream: UpstreamConfig | None,
              request_id: str) -> render.Reply:
        if request.method not in JSONP_METHODS:
            raise MethodNotAllowed("the JSONP path answers GET and HEAD only; use /cors/ for "
                                   f"{request.method}", JSONP_METHODS)
        upstream = self.known(request, upstream)
        if not upstream.jsonp:
            raise JsonpDisabled(f"JSONP is turned off for api {upstream.name!r}; "
                                f"use /cors/{upstream.name}/")
        params = self.jsonp_params(request)
        self.count_query(request)
        config = self.config
        # A script tag asks for */*; this path only ever wants JSON, and never sends credentials.
        forwarded = forwarded_request(upstream, self.header_rules[upstream.name], method="GET",
                                      rest=request.rest or "", query=request.query,
                                      environ=request.environ,
                                      jsonp_callback_param=config.jsonp.callback_param, body=None,
                                      request_id=request_id)
        return render.jsonp_answer(self.gateway.fetch(forwarded), params, upstream.cors,
                                   config.limits.max_json_depth, self.keep_headers)

    def refusal(self, request: ProxyRequest, error: BridgeError) -> render.Reply:
        """The one place a refusal is rendered, in the shape of the path it was made on."""
        if request.kind == "jsonp":
            params = None
            if request.method in JSONP_METHODS:
                try:
                    params = self.jsonp_params(request)
                except BridgeError:
                    params = None  # no valid callback: the error is plain JSON
            return render.jsonp_error(error, params)
        if request.is_preflight:
            return render.preflight_error(error)
        try:
            origin = request.origin()
        except BadRequest:
            origin = None  # several origins: none of them is granted
        return render.cors_error(error, self.cors_policy(request.name), origin)

    # --- what the steps read ---

    def known(self, request: ProxyRequest, upstream: UpstreamConfig | None) -> UpstreamConfig:
        if upstream is not None:
            return upstream
        if not request.name:
            raise NotFound(f"give an api name: /{request.kind}/NAME/PATH (GET /apis lists them)")
        raise UnknownApi(f"no api named {request.name!r}; GET /apis lists them")

    def cors_policy(self, name: str) -> CorsPolicy:
        upstream = self.config.upstreams.get(name)
        return upstream.cors if upstream is not None else self.config.cors

    def jsonp_params(self, request: ProxyRequest) -> jsonp_policy.JsonpParams:
        jsonp = self.config.jsonp
        return jsonp_policy.params_of(request.pairs, jsonp.callback_param, jsonp.max_callback_length)

    def count_query(self, request: ProxyRequest) -> None:
        limit = self.config.limits.max_query_params
        if request.query and request.query.count("&") >= limit and len(request.pairs) > limit:
            raise BadRequest(f"more than {limit} query parameters")

    @staticmethod
    def validators(request: ProxyRequest) -> list[tuple[str, str]]:
        """The client's conditional headers, which a cached answer is checked against."""
        environ = request.environ
        return [(name, environ[key]) for name, key in (("If-None-Match", "HTTP_IF_NONE_MATCH"),
                                                        ("If-Modified-Since", "HTTP_IF_MODIFIED_SINCE"))
                if key in environ]

    def body(self, request: ProxyRequest) -> bytes | None:
        """The request body to forward, at most ``max_request_body`` bytes; GET and HEAD bodies
        are never forwarded."""
        environ = request.environ
        method = request.method
        if method in ("GET", "HEAD"):
            return None
        length = environ.get("CONTENT_LENGTH")
        if method in _BODILESS_METHODS and not length and "HTTP_TRANSFER_ENCODING" not in environ:
            return None
        limit = self.config.limits.max_request_body
        too_large = PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        declared = get_content_length(environ)
        if declared is not None and declared > limit:
            raise too_large
        # A chunked body (gunicorn terminates it) is read to one byte past the limit, no further.
        data: bytes = get_input_stream(environ).read(limit + 1)
        if len(data) > limit:
            raise too_large
        return data

    def slash_redirect(self, request: ProxyRequest) -> render.Reply:
        """``/KIND/NAME`` -> ``/KIND/NAME/``, relative: a Host header can never steer it elsewhere."""
        environ = request.environ
        target = environ.get("SCRIPT_NAME", "") + raw_target(environ)[0] + "/"
        return render.Reply(308, [("Location", target + ("?" + request.query if request.query else ""))])
