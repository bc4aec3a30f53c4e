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
