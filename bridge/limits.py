"""The edge of the Flask routes (``/apis``, ``/explain``, ``/metrics``, ...), and whose address counts.

The proxy road takes these steps itself; for the routes Flask serves, ``install_edge`` runs the same
request-shape check (``proxy.request.shape_problem``) and charges the same rate budget
(``ratelimit.RateBudget``) before any view, ``/healthz`` exempt (load balancers probe it; it costs
nothing). ``trust_proxies`` is werkzeug's ProxyFix with ``x_for=N`` and nothing else, around the whole
bridge: the client address is the socket's, or the X-Forwarded-For entry written by the nearest of
``[server] trusted_proxies`` proxies, and a forwarded Host or Proto never changes which upstream is
asked or what another client is sent. This module decides nothing about CORS or JSONP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Config
from .proxy.request import ProxyRequest, shape_problem
from .ratelimit import RateBudget

EXEMPT_ENDPOINTS = frozenset({"core.healthz"})
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def install_edge(app: Flask, config: Config, budget: RateBudget) -> None:
    """Refuse odd requests, then charge the client's budget, before every Flask view."""

    @app.before_request
    def check_shape() -> None:
        problem = shape_problem(ProxyRequest.read(request.environ, "other"), config.limits.max_url_length)
        if problem is not None:
            raise problem

    @app.before_request
    def charge_budget() -> None:
        if request.endpoint is not None and request.endpoint not in EXEMPT_ENDPOINTS:
            budget.charge(request.remote_addr or "unknown")


def trust_proxies(wsgi_app: WsgiApp, config: Config) -> WsgiApp:
    """The client address behind ``[server] trusted_proxies`` proxies, for the whole bridge: only
    X-Forwarded-For, and only as many hops as there are proxies we run. Host, Proto, Port and Prefix
    stay what the socket says."""
    if not config.server.trusted_proxies:
        return wsgi_app
    return ProxyFix(wsgi_app, x_for=config.server.trusted_proxies,
                    x_proto=0, x_host=0, x_port=0, x_prefix=0)
