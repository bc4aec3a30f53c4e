"""Abuse limits at the edge: who the client is, how often it may ask, and how big a request may be.

``install_limits`` wires three things into the app, before any view runs:

* the client address: the socket's, or the X-Forwarded-For entry written by the nearest of
  ``[server] trusted_proxies`` proxies (werkzeug's ProxyFix with ``x_for=N`` and nothing else: a
  forwarded Host or Proto never changes which upstream is asked or what another client is sent);
* per-client rate limits with flask-limiter: ``[limits] per_client`` over the whole bridge, and an
  upstream's own ``per_client`` shared by its CORS and JSONP paths. The budget lives in memory, or in
  the Redis named by ``[cache] backend`` so several instances share it; when that Redis is down each
  instance falls back to its own in-memory budget (logged) rather than failing requests or letting
  everything through;
* the shape of the request: URL length (414), header count and size (431), control characters in
  the path, header values and query parameters, and empty path segments (400).

A refusal is raised as a ``BridgeError`` through Flask's own exception handling, so the CORS path still
grants allowed origins and the JSONP path still answers with an envelope. This module does not parse
CORS or JSONP and never looks at the upstream's answer.
"""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request

from .config import Config
from .errors import BadRequest, HeadersTooLarge, InvalidPath, RateLimited, UriTooLong

# Browsers send a few dozen headers of a few KiB at most; gunicorn's own limits (app.py) sit above these
# so that what reaches the app is refused in the bridge's JSON shape.
MAX_HEADER_COUNT = 64
MAX_HEADER_BYTES = 16 * 1024
# C0 controls and DEL: CR/LF split headers and logs, NUL truncates strings in C code downstream.
_CONTROL = frozenset(chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F))
EXEMPT_ENDPOINTS = frozenset({"core.healthz"})  # load balancers probe this; it costs nothing
# The WSGI environ key the hit path sets once it has counted a request against its budgets
# (``within_budget``): if it then leaves the request to the views, they do not count it again.
COUNTED = "bridge.counted"


def storage_uri(config: Config) -> str:
    """Where the budget lives: the cache's Redis when there is one, else this process's memory."""
    backend = config.cache.backend
    if backend.startswith(("redis://", "rediss://")):
        return backend
    if backend.startswith("unix://"):
        return "redis+unix://" + backend[len("unix://"):]
    return "memory://"


def client_address() -> str:
    """The address the budget is kept for: the socket's, or the trusted proxies' (see ProxyFix)."""
    return request.remote_addr or "unknown"


def _upstream_name() -> str | None:
    return (request.view_args or {}).get("name") if request.blueprint in ("cors", "jsonp") else None


def _upstream_limit() -> str:
    config: Config = current_app.extensions["bridge.config"]
    upstream = config.upstreams.get(_upstream_name() or "")
    # The fallback is never applied (_no_upstream_limit exempts those requests); it only parses.
    return upstream.per_client if upstream is not None and upstream.per_client else "1/second"


def _no_upstream_limit() -> bool:
    config: Config = current_app.extensions["bridge.config"]
    upstream = config.upstreams.get(_upstream_name() or "")
    return upstream is None or not upstream.per_client


def _client_and_upstream() -> str:
    return f"{client_address()}|{_upstream_name()}"


def _has_control(text: str) -> bool:
    return not _CONTROL.isdisjoint(text)


def refuse_odd_shape(req: Request, config: Config, callback_param: str | None) -> None:
    """Raise the refusal for a request too long or too odd to be a browser's; ``callback_param`` is
    the JSONP callback's name on the JSONP path (its grammar refuses it with a more precise message)."""
    environ = req.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    length = len(raw) if raw else len(req.full_path)
    if length > config.limits.max_url_length:
        raise UriTooLong(f"the url is {length} characters long; the limit is "
                         f"{config.limits.max_url_length}")
    headers = [(k, v) for k, v in environ.items() if k.startswith("HTTP_")]
    if len(headers) > MAX_HEADER_COUNT:
        raise HeadersTooLarge(f"more than {MAX_HEADER_COUNT} request headers")
    size = sum(len(k) + len(v) for k, v in headers)
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"the request headers are over {MAX_HEADER_BYTES} bytes")
    for key, value in headers:
        if _has_control(value):
            name = key[5:].replace("_", "-").title()
            raise BadRequest(f"the {name} header contains a control character")
    parts = urlsplit(raw) if raw else None
    path = parts.path if parts is not None else req.path
    # Checked here, before routing's own answers, for every path (not only /cors/ and /jsonp/):
    # routing would fail a decoded newline as a bare 404, or merge "//" and redirect.
    if "//" in path or "//" in req.path or _has_control(req.path):
        raise InvalidPath("the path has an empty segment ('//') or a control character")
    query = parts.query if parts is not None else environ.get("QUERY_STRING", "")
    if query and any(_has_control(k) or (_has_control(v) and k != callback_param)
                     for k, v in req.args.items(multi=True)):
        raise BadRequest("a query parameter contains a control character (such as %00, %0A or %0D)")


def check_request_shape() -> Response | None:
    """Refuse requests too long or too odd to be a browser's, before any other work is done."""
    config: Config = current_app.extensions["bridge.config"]
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not eight
    refuse_odd_shape(req, config, config.jsonp.callback_param if req.blueprint == "jsonp" else None)
    redirect = req.routing_exception
    if isinstance(redirect, RequestRedirect):
        # Werkzeug writes the Host header into an absolute Location ("/cors/api" -> "/cors/api/");
        # a relative one says the same and cannot be spoofed into pointing at another site.
        target = urlsplit(redirect.new_url)
        return Response(status=308, headers={"Location": urlunsplit(("", "", target.path,
                                                                      target.query, ""))})
    return None


def retry_after(limiter: Limiter) -> int:
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, int(current.reset_at - time.time()))  # reset_at is already rounded up


def trust_proxies(app: Flask, config: Config) -> None:
    """The client address behind ``[server] trusted_proxies`` proxies, for everything the app runs
    (the hit path included): create_app installs this last, so it wraps the whole WSGI stack."""
    if config.server.trusted_proxies:
        # Only X-Forwarded-For, and only as many hops as there are proxies we run: the entry the
        # nearest trusted proxy appended. Host, Proto, Port and Prefix stay what the socket says.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.server.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=0, x_host=0, x_port=0, x_prefix=0)


def within_budget(app: Flask, limiter: Limiter, environ: dict[str, Any]) -> bool:
    """Whether the request in ``environ`` is within its rate limits, counting it as the before-request
    hook would: flask-limiter's own check, run in a request context of this request (routing included,
    so per-upstream limits see their upstream). For the hit path, which answers before Flask's hooks."""
    with app.request_context(environ):
        try:
            limiter._check_request_limit()  # the hook flask-limiter registers with before_request
        except RateLimitExceeded:
            return False
    environ[COUNTED] = True
    return True


def install_limits(app: Flask, config: Config) -> Limiter:
    """Wire the request-shape checks and the rate limits into ``app`` (the client address:
    ``trust_proxies``)."""
    app.before_request(check_request_shape)  # before the limiter's hook: junk costs no budget

    limiter = Limiter(
        key_func=client_address,
        application_limits=[config.limits.per_client] if config.limits.per_client else [],
        storage_uri=storage_uri(config),
        # Keep the storage check cheap and never hang a request on a dead Redis.
        storage_options=cast(dict[str, Any], {"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
        if storage_uri(config) != "memory://" else {},
        strategy="fixed-window",
        headers_enabled=False,  # Retry-After is set on refusals below; no X-RateLimit-* noise
        in_memory_fallback_enabled=True,
        key_prefix="jsonp-cors-bridge",
        # With no limit configured anywhere the limiter stays out of the request path: its
        # per-request resolution of (empty) limits was a quarter of a JSONP cache hit in pyinstrument.
        enabled=bool(config.limits.per_client or any(u.per_client for u in config.upstreams.values())),
    )
    limiter.request_filter(lambda: request.endpoint in EXEMPT_ENDPOINTS or COUNTED in request.environ)
    limiter.init_app(app)
    if any(u.per_client for u in config.upstreams.values()):
        # Only when some upstream has a budget of its own: flask-limiter resolves a blueprint's
        # limits (and parses the callable's string) on every request, even for exempt ones.
        per_upstream = limiter.shared_limit(_upstream_limit, scope="upstream",
                                            key_func=_client_and_upstream,
                                            exempt_when=_no_upstream_limit, override_defaults=False)
        for blueprint in ("cors", "jsonp"):
            per_upstream(cast(Blueprint, app.blueprints[blueprint]))

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded) -> Response:
        """Re-raise the refusal as the bridge's own error, through the blueprint's handlers."""
        seconds = retry_after(limiter)
        refusal = RateLimited(f"too many requests from this client ({error.description}); "
                              f"try again in {seconds} s",
                              headers=(("Retry-After", str(seconds)),))
        return current_app.make_response(current_app.handle_user_exception(refusal))

    app.extensions["bridge.limiter"] = limiter
    return limiter
