"""jsonp-cors-bridge: configured upstream JSON APIs for any browser, over CORS and JSONP.

``create_app`` wires the pieces together and does nothing else: the config is read by the caller
(``app.py``, the tests) and handed in as a typed ``Config``; nothing is read at import time. The
packages are the layers, each importing only those below it: ``policy`` (pure rules), ``config``,
``upstream`` (the client and its transport), ``cache``, ``ops`` (access log, metrics, budgets,
health), ``proxy`` (the one road for ``/cors/`` and ``/jsonp/``) and ``site`` (the routes Flask serves).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .cache import Cache
from .config import Config
from .errors import BridgeError
from .ops import access
from .ops.health import Health
from .ops.ratelimit import RateBudget
from .proxy import ProxyRoad, mount
from .proxy.gateway import Gateway
from .site import views
from .site.admin import purge_blueprint
from .site.client_asset import client_asset_blueprint, read_library
from .site.edge import install_edge
from .site.explain import explain
from .upstream.client import UpstreamClient
from .upstream.netguard import Resolver


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

    # Imported here, not at the top: prometheus-client picks its multiprocess mode when first
    # imported, and app.py sets PROMETHEUS_MULTIPROC_DIR after importing this package.
    from .ops import metrics

    recorder = access.install(app)
    metrics.install(app)
    install_edge(app, config, budget)
    app.register_error_handler(BridgeError, views.render_error)
    app.register_error_handler(HTTPException, views.render_http_error)
    app.register_blueprint(views.core)
    app.register_blueprint(client_asset_blueprint(read_library()))
    app.register_blueprint(explain)
    if config.admin.token:
        app.register_blueprint(purge_blueprint(config.admin.token))

    road = ProxyRoad(config, gateway, budget, recorder)
    app.extensions["bridge.road"] = road
    wsgi = mount(road, app.wsgi_app)
    if config.server.trusted_proxies:
        # The client address for the whole bridge, road included: only X-Forwarded-For, and only as
        # many hops as there are proxies we run. Host, Proto, Port and Prefix stay the socket's.
        wsgi = ProxyFix(wsgi, x_for=config.server.trusted_proxies, x_proto=0, x_host=0, x_port=0,
                        x_prefix=0)
    app.wsgi_app = wsgi  # type: ignore[method-assign,assignment]
    return app
