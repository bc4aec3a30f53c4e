"""The edge of the routes Flask serves (``/apis``, ``/explain``, ``/metrics``, ...): shape, then budget.

The proxy road takes these steps itself; for the routes Flask serves, ``install_edge`` runs the same
request-shape check (``proxy.request.shape_problem``) and charges the same rate budget
(``ops.ratelimit.RateBudget``) before any view, ``/healthz`` exempt (load balancers probe it; it costs
nothing). This module decides nothing about CORS or JSONP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from ..config import Config
from ..ops.ratelimit import RateBudget
from ..proxy.request import ProxyRequest, shape_problem

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
