"""The floors: precomputed JSONP bytes answered by bare Flask, or by a raw WSGI callable, under the
bridge's gunicorn.

``python bench/floor.py --config BENCH_INI --bind H:P --body FILE [--raw]`` runs one of them with exactly
the gunicorn settings ``app.py`` derives from the same INI (worker class, workers, threads, keep-alive),
so the only difference from a bridge cache hit is the bridge's own work per request. The Flask floor is
what a framework costs; the raw floor (``--raw``: no framework at all, one ``start_response``) is the
server's own cost. Nothing here is part of the bridge; it exists only to be measured against.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flask import Flask, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import gunicorn_options  # noqa: E402
from bridge.config import load_or_exit  # noqa: E402


def create_floor_app(body: bytes) -> Flask:
    app = Flask("floor")
    script = b"/**/cb(" + body.strip() + b");"

    @app.get("/jsonp")
    def jsonp() -> Response:
        return Response(script, content_type="text/javascript; charset=utf-8")

    return app


def create_raw_floor(body: bytes) -> Any:
    script = b"/**/cb(" + body.strip() + b");"
    headers = [("Content-Type", "text/javascript; charset=utf-8"), ("Content-Length", str(len(script)))]

    def raw(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(headers))
        return [script]

    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--body", required=True, help="the JSON file the upstream serves")
    parser.add_argument("--raw", action="store_true", help="a raw WSGI callable instead of Flask")
    args = parser.parse_args()
    config = load_or_exit(args.config)
    body = Path(args.body).read_bytes()

    from gunicorn.app.base import BaseApplication

    class FloorServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(config, args.bind, None).items():
                if key != "child_exit":  # the floor keeps no metrics
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return create_raw_floor(body) if args.raw else create_floor_app(body)

    FloorServer().run()


if __name__ == "__main__":
    main()
