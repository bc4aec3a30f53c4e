"""The proxy road: every request to ``/cors/`` and ``/jsonp/``, from the request to the answer.

``road.py`` is the pipeline, read top to bottom; ``request.py`` reads a request from the environ;
``forward.py`` builds what goes upstream (the cache key is taken from it); ``render.py`` shapes what
comes back, or the refusal, for the path it was made on. ``mount`` puts the road in front of the
Flask app, which keeps every other route. Policy lives in ``cors.py`` and ``jsonp.py``, answers in
``gateway.py``; nothing here decides what those decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .road import ProxyRoad

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
PREFIXES = ("/cors/", "/jsonp/")


def mount(road: ProxyRoad, app: WsgiApp) -> WsgiApp:
    """A WSGI application that hands ``/cors/...`` and ``/jsonp/...`` to ``road`` and everything
    else to ``app``; it reads the path and changes nothing in the environ."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(PREFIXES):
            return road(environ, start_response)
        return app(environ, start_response)

    return dispatch


__all__ = ["ProxyRoad", "mount"]
