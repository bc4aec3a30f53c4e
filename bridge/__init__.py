"""jsonp-cors-bridge: configured upstream JSON APIs for any browser, over CORS and JSONP.

``create_app`` wires the pieces together and does nothing else: the config is read by the caller
(``app.py``, the tests) and handed in as a typed ``Config``; nothing is read at import time.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from .cache import Cache
from .client_asset import client_asset_blueprint, read_library
from .config import Config
from .errors import BridgeError
from .gateway import Gateway
from .health import Health
from .limits import install_edge, trust_proxies
from .netguard import Resolver
from .proxy import ProxyRoad, mount
from .ratelimit import RateBudget
from .upstream import UpstreamClient


def create_app(config: Config, *, cache: Cache | None = None,
               resolver: Resolver | None = None) -> Flask:
    """The app for ``config``; tests may hand in a ``cache`` built with their own clock, and a
    ``resolver`` that replaces the system's DNS for upstream names. ``/cors/`` and ``/jsonp/`` are
    the proxy road's, mounted in front of Flask; Flask keeps every other route."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.merge_slashes = False  # '//' is refused by the shape check, never merged
    app.extensions["bridge.config"] = config
    cache = cache if cache is not None else Cache.from_config(config)
    app.extensions["bridge.cache"] = cache
    gateway = Gateway(UpstreamClient(config.limits, resolver), cache)
    app.extensions["bridge.gateway"] = gateway
    app.extensions["bridge.health"] = Health(config.upstreams, cache.health, resolver=resolver)
    budget = RateBudget(config)
    app.extensions["bridge.budget"] = budget

    from . import metrics, observe, views

    recorder = observe.install(app)
    metrics.install(app)
    install_edge(app, config, budget)

    app.register_error_handler(BridgeError, views.render_error)
    app.register_error_handler(HTTPException, views.render_http_error)
    app.register_blueprint(views.core)
    app.register_blueprint(client_asset_blueprint(read_library()))

    from .explain_view import explain

    app.register_blueprint(explain)
    road = ProxyRoad(config, gateway, budget, recorder)
    app.extensions["bridge.road"] = road
    app.wsgi_app = trust_proxies(mount(road, app.wsgi_app), config)  # type: ignore[method-assign,assignment]
    return app
