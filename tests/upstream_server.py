"""A real HTTP upstream on loopback for the tests: routes, a request log, and fault injection.

Not a mock of requests: the bridge talks to it over TCP exactly as it talks to a production API.
Each route answers with a ``Reply`` (or a function of the ``Seen`` request returning one); a ``Reply``
can also misbehave on the wire (lie about its length, reset mid-body, drip slowly) for fault tests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lowercase names
    body: bytes
    raw_path: str
    client_port: int = 0  # the bridge's side of the TCP connection: equal ports, one pooled connection


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list | None = None
    headers: dict[str, str | None] = field(default_factory=dict)  # None leaves a header out
    delay: float = 0.0  # before the status line
    drip: float = 0.0  # seconds between single bytes of the body
    lie_length: int | None = None  # a Content-Length that is not the body's
    reset_after: int | None = None  # close the socket after this many body bytes

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


Route = Reply | Callable[[Seen], Reply]


class UpstreamServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle and delayed ACKs that costs
            # ~40 ms a request on loopback.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, parts.path, parse_qsl(parts.query, keep_blank_values=True),
                            {k.lower(): v for k, v in self.headers.items()}, body, self.path,
                            self.client_address[1])
                with server.lock:
                    server.seen.append(seen)
                route = server.routes.get(parts.path) or server.routes.get("*")
                if route is None:
                    reply = Reply(404, {"error": "no such route", "path": parts.path})
                else:
                    reply = route(seen) if callable(route) else route
                self.send(reply)

            def send(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.encoded()
                self.send_response_only(reply.status)  # Server and Date below, so a reply can set them
                headers: dict[str, str | None] = {"Server": self.version_string(),
                                                  "Date": self.date_time_string()}
                if reply.body is not None:
                    headers["Content-Type"] = "application/json"
                headers.update(reply.headers)
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                if "Content-Length" not in headers:
                    length = reply.lie_length if reply.lie_length is not None else len(payload)
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if reply.reset_after is not None:
                    self.wfile.write(payload[: reply.reset_after])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.drip:
                    for index in range(len(payload)):
                        self.wfile.write(payload[index:index + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip)
                    return
                self.wfile.write(payload)
                if reply.lie_length is not None:
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

            def __getattr__(self, name: str) -> object:  # an extension method, such as M-SEARCH
                if name.startswith("do_"):
                    return self.handle_any
                raise AttributeError(name)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the bridge hanging up on a slow or oversized answer is the point of a test

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> UpstreamServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.routes.clear()
            self.seen.clear()

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for s in self.seen if path is None or s.path == path)

    def last(self) -> Seen:
        with self.lock:
            return self.seen[-1]
