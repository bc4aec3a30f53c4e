"""Upstream faults: each is a clear JSON error, no request hangs past its deadline, nothing is poisoned.

After every fault the same url is asked again of a healthy upstream: the answer must be the healthy
one (no half-read connection reused from the pool, no broken answer kept anywhere).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from tests.upstream_server import Reply, UpstreamServer

GOOD = {"healthy": True, "text": "x" * 100}
FAULTS = [
    pytest.param(Reply(200, GOOD, reset_after=20), "cors", 502, "upstream_error", id="reset-mid-body"),
    pytest.param(Reply(200, GOOD, reset_after=0), "cors", 502, "upstream_error", id="reset-at-body"),
    pytest.param(Reply(200, GOOD, lie_length=5000), "cors", 502, "upstream_error",
                 id="content-length-too-long"),
    pytest.param(Reply(200, b'{"a": [1, 2'), "jsonp", 502, "upstream_invalid_json",
                 id="truncated-json"),
    pytest.param(Reply(200, b"<html>oops</html>"), "jsonp", 502, "upstream_invalid_json",
                 id="html-not-json"),
    pytest.param(Reply(200, b'{"a": NaN}'), "jsonp", 502, "upstream_invalid_json", id="nan"),
    pytest.param(Reply(200, b'{"a": "\xff"}'), "jsonp", 502, "upstream_invalid_json", id="not-utf8"),
    pytest.param(Reply(200, b'{"a": 1} {"b": 2}'), "jsonp", 502, "upstream_invalid_json",
                 id="two-documents"),
    pytest.param(Reply(200, GOOD, reset_after=20), "jsonp", 502, "upstream_error",
                 id="jsonp-reset-mid-body"),
    pytest.param(Reply(200, GOOD, delay=1.5), "cors", 504, "upstream_timeout", id="slow-headers"),
    pytest.param(Reply(200, {"x": "y" * 400}, drip=0.01), "cors", 504, "upstream_timeout",
                 id="slow-drip"),
    pytest.param(Reply(200, {"x": "y" * 400}, drip=0.01), "jsonp", 504, "upstream_timeout",
                 id="jsonp-slow-drip"),
]


def quick_app(make_app: Callable[..., Flask], upstream: UpstreamServer) -> Flask:
    """The app with an upstream ``quick`` whose total deadline is half a second."""
    return make_app(f"[upstream:quick]\nurl = {upstream.url}\ntimeout = 0.5\n")


@pytest.mark.parametrize(("reply", "kind", "status", "code"), FAULTS)
def test_a_fault_is_a_clear_error_and_poisons_nothing(
        make_app: Callable[..., Flask], upstream: UpstreamServer, reply: Reply, kind: str,
        status: int, code: str) -> None:
    client = quick_app(make_app, upstream).test_client()
    url = "/cors/quick/f" if kind == "cors" else "/jsonp/quick/f?callback=cb"
    broken = {"on": True}
    upstream.route("/f", lambda seen: reply if broken["on"] else Reply(200, GOOD))
    started = time.monotonic()
    response = client.get(url)
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == code and body["message"]
    assert response.headers["Cache-Control"] == "no-store"
    # The total deadline (0.5 s) holds whatever pace the upstream keeps; generous slack for load.
    assert elapsed < 4
    broken["on"] = False
    again = client.get(url)
    if code == "upstream_invalid_json":
        # The upstream did answer, completely: the cache may keep that answer as sent, and the
        # JSONP path then refuses it the same way. What is never stored is the bridge's own 502.
        assert again.status_code in (200, 502)
        if again.status_code == 502:
            assert again.get_json()["error"] == "upstream_invalid_json"
        cors = client.get("/cors/quick/f", headers={"Accept": "application/json"})
        assert cors.status_code == 200
        assert cors.data in (reply.encoded(), Reply(200, GOOD).encoded())
        return
    # A broken exchange (reset, short body, deadline) stored nothing: the next answer is healthy.
    assert again.status_code == 200
    if kind == "cors":
        assert again.get_json() == GOOD
    else:
        assert again.data.startswith(b"/**/cb({")


def test_the_deadline_is_total_not_per_read(make_app: Callable[..., Flask],
                                            upstream: UpstreamServer) -> None:
    """A drip far slower in total than the deadline, but quick per byte, is cut at the deadline."""
    upstream.route("/drip", Reply(200, {"x": "y" * 3000}, drip=0.005))  # ~15 s if read to the end
    client = quick_app(make_app, upstream).test_client()
    started = time.monotonic()
    response = client.get("/cors/quick/drip")
    assert response.status_code == 504
    assert time.monotonic() - started < 4  # 0.5 s deadline; 15 s if it were per read


@pytest.fixture
def plain_port() -> Iterator[int]:
    """A port that answers plain HTTP garbage to anything, TLS handshakes included."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    listener.close()


def test_tls_to_a_plain_http_port_is_a_clear_502(make_config: Callable[..., object],
                                                 plain_port: int) -> None:
    from bridge import create_app
    from bridge.config import parse_config

    config = parse_config(f"[upstream:tls]\nurl = https://127.0.0.1:{plain_port}/\ntimeout = 2\n",
                          env={})
    client = create_app(config).test_client()
    response = client.get("/cors/tls/")
    assert response.status_code == 502
    body = response.get_json()
    assert body["error"] == "upstream_unreachable" and "TLS" in body["message"]


def test_a_closed_port_is_a_clear_502() -> None:
    from bridge import create_app
    from bridge.config import parse_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        config = parse_config(f"[upstream:down]\nurl = http://127.0.0.1:{port}/\n", env={})
        response = create_app(config).test_client().get("/cors/down/")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_unreachable"


def test_faults_do_not_leak_into_concurrent_healthy_requests(make_app: Callable[..., Flask],
                                                             upstream: UpstreamServer) -> None:
    """Threads share the app; a resetting route must not break a healthy one on pooled sockets."""
    upstream.route("/bad", Reply(200, GOOD, reset_after=10))
    upstream.route("/good", Reply(200, GOOD))
    app = make_app()
    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = app.test_client()
        for round_ in range(10):
            path = "/bad" if (index + round_) % 3 == 0 else "/good"
            status = client.get(f"/cors/api{path}").status_code
            with lock:
                results.append((path, status))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 80
    assert {status for path, status in results if path == "/good"} == {200}
    assert {status for path, status in results if path == "/bad"} == {502}


@pytest.fixture
def header_dripper() -> Iterator[int]:
    """A port whose server sends its status line and headers one byte at a time, for ~4 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100 + b"\r\nContent-Length: 2\r\n\r\n{}"

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            for index in range(len(answer)):
                if stop.is_set():
                    return
                try:
                    conn.sendall(answer[index:index + 1])
                except OSError:
                    return  # the bridge hung up: what the test wants
                time.sleep(0.03)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("kind", ["cors", "jsonp"])
def test_headers_dripped_slowly_hit_the_total_deadline(header_dripper: int, kind: str) -> None:
    """Each byte comes well within the read timeout; the whole answer would take about 4 s."""
    from bridge import create_app
    from bridge.config import parse_config

    config = parse_config(f"[upstream:drip]\nurl = http://127.0.0.1:{header_dripper}/\n"
                          "timeout = 0.5\n", env={})
    client = create_app(config).test_client()
    started = time.monotonic()
    response = client.get("/cors/drip/" if kind == "cors" else "/jsonp/drip/?callback=cb")
    assert response.status_code == 504
    assert response.get_json()["error"] == "upstream_timeout"
    assert time.monotonic() - started < 3  # 0.5 s deadline; about 4 s if it were per read
