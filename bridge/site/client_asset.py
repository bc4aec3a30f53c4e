"""The ES3 browser library (``legacy_client/legacy-client.js``), served at ``GET /legacy-client.js``.

The file is found and read once, when the app is created, so a running bridge serves exactly the
bytes it started with and never touches the disk per request; a bridge that cannot find it refuses
to start with one line saying where it looked. The library lives beside the package, not in it (it
is a browser file with its own checks), so it is looked for next to the checkout of this package,
then under the working directory (running from the repo root), then where a wheel's data files go.
This module does not build, minify or template the library: it is served as written.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from flask import Blueprint, Response, request

LIBRARY_NAME = "legacy-client.js"
LIBRARY_ROUTE = "/legacy-client.js"
# A page picks up a new library within five minutes, and revalidates cheaply by ETag after that.
LIBRARY_CACHE_CONTROL = "public, max-age=300"


class ClientAssetMissing(FileNotFoundError):
    """The library file is not where a checkout or an installed wheel puts it."""


def library_candidates() -> tuple[Path, ...]:
    return (
        Path(__file__).resolve().parents[2] / "legacy_client" / LIBRARY_NAME,  # a checkout
        Path.cwd() / "legacy_client" / LIBRARY_NAME,  # run from the repo root, package elsewhere
        Path(sys.prefix) / "share" / "jsonp-cors-bridge" / LIBRARY_NAME,  # pyproject data-files
    )


def read_library(candidates: tuple[Path, ...] | None = None) -> bytes:
    """The library's bytes from the first candidate path that holds it."""
    paths = library_candidates() if candidates is None else candidates
    for path in paths:
        if path.is_file():
            return path.read_bytes()
    raise ClientAssetMissing(f"{LIBRARY_NAME} not found; looked in: "
                             + ", ".join(str(p) for p in paths))


def client_asset_blueprint(source: bytes) -> Blueprint:
    """A blueprint answering ``GET /legacy-client.js`` with ``source``, conditional on its ETag."""
    blueprint = Blueprint("client_asset", __name__)
    etag = hashlib.sha256(source).hexdigest()[:32]

    @blueprint.get(LIBRARY_ROUTE)
    def legacy_client() -> Response:
        response = Response(source, content_type="text/javascript; charset=utf-8")
        response.headers["Cache-Control"] = LIBRARY_CACHE_CONTROL
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.set_etag(etag)
        response.make_conditional(request)  # 304 for a matching If-None-Match; HEAD too
        return response

    return blueprint
