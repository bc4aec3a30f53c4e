"""Profile the bridge's own per-request work on a cache hit, in process, without sockets or gunicorn.

``python bench/profile_hit.py [--path /cors/hit/data.json] [--n 20000] [--html out.html]`` builds the app
from a bench-like config against a real upstream (a tiny loopback HTTP server), warms the cache with
one request and then calls the WSGI app directly ``n`` times under pyinstrument, printing the profile
and the microseconds per request next to the bare Flask floor's. When the gateway has no cache yet,
every call is a miss and the profile says so.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.floor import create_floor_app, create_raw_floor  # noqa: E402
from bench.run import ORIGIN, payload, shipped_ini  # noqa: E402
from bridge import create_app  # noqa: E402
from bridge.config import parse_config  # noqa: E402


def serve_payload() -> str:
    body = payload()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes: without this, Nagle and delayed ACKs add 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def per_request(app, path: str, n: int) -> float:  # type: ignore[no-untyped-def]
    environ = EnvironBuilder(path=path, headers={"Origin": ORIGIN}).get_environ()

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    started = time.perf_counter()
    for _ in range(n):
        for _chunk in app(dict(environ), start_response):
            pass
    return (time.perf_counter() - started) / n * 1e6


def first_status(app, path: str) -> str:  # type: ignore[no-untyped-def]
    environ = EnvironBuilder(path=path, headers={"Origin": ORIGIN}).get_environ()
    seen: list[str] = []
    for _chunk in app(environ, lambda status, headers: seen.append(status)):
        pass
    return seen[0]


def road_in_flask(app):  # type: ignore[no-untyped-def]
    """The road as the view of a Flask route: Flask's dispatch (request context, routing, hooks,
    ``Response``) in front of the same pipeline."""
    from flask import Flask, Response, request

    road = app.extensions["bridge.road"]
    shell = Flask("road-in-flask")

    @shell.route("/<kind>/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "OPTIONS"])
    def proxied(kind: str, rest: str) -> Response:
        started: list[object] = []
        body = b"".join(road(request.environ, lambda status, headers: started.extend((status, headers))))
        return Response(body, status=started[0], headers=started[1])

    return shell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/cors/hit/data.json")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--html", help="also write pyinstrument's HTML here")
    parser.add_argument("--timing-only", action="store_true",
                        help="no profile: the best of 5 timed runs of each, bridge and floor")
    parser.add_argument("--upstream", help="the upstream's url (such as nginx serving bench/run.py's "
                        "payload); by default a loopback Python server, whose cost is then profiled too")
    parser.add_argument("--in-flask", action="store_true",
                        help="dispatch the road from a Flask view instead of mounting it in front of "
                             "Flask (the other way create_app could wire it), to compare")
    args = parser.parse_args()
    from pyinstrument import Profiler

    url = args.upstream or serve_payload()
    # The shipped sections, as make bench reads them (bench/run.py's shipped_ini), the bench origin
    # allowed, and the two upstreams.
    shipped = shipped_ini()
    shipped["cors"]["allow_origins"] = ORIGIN
    keep = os.environ.get("PROFILE_KEEP_LIMITS")
    shipped["limits"]["per_client"] = "" if not keep else (
        "100000000/minute" if keep == "high" else shipped["limits"].get("per_client", ""))
    shipped["upstream:hit"] = {"url": url, "allow_private": "true"}
    shipped["upstream:miss"] = {"url": url, "allow_private": "true", "ttl": "0"}
    text = io.StringIO()
    shipped.write(text)
    ini = text.getvalue()
    app = create_app(parse_config(ini, source="profile.ini", env={}))
    if args.in_flask:
        app = road_in_flask(app)
    # The access line is still formatted and written (its cost is part of a hit), just not to the tty.
    for handler in logging.getLogger("bridge.access").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    floor = create_floor_app(payload())
    raw = create_raw_floor(payload())
    per_request(app, args.path, 100)
    per_request(floor, "/jsonp", 100)
    status = first_status(app, args.path)
    if status != "200 OK":  # a refusal would be timed instead of a hit
        raise SystemExit(f"profile_hit: {args.path} answered {status}, not a 200 hit")
    if args.timing_only:  # the best of several runs: the machine is shared, noise only adds time
        bridge_best = min(per_request(app, args.path, args.n) for _ in range(5))
        floor_best = min(per_request(floor, "/jsonp", args.n) for _ in range(5))
        raw_best = min(per_request(raw, "/jsonp", args.n) for _ in range(5))
        print(json.dumps({"path": args.path, "bridge_us_per_request": round(bridge_best, 1),
                          "floor_us_per_request": round(floor_best, 1),
                          "raw_floor_us_per_request": round(raw_best, 1)}))
        return
    profiler = Profiler(interval=0.0002)
    with profiler:
        bridge_us = per_request(app, args.path, args.n)
    floor_us = per_request(floor, "/jsonp", args.n)
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        Path(args.html).write_text(profiler.output_html())
    print(json.dumps({"path": args.path, "bridge_us_per_request_profiled": round(bridge_us, 1),
                      "bridge_us_per_request": round(per_request(app, args.path, args.n), 1),
                      "floor_us_per_request": round(floor_us, 1)}))


if __name__ == "__main__":
    main()
