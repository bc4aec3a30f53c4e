"""The upstream client's pooled connections: kept alive within a process, never shared across a fork,
and a safe request raced by the upstream closing its idle connection sent once more."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
from flask import Flask

from bridge import create_app
from bridge.config import parse_config
from tests.conftest import config_text
from tests.forking import in_forked_child
from tests.upstream_server import Reply, UpstreamServer


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_does_not_share_the_parents_pooled_connections(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    """gunicorn preloads the app in its master and forks workers: a pool made before the fork must
    not hand the child the parent's socket (two processes on one connection corrupt both)."""
    upstream.route("/p", Reply(200, {"p": 1}))
    app = make_app(upstream_extra="ttl = 0")
    client = app.test_client()
    assert client.get("/cors/api/p").status_code == 200  # the parent now holds a pooled connection
    assert in_forked_child(lambda: str(client.get("/cors/api/p").status_code).encode()) == b"200"
    assert client.get("/cors/api/p").status_code == 200
    ports = [s.client_port for s in upstream.seen if s.path == "/p"]
    assert len(ports) == 3 and ports[0] == ports[2] != ports[1]  # the child used a connection of its own


class IdleCloser:
    """Answers the first request on each connection and keeps the connection; the next request on
    it is read and the connection closed unanswered: an upstream closing an idle kept-alive
    connection just as the bridge reuses it (the race RFC 9112 section 9.3.1 describes)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []  # each request line, as it arrived
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        self.requests.append(data.split(b"\r\n", 1)[0])
        return True

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            if self._request(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}")
                self._request(conn)  # and then close without a word

    def close(self) -> None:
        self._listener.close()


def test_a_kept_alive_connection_closed_under_a_safe_request_is_retried_once_on_a_new_one() -> None:
    server = IdleCloser()
    try:
        config = parse_config(config_text(server.url, upstream_extra="ttl = 0"), source="test.ini",
                              env={})
        client = create_app(config).test_client()
        assert client.get("/cors/api/a").status_code == 200
        retried = client.get("/cors/api/b")  # on the kept connection, closed unanswered: again
        assert retried.status_code == 200, retried.get_data(as_text=True)
        assert server.requests == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /b HTTP/1.1"]
        assert server.connections == 2
        refused = client.post("/cors/api/c", data=b"{}", content_type="application/json")
        assert refused.status_code == 502  # a POST may have been acted on: never sent twice
        assert refused.get_json()["error"] == "upstream_error"
        assert server.requests[3:] == [b"POST /c HTTP/1.1"]
    finally:
        server.close()
