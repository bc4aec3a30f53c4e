"""jsonp-cors-bridge: configured upstream JSON APIs for any browser, over CORS and JSONP.

``create_app`` wires the pieces together and does nothing else: the config is read by the caller
(``app.py``, the tests) and handed in as a typed ``Config``; nothing is read at import time.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from .client_asset import client_asset_blueprint, read_library
from .config import Config
from .errors import BridgeError
from .gateway import Gateway
from .upstream import UpstreamClient


def create_app(config: Config) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bridge.config"] = config
    app.extensions["bridge.gateway"] = Gateway(UpstreamClient(config.limits))

    from . import views

    app.register_error_handler(BridgeError, views.render_error)
    app.register_error_handler(HTTPException, views.render_http_error)
    app.register_blueprint(views.core)
    app.register_blueprint(views.cors)
    app.register_blueprint(views.jsonp)
    app.register_blueprint(client_asset_blueprint(read_library()))

    from .explain_view import explain

    app.register_blueprint(explain)
    return app
