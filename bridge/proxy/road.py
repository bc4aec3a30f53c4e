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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from ..config import Config, UpstreamConfig
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
from ..ops.access import AccessRecord, Recorder, accepted_request_id, new_request_id
from ..ops.ratelimit import RateBudget
from ..policy import jsonp as jsonp_policy
from ..policy.cors import CorsPolicy, origin_allowed, preflight_verdict
from ..upstream.message import UpstreamRequest
from . import render
from .forward import HeaderRule, forwarded_request
from .gateway import Gateway
from .request import ProxyRequest, shape_problem

log = logging.getLogger(__name__)

StartResponse = Any
JSONP_METHODS = ("GET", "HEAD")
_BODILESS_METHODS = ("GET", "HEAD", "DELETE", "OPTIONS")
VALIDATORS = (("If-None-Match", "HTTP_IF_NONE_MATCH"), ("If-Modified-Since", "HTTP_IF_MODIFIED_SINCE"))
# The plan memo's bound: at most this many shapes, each of at most this many characters (longer
# requests are judged every time), so that requests a client makes up cannot fill memory.
SHAPE_MEMO_SIZE = 256
SHAPE_MEMO_CHARS = 4096


@lru_cache(maxsize=64)
def status_line(status: int) -> str:
    """The status line werkzeug's ``Response`` writes for ``status`` ("404 NOT FOUND")."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the pure steps made of a request: its upstream and, for a preflight, the whole answer;
    for anything else the request to forward and what the answer is rendered for."""

    upstream: UpstreamConfig
    origin: str | None = None  # the CORS path's one Origin
    params: jsonp_policy.JsonpParams | None = None  # the JSONP path's callback and envelope
    forwarded: UpstreamRequest | None = None
    validators: tuple[tuple[str, str], ...] = ()  # the client's, answered from a cached entry
    preflight: render.Reply | None = None


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
        # What the pure steps made of recent request shapes (a page asks the same url with the same
        # headers again and again): refusals and requests with a body are never kept.
        self.plans: dict[tuple[str, ...], Plan] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        kind = "cors" if environ.get("PATH_INFO", "").startswith("/cors/") else "jsonp"
        request = ProxyRequest.read(environ, kind)
        request_id = accepted_request_id(request.headers.get("HTTP_X_REQUEST_ID")) or new_request_id()
        try:
            reply, upstream = self.serve(request, request_id)
        except BridgeError as error:
            reply, upstream = self.refusal(request, error), self.known_name(request)
        except Exception:  # a bug: the client still gets the JSON shape, the log the traceback
            log.exception("proxy road: failed on %s %s", request.method, request.decoded_path)
            reply = self.refusal(request, InternalError("the bridge failed on this request; the "
                                                        "operator's log has the details"))
            upstream = self.known_name(request)
        headers, body = render.finish(reply, request.method, request_id)
        start_response(status_line(reply.status), headers)
        self.recorder.record(AccessRecord(
            request.method, "preflight" if kind == "cors" and request.is_preflight else kind,
            upstream, reply.status,
            reply.cache_status.outcome if reply.cache_status is not None else "",
            time.perf_counter() - started, request_id, reply.error))
        return [body] if body else []

    # --- the steps, in order ---

    def serve(self, request: ProxyRequest, request_id: str) -> tuple[render.Reply, str]:
        """The reply, and the name of the configured upstream it is for ("" when none is)."""
        shape = request.shape if not request.has_body else None
        plan = self.plans.get(shape) if shape is not None else None
        if plan is None:
            config = self.config
            problem = shape_problem(request, config.limits.max_url_length,
                                    config.jsonp.callback_param if request.kind == "jsonp" else None)
            if problem is not None:
                raise problem
            if request.rest is None:  # /KIND/NAME: the api's root is /KIND/NAME/
                return self.slash_redirect(request), self.known_name(request)
            upstream = config.upstreams.get(request.name)
        else:
            upstream = plan.upstream
        self.budget.charge(request.client, upstream)
        if plan is None:
            plan = self.cors_plan(request, upstream) if request.kind == "cors" \
                else self.jsonp_plan(request, upstream)
            if shape is not None and sum(map(len, shape)) <= SHAPE_MEMO_CHARS:
                if len(self.plans) >= SHAPE_MEMO_SIZE:
                    self.plans.clear()  # cheaper than an LRU's bookkeeping on every request
                self.plans[shape] = plan
        return self.answer(request, plan, request_id), plan.upstream.name

    def cors_plan(self, request: ProxyRequest, upstream: UpstreamConfig | None) -> Plan:
        upstream = self.known(request, upstream)
        origin = request.origin()
        if origin is not None and not origin_allowed(upstream.cors, origin):
            raise OriginNotAllowed(f"origin {origin!r} may not read api {upstream.name!r}; add it to "
                                   "allow_origins in the bridge's config")
        if request.is_preflight:
            verdict = preflight_verdict(upstream.cors, upstream.methods, origin,
                                        request.headers["HTTP_ACCESS_CONTROL_REQUEST_METHOD"],
                                        request.header("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"))
            if verdict.error is not None:
                raise BridgeError(verdict.message, code=verdict.error, status=verdict.status,
                                  headers=verdict.headers)
            return Plan(upstream, origin, preflight=render.preflight_answer(verdict.status,
                                                                            verdict.headers))
        method = request.method
        if method not in upstream.methods:
            raise MethodNotAllowed(f"method {method} is not configured for api {upstream.name!r}",
                                   upstream.methods)
        self.count_query(request)
        forwarded = forwarded_request(upstream, self.header_rules[upstream.name], method=method,
                                      rest=request.rest or "", query=request.query,
                                      headers=request.headers, jsonp_callback_param=None,
                                      body=self.body(request))
        validators = tuple((name, request.headers[key]) for name, key in VALIDATORS
                           if key in request.headers)
        return Plan(upstream, origin, forwarded=forwarded, validators=validators)

    def jsonp_plan(self, request: ProxyRequest, upstream: UpstreamConfig | None) -> Plan:
        if request.method not in JSONP_METHODS:
            raise MethodNotAllowed("the JSONP path answers GET and HEAD only; use /cors/ for "
                                   f"{request.method}", JSONP_METHODS)
        upstream = self.known(request, upstream)
        if not upstream.jsonp:
            raise JsonpDisabled(f"JSONP is turned off for api {upstream.name!r}; "
                                f"use /cors/{upstream.name}/")
        params = self.jsonp_params(request)
        self.count_query(request)
        # A script tag asks for */*; this path only ever wants JSON, and never sends credentials.
        forwarded = forwarded_request(upstream, self.header_rules[upstream.name], method="GET",
                                      rest=request.rest or "", query=request.query,
                                      headers=request.headers,
                                      jsonp_callback_param=self.config.jsonp.callback_param, body=None)
        return Plan(upstream, params=params, forwarded=forwarded)

    def answer(self, request: ProxyRequest, plan: Plan, request_id: str) -> render.Reply:
        """Ask the gateway and render what it answers, as the plan says."""
        if plan.preflight is not None:
            return plan.preflight
        assert plan.forwarded is not None
        answer = self.gateway.fetch(plan.forwarded, request_id)
        if plan.params is None:
            return render.cors_answer(answer.conditional(plan.validators), plan.upstream.cors,
                                      plan.origin, self.keep_headers)
        return render.jsonp_answer(answer, plan.params, plan.upstream.cors,
                                   self.config.limits.max_json_depth, self.keep_headers)

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

    def known_name(self, request: ProxyRequest) -> str:
        """The upstream's name for the access record when it is configured, else "" (never a
        name the client made up)."""
        return request.name if request.name in self.config.upstreams else ""

    def cors_policy(self, name: str) -> CorsPolicy:
        upstream = self.config.upstreams.get(name)
        return upstream.cors if upstream is not None else self.config.cors

    def jsonp_params(self, request: ProxyRequest) -> jsonp_policy.JsonpParams:
        jsonp = self.config.jsonp
        return jsonp_policy.params_of(request.pairs, jsonp.callback_param, jsonp.max_callback_length,
                                      jsonp.allow_callbacks)

    def count_query(self, request: ProxyRequest) -> None:
        limit = self.config.limits.max_query_params
        if request.query and request.query.count("&") >= limit and len(request.pairs) > limit:
            raise BadRequest(f"more than {limit} query parameters")

    def body(self, request: ProxyRequest) -> bytes | None:
        """The request body to forward, at most ``max_request_body`` bytes; GET and HEAD bodies
        are never forwarded."""
        method = request.method
        if method in ("GET", "HEAD") or (method in _BODILESS_METHODS and not request.has_body):
            return None
        environ = request.environ
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
        target = request.environ.get("SCRIPT_NAME", "") + request.path + "/"
        return render.Reply(308, [("Location", target + ("?" + request.query if request.query else ""))])
