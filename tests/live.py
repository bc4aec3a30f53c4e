"""Serve a WSGI app on a real loopback port in a background thread, for browsers and subprocesses."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import make_server


class LiveServer:
    """A threaded werkzeug server on 127.0.0.1 and an ephemeral port; ``url`` ends without a slash."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1") -> None:
        self.server = make_server(host, 0, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RequestLog:
    """A WSGI app in front of another, noting the method and url of every request it passes on: what
    a page asked of a server, seen from the server (only Playwright's browser reports its network)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.base = ""  # the server's url, once it listens
        self.seen: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ["PATH_INFO"]
        self.seen.append((environ["REQUEST_METHOD"], self.base + target))
        return self.app(environ, start_response)

    def urls(self) -> list[str]:
        """The urls requested, preflights left out (as a browser's network log lists them)."""
        return [url for method, url in self.seen if method != "OPTIONS"]

    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]

    def serve(self) -> LiveServer:
        server = LiveServer(self).start()
        self.base = server.url
        return server
