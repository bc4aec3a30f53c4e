"""The routes Flask serves beside the proxy road: ``/healthz``, ``/apis``, and their refusals.

``/cors/`` and ``/jsonp/`` never reach Flask: the proxy road (``proxy/``) answers them in front of it.
What Flask refuses (a route that does not exist, a method a route lacks, a budget spent) is rendered
here in the bridge's JSON shape by ``errors.py``, and the refusal's code is left for the access record.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify

from ..config import Config
from ..errors import BridgeError, error_response
from ..ops.access import ERROR_CODE

core = Blueprint("core", __name__)


@core.get("/healthz")
def healthz() -> Response:
    # What is unreachable is reported, not judged: a bridge whose Redis is down still serves.
    return jsonify(current_app.extensions["bridge.health"].report())


@core.get("/apis")
def apis() -> Response:
    config: Config = current_app.extensions["bridge.config"]
    upstreams = config.upstreams.values()
    return jsonify(apis=[u.public_view() for u in sorted(upstreams, key=lambda u: u.name)])


def render_error(error: BridgeError) -> Response:
    g.setdefault(ERROR_CODE, error.code)
    return error_response(error)


def render_http_error(error: Any) -> Response:
    """Werkzeug's own refusals (404 for unknown paths, 405, 413) in the bridge's JSON shape."""
    refusal = BridgeError(error.description or error.name, code=error.name.lower().replace(" ", "_"),
                          status=error.code)
    if error.code == 405 and getattr(error, "valid_methods", None):
        refusal.headers = (("Allow", ", ".join(error.valid_methods)),)
    return render_error(refusal)
