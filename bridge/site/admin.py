"""``POST /purge``: an operator drops cached answers by upstream, path, path prefix or tag.

The route exists only when ``[admin] token`` is set. ``Authorization: Bearer TOKEN`` is compared in
constant time; a missing or wrong token is 401 with ``WWW-Authenticate: Bearer`` (and, as every
Flask route, costs the client's rate budget: ``edge.py``). The body names one scope (``scope_of``):
``{"api": NAME}``, ``{"api": NAME, "path": P}`` (every query and variant of that path),
``{"api": NAME, "prefix": P}``, or ``{"tag": T}`` (optionally with ``api``); the answer is
``{"purged": N, "scope": ...}``. The cache does the rest (``Cache.purge``: every worker, and every
instance sharing a Redis).
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..cache import Cache, Scope
from ..config import Config
from ..errors import BadRequest, Unauthorized

SCOPES = ("path", "prefix", "tag")
EXAMPLE = ('{"api": "NAME"}, {"api": "NAME", "path": "items/1"}, {"api": "NAME", "prefix": "items/"} '
           'or {"tag": "T"}')


def scope_of(body: Any, config: Config) -> Scope:
    """The scope a purge body names, or BadRequest saying what to change."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object: {EXAMPLE}")
    unknown = sorted(set(body) - {"api", *SCOPES})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; a purge takes api with one of path, prefix "
                         f"or tag: {EXAMPLE}")
    for name, value in body.items():
        if not isinstance(value, str) or not value:
            raise BadRequest(f"{name!r} must be a non-empty string")
    given = [name for name in SCOPES if name in body]
    if len(given) > 1:
        raise BadRequest(f"give one of path, prefix or tag, not {' and '.join(given)}")
    api = body.get("api")
    if api is None and "tag" not in body:
        raise BadRequest(f"name what to purge: {EXAMPLE}")
    if api is not None and api not in config.upstreams:
        known = ", ".join(sorted(config.upstreams)) or "(none)"
        raise BadRequest(f"unknown api {api!r}; the configured upstreams are: {known}")
    # Paths are relative to the upstream's url, as the bridge forwards them: "/items" means "items".
    path = body["path"].lstrip("/") if "path" in body else None
    prefix = body["prefix"].lstrip("/") if "prefix" in body else None
    return Scope(api=api, path=path, prefix=prefix, tag=body.get("tag"))


def purge_blueprint(token: str) -> Blueprint:
    admin = Blueprint("admin", __name__)
    expected = token.encode()

    @admin.post("/purge")
    def purge() -> Response:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("purging needs Authorization: Bearer with the [admin] token")
        scope = scope_of(request.get_json(silent=True), current_app.extensions["bridge.config"])
        cache: Cache = current_app.extensions["bridge.cache"]
        purged = cache.purge(scope)
        cache.event("purged")
        return jsonify(purged=purged, scope=scope.described())

    return admin
