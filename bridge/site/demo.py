"""The demo upstream that ``make run`` starts beside the bridge: a small JSON API, fully offline.

It runs as its own process (``python -m bridge.demo --bind 127.0.0.1:8001``), never inside the
bridge's workers, so no bridge worker ever waits on a request to its own pool. It shows the cases the
comparison page walks through: a list and its items, a 404, a slow answer, a header the bridge adds
server-side, and text that needs script-safe escaping.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from flask import Flask, Response, jsonify, request

ITEMS = {
    "1": {"id": 1, "name": "Ada Lovelace", "born": 1815, "tags": ["math", "engines"]},
    "2": {"id": 2, "name": "Grace Hopper", "born": 1906, "tags": ["compilers", "cobol"]},
    "3": {"id": 3, "name": "Tim Berners-Lee", "born": 1955, "tags": ["web", "http"]},
}


def create_demo_app() -> Flask:
    app = Flask("bridge.demo")
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.get("/")
    def index() -> Response:
        return jsonify(
            name="demo",
            description="The bridge's demo upstream: a small JSON API on loopback.",
            endpoints=["/items", "/items/<id>", "/slow?seconds=N", "/status/<code>",
                       "/whoami", "/tricky"],
        )

    @app.get("/items")
    def items() -> Response:
        response = jsonify(items=list(ITEMS.values()), count=len(ITEMS))
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    @app.get("/items/<item_id>")
    def item(item_id: str) -> Response | tuple[Response, int]:
        if item_id not in ITEMS:
            return jsonify(error="not_found", message=f"no item {item_id}"), 404
        return jsonify(ITEMS[item_id])

    @app.route("/items/<item_id>", methods=["PUT", "POST", "DELETE"])
    def change_item(item_id: str) -> Response:
        return jsonify(method=request.method, id=item_id, received=request.get_json(silent=True))

    @app.get("/slow")
    def slow() -> Response:
        seconds = min(float(request.args.get("seconds", "2") or 2), 30.0)
        time.sleep(seconds)
        return jsonify(slept=seconds)

    @app.get("/status/<int:code>")
    def status(code: int) -> tuple[Response, int]:
        code = code if 200 <= code <= 599 else 400
        return jsonify(status=code), code

    @app.get("/whoami")
    def whoami() -> Response:
        # The bridge adds X-Api-Key server-side; the browser never sees it, only that it arrived.
        return jsonify(api_key_present=bool(request.headers.get("X-Api-Key")),
                       cookie_present="Cookie" in request.headers,
                       authorization_present="Authorization" in request.headers)

    @app.get("/tricky")
    def tricky() -> Response:
        body = ('{"html": "</script><script>alert(1)</script>", "separators": "a\u2028b\u2029c", '
                '"big": 12345678901234567890123, "exact": 1.10, "amp": "a & b"}')
        return Response(body, mimetype="application/json")

    return app


def wait_listening(host: str, port: int, seconds: float) -> bool:
    """True once something accepts TCP connections on host:port, False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the bridge's demo upstream")
    parser.add_argument("--bind", default="127.0.0.1:8001")
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="do not serve: wait until the demo listens on --bind, then exit "
                             "(make run uses it so the bridge never starts before its upstream)")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    if args.wait is not None:
        if not wait_listening(host, int(port), args.wait):
            sys.exit(f"bridge.demo: nothing listens on {args.bind} after {args.wait:g}s")
        return
    from werkzeug.serving import run_simple

    run_simple(host, int(port), create_demo_app(), threaded=True)


if __name__ == "__main__":
    main()
