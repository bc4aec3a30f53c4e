"""jsonp-cors-bridge: configured upstream JSON APIs for any browser, over CORS and JSONP.

``create_app`` wires the pieces together and does nothing else: the config is read by the caller
(``app.py``, the tests) and handed in as a typed ``Config``; nothing is read at import time.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from .cache import Cache
from .client_asset import client_asset_blueprint, read_library
from .config import Config
from .errors import BridgeError
from .gateway import Gateway
from .health import Health
from .limits import install_limits, trust_proxies
from .netguard import Resolver
from .upstream import UpstreamClient


class RestConverter(PathConverter):
    """Everything after ``/KIND/NAME/``, leading slash included, so the path checks see it all."""

    regex = ".*"
    part_isolating = False  # werkzeug infers True from a regex without '/'


def create_app(config: Config, *, cache: Cache | None = None,
               resolver: Resolver | None = None, hit_path: bool = True) -> Flask:
    """The app for ``config``; tests may hand in a ``cache`` built with their own clock, and a
    ``resolver`` that replaces the system's DNS for upstream names. ``hit_path=False`` leaves plain
    GETs to the views too (hitpath.py answers them in front of Flask otherwise)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # '//' in a path is refused by the path checks, not quietly merged and redirected by routing.
    app.url_map.merge_slashes = False
    app.url_map.converters["rest"] = RestConverter
    app.extensions["bridge.config"] = config
    cache = cache if cache is not None else Cache.from_config(config)
    app.extensions["bridge.cache"] = cache
    app.extensions["bridge.gateway"] = Gateway(UpstreamClient(config.limits, resolver), cache)
    app.extensions["bridge.health"] = Health(config.upstreams, cache.health, resolver=resolver)

    from . import metrics, observe, views

    observe.install(app)
    metrics.install(app)

    app.register_error_handler(BridgeError, views.render_error)
    app.register_error_handler(HTTPException, views.render_http_error)
    app.register_blueprint(views.core)
    app.register_blueprint(views.cors)
    app.register_blueprint(views.jsonp)
    install_limits(app, config)
    app.register_blueprint(client_asset_blueprint(read_library()))

    from .explain_view import explain

    app.register_blueprint(explain)
    if hit_path:
        from . import hitpath

        hitpath.install(app)
    trust_proxies(app, config)  # last: the whole stack, hit path included, sees the client's address
    return app
