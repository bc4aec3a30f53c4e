"""Plain GETs answered in front of Flask: the same decisions, without the framework's cost.

A cache hit is most of a busy bridge's traffic, and on one most of the time went to Flask and werkzeug
themselves (request context, routing, hooks, ``Response`` building: about half of a hit in the
profile; a third of a miss). ``HitPath`` is a WSGI layer around the Flask app that serves a plain
``GET`` on ``/cors/`` or ``/jsonp/`` whose every check passes: from the cache when it holds a fresh
answer, else from ``Gateway.fetch`` (a miss, a revalidation, an upstream with ``ttl = 0``). Any other
request, and any request a check would refuse, goes to Flask untouched, which then answers it
(refusals included) exactly as before. So this module decides nothing of its own: it calls the very
functions the views and hooks call (``limits.refuse_odd_shape``, ``cors.origin_allowed`` and
``granted_headers``, ``views.proxied_headers``, ``views.jsonp_script``, ``Gateway.fresh_hit`` and
``fetch``, the access ``Recorder``), and ``tests/test_hitpath.py`` checks that its answers are the
views' answers, header for header. What it adds are two memos. The headers of an entry that are the
same on every hit are made once, by the views' functions, and kept on the entry. And what the checks
make of a request that passes them (its upstream, callback, origin and forwarded request) is a pure
function of the request's path, query and headers, so it is kept for the last ``SHAPE_MEMO_SIZE``
short requests, keyed by all of those (``shape_key``): a browser asks the same url with the same
headers again and again.

Once it has asked the upstream, a request is never asked again: when what came back is refused (a
JSONP answer that is not JSON, an upstream timeout) or bodiless (204, 304), the request goes to the
views with the fetch's outcome, its id and its start (``gateway.FETCHED``, ``observe.HANDED_*``), and
they render it as their own. A request counted against its rate limits here is not counted again
there (``limits.COUNTED``).

Left to Flask: HEAD, conditional requests (If-None-Match, If-Modified-Since), requests with a body,
and anything refused before the upstream is asked (a rate limit's refusal included: a request is
counted by flask-limiter's own check before it is served here, ``limits.within_budget``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from flask import Flask
from werkzeug.datastructures import Headers
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from . import jsonp as jsonp_policy
from . import views
from .cache import pairs_size
from .config import Config, UpstreamConfig
from .cors import CorsPolicy, granted_headers, origin_allowed
from .errors import BridgeError
from .gateway import FETCHED, Answer, Gateway
from .limits import refuse_odd_shape, within_budget
from .observe import (
    HANDED_REQUEST_ID,
    HANDED_STARTED,
    REQUEST_ID_HEADER,
    AccessRecord,
    Recorder,
    accepted_request_id,
    cache_outcome,
    error_code_of,
    new_request_id,
)
from .upstream import UpstreamRequest

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
# Headers that make a GET something other than a plain read of a stored answer.
_NOT_PLAIN = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_TRANSFER_ENCODING")
# Stated per hit, never kept in an entry's headers: the cache's Age replaces the upstream's, and the
# request id is this request's (an upstream may echo the id of the request that filled the entry).
_PER_HIT = frozenset({"age", "x-request-id", "content-length"})
# The shape memo's bound: at most this many requests' checks are kept, each of a request whose url and
# headers add up to at most SHAPE_MEMO_CHARS characters (longer ones are checked every time), so that
# requests a client makes up cannot fill memory (about 256 x 4 KiB at worst, per process).
SHAPE_MEMO_SIZE = 256
SHAPE_MEMO_CHARS = 4096


def shape_key(environ: dict[str, Any], path: str) -> tuple[str, ...] | None:
    """Everything of a request the hit path's checks read (path, raw url, query, every header), or
    None when it is too long to keep. Two requests with one key are checked alike, byte for byte."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    key = [path, raw, environ.get("QUERY_STRING", ""), environ.get("CONTENT_TYPE", "")]
    size = len(path) + len(raw)
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            key += (name, value)
            size += len(name) + len(value)
    return tuple(key) if size <= SHAPE_MEMO_CHARS else None


def status_line(status: int) -> str:
    """The status line werkzeug's ``Response`` writes for ``status`` ("404 NOT FOUND")."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def cors_hit_headers(answer: Answer, policy: CorsPolicy, origin: str | None,
                     remembered: bool = True) -> list[tuple[str, str]]:
    """``views.proxied_headers`` + ``views.grant_cors`` for a hit, the same headers made cheaper.

    Werkzeug's ``Headers`` was a third of a hit here. All but three of them (``Cache-Status``,
    ``Age`` and the grant) are the same on every hit of an entry, so those are made once per entry
    by the views' functions and kept on it; the three are added as the views add them. The grant is
    the views' memo (``granted_headers``); a stored answer never holds Access-Control-* fields
    (``upstream.filter_response_headers``), so nothing can stand in the grant's way. The request id
    and length are the caller's, as after the views.
    """
    def make(stored: Answer) -> Headers:
        made = views.proxied_headers(stored)
        views.add_vary_origin(made)
        return made

    headers = _with_cache_headers(_kept_headers(answer, "cors_headers", make, remembered), answer)
    if origin is not None:
        headers.extend(granted_headers(policy, origin))
    return headers


def jsonp_hit_headers(answer: Answer, remembered: bool = True) -> list[tuple[str, str]]:
    """``views.jsonp_headers(views.jsonp_passed_headers(...))`` for a hit, made as ``cors_hit_headers``
    makes the CORS path's: once per entry by the views' functions, plus what changes per hit."""
    def make(stored: Answer) -> Headers:
        return views.jsonp_headers(views.jsonp_passed_headers(views.answer_headers(stored)))

    return _with_cache_headers(_kept_headers(answer, "jsonp_headers", make, remembered), answer)


def _kept_headers(answer: Answer, slot: str, make: Callable[[Answer], Headers],
                  remembered: bool) -> tuple[tuple[str, str], ...]:
    """The entry's headers that are the same on every hit: ``make`` (the views' functions) applied to
    the stored answer without its per-hit fields, kept in ``slot`` of the entry when ``remembered``.
    What is kept counts in the entry's size, and the store accounts it again, as it does when an
    entry gains its script JSON: the memory bound holds what is kept, not only the body."""
    entry = answer.entry
    assert entry is not None  # a hit is always served from an entry
    static: tuple[tuple[str, str], ...] | None = getattr(entry, slot)
    if static is None:
        static = tuple((k, v) for k, v in make(Answer(entry.response)).to_wsgi_list()
                       if k.lower() not in _PER_HIT)
        if remembered:
            setattr(entry, slot, static)
            entry.size += pairs_size(static)
            if answer.remember is not None:
                answer.remember("")
    return static


def _with_cache_headers(static: tuple[tuple[str, str], ...], answer: Answer) -> list[tuple[str, str]]:
    """The entry's unchanging headers, then this hit's Cache-Status member and Age, as the views'
    ``answer_headers`` adds them."""
    headers = list(static)
    if answer.cache_status:
        headers.append(("Cache-Status", answer.cache_status))
    if answer.age is not None:
        headers.append(("Age", str(answer.age)))
    return headers


class HitPath:
    def __init__(self, app: Flask, inner: WsgiApp) -> None:
        self.inner = inner
        self.config: Config = app.extensions["bridge.config"]
        self.gateway: Gateway = app.extensions["bridge.gateway"]
        self.recorder: Recorder = app.extensions["bridge.access_recorder"]
        self.app = app
        limiter = app.extensions.get("bridge.limiter")
        # With a rate limit configured, a hit is counted by flask-limiter's own check before it is
        # served here (limits.within_budget); a refusal is left to the views, which answer the 429.
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.served = 0  # fresh hits answered here, for tests and curious operators
        self.fetched = 0  # other plain GETs answered here (misses, revalidations, ttl = 0)
        self._shapes: dict[tuple[str, ...], _Shape] = {}  # shape_key -> what the checks made of it
        # Entries keep their unchanging headers only in this process's memory store: a Redis entry
        # is read afresh on every hit, so there is nothing to keep them on.
        self.remembers = self.gateway.cache is not None and self.gateway.cache.store.name == "memory"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET":
            path: str = environ.get("PATH_INFO", "")
            if path.startswith(("/cors/", "/jsonp/")) and not environ.get("SCRIPT_NAME"):
                started = time.perf_counter()
                try:
                    reply = self._answer(environ, path, started)
                except BridgeError:
                    reply = None  # refused: the views refuse it the same way, in their own words
                except Exception:  # a bug here must cost speed, never an answer
                    log.exception("hit path: failed on %s; handing the request to the views", path)
                    reply = None
                if reply is not None:
                    return self._send(reply, environ, start_response, started)
        return self.inner(environ, start_response)

    def _answer(self, environ: dict[str, Any], path: str, started: float) -> _Reply | None:
        if (any(h in environ for h in _NOT_PLAIN)
                or environ.get("CONTENT_LENGTH", "0") not in ("", "0")):
            return None
        key = shape_key(environ, path)
        shape = self._shapes.get(key) if key is not None else None
        if shape is None:
            shape = self._shape(environ, path)
            if shape is None:
                return None
            if key is not None:
                if len(self._shapes) >= SHAPE_MEMO_SIZE:
                    self._shapes.clear()  # cheaper than an LRU's bookkeeping on every hit
                self._shapes[key] = shape
        answer = self.gateway.fresh_hit(shape.forwarded)
        if self.limiter is not None and not within_budget(self.app, self.limiter, environ):
            return None  # over budget: the views count it again and refuse it with their 429
        request_id = accepted_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        if answer is None:
            return self._fetched(environ, shape, request_id, started)
        upstream = shape.upstream
        if shape.params is None:  # the CORS path
            wsgi_headers = cors_hit_headers(answer, upstream.cors, shape.origin, self.remembers)
            body, status = answer.response.body, answer.response.status
            error = self._error_code(status, answer, body)
        else:
            body, status = views.jsonp_script(answer, shape.params, upstream,
                                              self.config.limits.max_json_depth,
                                              views.answer_headers(answer) if shape.params.envelope
                                              else [])
            wsgi_headers = jsonp_hit_headers(answer, self.remembers)
            error = ""  # a script is never read for an error code
        assert self.gateway.cache is not None  # fresh_hit found an entry in it
        self.gateway.cache.event("hit")  # counted only now, when nothing can refuse it any more
        self.served += 1
        return self._reply(shape, status, wsgi_headers, body, request_id, error, answer.cache_status)

    def _fetched(self, environ: dict[str, Any], shape: _Shape, request_id: str,
                 started: float) -> _Reply | None:
        """Not a fresh hit: the gateway's answer (a miss, a revalidation, a stale or uncached one),
        rendered by the views' functions. Whatever happens after the fetch is left to the views with
        the fetch's outcome (``gateway.FETCHED``), the request's id and start, so that they render it
        (refusals included) as their own, without asking the upstream again or counting it twice."""
        environ[HANDED_REQUEST_ID], environ[HANDED_STARTED] = request_id, started
        try:
            answer = self.gateway.fetch(replace(shape.forwarded, request_id=request_id))
        except BridgeError as exc:
            environ[FETCHED] = exc
            raise
        environ[FETCHED] = answer
        status = answer.response.status
        if status < 200 or status in (204, 304):
            return None  # bodiless answers: werkzeug's Response has rules of its own for them
        upstream = shape.upstream
        if shape.params is None:  # the CORS path
            made = views.proxied_headers(answer)
            views.grant_cors(made, upstream.cors, [] if shape.origin is None else [shape.origin])
            body = answer.response.body
            error = self._error_code(status, answer, body)
        else:
            body, status, made = views.jsonp_answer(answer, shape.params, upstream,
                                                    self.config.limits.max_json_depth)
            error = ""
        wsgi_headers = [(k, v) for k, v in made.to_wsgi_list()
                        if k.lower() not in ("x-request-id", "content-length")]
        self.fetched += 1
        return self._reply(shape, status, wsgi_headers, body, request_id, error, answer.cache_status)

    @staticmethod
    def _error_code(status: int, answer: Answer, body: bytes) -> str:
        """As the access hook reads a refusal's code: from a JSON answer of 400 or more."""
        if status < 400:
            return ""
        mimetype = (answer.response.header("content-type") or "").split(";")[0].strip().lower()
        return error_code_of(status, mimetype, body)

    @staticmethod
    def _reply(shape: _Shape, status: int, wsgi_headers: list[tuple[str, str]], body: bytes,
               request_id: str, error: str, cache_status: str | None) -> _Reply:
        wsgi_headers.append((REQUEST_ID_HEADER, request_id))
        wsgi_headers.append(("Content-Length", str(len(body))))
        return _Reply(shape.kind, shape.upstream.name, status, wsgi_headers, body, request_id, error,
                      cache_status)

    def _shape(self, environ: dict[str, Any], path: str) -> _Shape | None:
        """The views' checks of a plain GET, and what they make of it; None (or the views' error)
        for a request the hit path leaves to the views."""
        kind, _, rest = path[1:].partition("/")
        name, slash, _ = rest.partition("/")
        upstream = self.config.upstreams.get(name)
        if not slash or upstream is None or (kind == "jsonp" and not upstream.jsonp):
            return None
        config = self.config
        req = Request(environ)
        refuse_odd_shape(req, config, config.jsonp.callback_param if kind == "jsonp" else None)
        query = views.query_pairs(req, config.limits.max_query_params)
        if kind == "cors":
            origin = views.single_origin(req)
            if origin is not None and not origin_allowed(upstream.cors, origin):
                return None
            # No request id: a hit asks no upstream, and the id is this request's, not the shape's.
            forwarded = views.upstream_request(req, upstream, "GET", query, tuple(req.headers.items()),
                                               None, None)
            return _Shape(kind, upstream, forwarded, origin, None)
        params = views.jsonp_params_of(req, config)
        forwarded = views.upstream_request(
            req, upstream, "GET", jsonp_policy.forwarded_query(query, config.jsonp.callback_param),
            views.jsonp_request_headers(req), None, None)
        return _Shape(kind, upstream, forwarded, None, params)

    def _send(self, reply: _Reply, environ: dict[str, Any], start_response: StartResponse,
              started: float) -> Iterable[bytes]:
        start_response(status_line(reply.status), reply.headers)
        self.recorder.record(AccessRecord(
            method="GET", kind=reply.kind, upstream=reply.upstream, status=reply.status,
            cache=cache_outcome(reply.cache_status), duration=time.perf_counter() - started,
            request_id=reply.request_id, error=reply.error))
        return [reply.body]


class _Shape:
    """What the checks made of a request that passed them; the same for every request of its shape."""
    __slots__ = ("kind", "upstream", "forwarded", "origin", "params")

    def __init__(self, kind: str, upstream: UpstreamConfig, forwarded: UpstreamRequest,
                 origin: str | None, params: jsonp_policy.JsonpParams | None) -> None:
        self.kind, self.upstream, self.forwarded = kind, upstream, forwarded
        self.origin, self.params = origin, params  # params: None on the CORS path


class _Reply:
    __slots__ = ("kind", "upstream", "status", "headers", "body", "request_id", "error", "cache_status")

    def __init__(self, kind: str, upstream: str, status: int, headers: list[tuple[str, str]],
                 body: bytes, request_id: str, error: str, cache_status: str | None) -> None:
        self.kind, self.upstream, self.status, self.headers = kind, upstream, status, headers
        self.body, self.request_id, self.error, self.cache_status = body, request_id, error, cache_status


def install(app: Flask) -> HitPath:
    """Put the hit path in front of the app's WSGI stack (inside ProxyFix, which create_app adds last,
    so a rate limit counted here is counted for the client's address)."""
    hit_path = HitPath(app, app.wsgi_app)
    app.wsgi_app = hit_path  # type: ignore[method-assign]
    app.extensions["bridge.hit_path"] = hit_path
    return hit_path
