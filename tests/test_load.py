"""The bridge under gunicorn: hostile bytes on the wire, then load with faults and a killed worker.

One real gunicorn process (``python app.py --config F --bind 127.0.0.1:PORT``) per module, talking
to the session's loopback upstream. Everything is bounded: request counts, joins, waits.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ALLOWED
from tests.upstream_server import Reply, UpstreamServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def workers(self) -> list[int]:
        """The pids whose parent is the gunicorn master."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def rss_kib(self) -> int:
        total = 0
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
        return total


def config_ini(upstream_url: str) -> str:
    return f"""
[server]
workers = {WORKERS}
threads = 8

[cors]
allow_origins = {ALLOWED}
allow_headers = Content-Type

[limits]
per_client = 100000/minute
max_upstream_body = 4096

[upstream:api]
url = {upstream_url}
timeout = 20

; the faulting routes, with a short deadline; good traffic above has room for a loaded machine
[upstream:faulty]
url = {upstream_url}
timeout = 1

[upstream:tight]
url = {upstream_url}
per_client = 5/minute
"""


@pytest.fixture(scope="module")
def gunicorn(upstream_server: UpstreamServer, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Gunicorn]:
    directory = tmp_path_factory.mktemp("gunicorn")
    config = directory / "bridge.ini"
    config.write_text(config_ini(upstream_server.url))
    log = directory / "gunicorn.log"
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "app.py", "--config", str(config),
                                    "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT)
    server = Gunicorn(process, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, "/healthz")[0] == 200 and len(server.workers()) == WORKERS:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("gunicorn did not start:\n" + log.read_text()[-2000:])
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def get(port: int, path: str, headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        method: str = "GET", timeout: float = 10) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- hostile bytes on the wire, parsed by gunicorn itself ---

H = b"Host: bridge.test\r\n"


@pytest.mark.parametrize(("request_bytes", "statuses", "json_body"), [
    pytest.param(b"GET /cors/api/ HTTP/1.1\r\n" + H + b"Origin: " + ALLOWED.encode() + b"\r\nOrigin: "
                 + ALLOWED.encode() + b"\r\n\r\n", {400}, True, id="duplicate-origin"),
    pytest.param(b"GET /cors/api/ HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", {400}, False,
                 id="bare-cr-in-header"),
    pytest.param(b"GET /cors/api/ HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}, False,
                 id="nul-in-header"),
    pytest.param(b"GET /cors/api/\r\nX: 1 HTTP/1.1\r\n" + H + b"\r\n", {400}, None,
                 id="crlf-in-request-line"),
    pytest.param(b"GET /cors/api/%2e%2e/x HTTP/1.1\r\n" + H + b"\r\n", {400}, True,
                 id="encoded-traversal"),
    pytest.param(b"GET /cors/api/../../etc/passwd HTTP/1.1\r\n" + H + b"\r\n", {400}, True,
                 id="raw-traversal"),
    pytest.param(b"GET /cors/api/a\\..\\b HTTP/1.1\r\n" + H + b"\r\n", {400}, True,
                 id="raw-backslash"),
    pytest.param(b"GET http://evil.example/cors/api/?absolute-form HTTP/1.1\r\n" + H + b"\r\n", {200}, True,
                 id="absolute-form"),
    pytest.param(b"GET /cors/api/?" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", {414}, False,
                 id="huge-request-line"),
    pytest.param(b"GET /cors/api/ HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(80))
                 + b"\r\n", {431}, True, id="many-headers"),
    pytest.param(b"GET /cors/api/ HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
                 + b"\r\n", {431}, False, id="too-many-headers-for-gunicorn"),
    pytest.param(b"POST /cors/api/ HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked"
                 b"\r\n\r\n0\r\n\r\n", {400}, False, id="cl-and-te"),
    pytest.param(b"GET /jsonp/api/?callback=alert(1)// HTTP/1.1\r\n" + H + b"\r\n", {400}, True,
                 id="callback-trick"),
    pytest.param(b"GET /cors/api HTTP/1.1\r\nHost: evil.example\r\n\r\n", {308}, None,
                 id="slash-redirect-host"),
    pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40, {0, 400}, None,
                 id="tls-hello-on-http"),
])
def test_hostile_bytes_get_a_4xx_from_the_real_server(gunicorn: Gunicorn, upstream: UpstreamServer,
                                                      request_bytes: bytes, statuses: set[int],
                                                      json_body: bool | None) -> None:
    answer = raw(gunicorn.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if answer else 0  # 0: closed without a word
    assert status in statuses, answer[:300]
    if json_body:
        assert set(json.loads(body)) == {"error", "message"} or status == 200
    if status == 200:  # an absolute-form target is only a path to us: the upstream is the same
        assert upstream.last().headers["host"] == f"127.0.0.1:{upstream.port}"
    if status == 308:
        assert b"\r\nLocation: /cors/api/\r\n" in head and b"evil" not in head
    assert get(gunicorn.port, "/cors/api/")[0] == 200  # and nothing changed for the next client


# --- load with faults ---


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    expected: frozenset[int]
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    weight: int = 1
    body: bytes | None = None  # the exact body a 200 must have, when it is known


GOOD_BODY = {"ok": True, "items": list(range(20))}


ORIGIN = (("Origin", ALLOWED),)
KINDS = [
    Kind("cors", "/cors/api/good?i=1", frozenset({200}), ORIGIN, weight=8,
         body=json.dumps(GOOD_BODY).encode()),
    Kind("jsonp", "/jsonp/api/good?callback=cb", frozenset({200}), weight=6,
         body=b"/**/cb(" + json.dumps(GOOD_BODY).encode() + b");"),
    Kind("envelope", "/jsonp/faulty/reset?callback=cb&envelope=1", frozenset({200}), weight=2),
    Kind("preflight", "/cors/api/good", frozenset({204}),
         ORIGIN + (("Access-Control-Request-Method", "GET"),), "OPTIONS", 2),
    Kind("tight", "/cors/tight/good", frozenset({200, 429}), weight=2),
    Kind("traversal", "/cors/api/%252e%252e/x", frozenset({400}), weight=2),
    Kind("callback", "/jsonp/api/good?callback=a.constructor", frozenset({400}), weight=2),
    Kind("dup-origin", "/cors/api/good", frozenset({400}), ORIGIN + ORIGIN, weight=2),
    Kind("bad-origin", "/cors/api/good", frozenset({403}), (("Origin", "https://evil.example"),)),
    Kind("absurd-acrh", "/cors/api/good", frozenset({400}), ORIGIN + (
        ("Access-Control-Request-Method", "GET"),
        ("Access-Control-Request-Headers", ",".join(["x"] * 100))), "OPTIONS"),
    Kind("nul-query", "/cors/api/good?q=%00", frozenset({400})),
    Kind("unknown", "/cors/nope/", frozenset({404})),
    Kind("reset", "/cors/faulty/reset", frozenset({502})),
    Kind("big", "/cors/faulty/big", frozenset({502})),
    Kind("bad-json", "/jsonp/faulty/broken?callback=cb", frozenset({502})),
    Kind("slow", "/cors/faulty/slow", frozenset({504})),
    Kind("drip", "/cors/faulty/drip", frozenset({504})),
]
CLIENTS = 20
REQUESTS_PER_CLIENT = 30


def run_clients(port: int, seed: int, results: list[tuple[str, int | str]]) -> None:
    lock = threading.Lock()
    weighted = [kind for kind in KINDS for _ in range(kind.weight)]

    def client(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        for _ in range(REQUESTS_PER_CLIENT):
            kind = rng.choice(weighted)
            try:
                status: int | str
                status, body, _ = get(port, kind.path, list(kind.headers), kind.method)
                if kind.body is not None and status == 200 and body != kind.body:
                    status = "wrong-body"  # a poisoned or mixed-up answer: never expected
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            with lock:
                results.append((kind.name, status))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client is stuck"


def route_faults(upstream: UpstreamServer) -> None:
    upstream.route("/good", Reply(200, GOOD_BODY))
    upstream.route("/reset", Reply(200, {"x": "y" * 200}, reset_after=30))
    upstream.route("/big", Reply(200, b"[" + b"1," * 4000 + b"1]"))
    upstream.route("/broken", Reply(200, b'{"a": [1,'))
    upstream.route("/slow", Reply(200, {"late": True}, delay=1.5))
    upstream.route("/drip", Reply(200, {"x": "y" * 500}, drip=0.005))


def unexpected(results: list[tuple[str, int | str]]) -> Counter[tuple[str, int | str]]:
    expected = {kind.name: kind.expected for kind in KINDS}
    return Counter((name, status) for name, status in results if status not in expected[name])


def test_a_herd_across_both_workers_asks_the_upstream_once(gunicorn: Gunicorn,
                                                         upstream: UpstreamServer) -> None:
    """The memory store is per worker; the workers hand a cold key's entry to each other
    (bridge/handoff.py), so a herd of concurrent requests spread over both makes one upstream request.
    A request id's first 16 characters name its worker process: the herd must have reached both."""
    for attempt in range(5):
        path = f"/herd-{attempt}"
        upstream.route(path, Reply(200, {"herd": attempt}, {"Content-Type": "application/json"},
                                   delay=0.5))
        barrier = threading.Barrier(40)
        answers: list[tuple[int, bytes, str]] = []

        def ask(path: str = path, barrier: threading.Barrier = barrier,
                answers: list[tuple[int, bytes, str]] = answers) -> None:
            barrier.wait(10)
            status, body, headers = get(gunicorn.port, f"/cors/api{path}", timeout=20)
            answers.append((status, body, headers["X-Request-ID"]))

        threads = [threading.Thread(target=ask) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(answers) == 40 and {(s, b) for s, b, _ in answers} == {(200, b'{"herd": %d}' % attempt)}
        assert len([s for s in upstream.seen if s.path == path]) == 1
        if len({request_id[:16] for _, _, request_id in answers}) == WORKERS:
            return  # both workers answered part of the herd, one of them from the other's fetch
    pytest.fail("five herds in a row reached one worker only: the test could not show the handoff")


def test_load_with_faults_and_a_killed_worker(gunicorn: Gunicorn, upstream: UpstreamServer) -> None:
    route_faults(upstream)
    warm: list[tuple[str, int | str]] = []
    run_clients(gunicorn.port, 1, warm)  # warm-up: imports, pools, caches all in place
    assert unexpected(warm) == Counter(), unexpected(warm)
    rss_before = gunicorn.rss_kib()

    results: list[tuple[str, int | str]] = []
    runner = threading.Thread(target=run_clients, args=(gunicorn.port, 2, results))
    started = time.monotonic()
    runner.start()
    while len(results) < CLIENTS * REQUESTS_PER_CLIENT // 3 and runner.is_alive():
        time.sleep(0.02)
    victim = gunicorn.workers()[0]
    os.kill(victim, signal.SIGKILL)  # a worker dies mid-load; the master must replace it
    runner.join(90)
    assert not runner.is_alive()
    elapsed = time.monotonic() - started

    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    # Only requests in flight on the killed worker may fail, and only as a broken connection: each
    # client has one request in flight at a time, so at most one failure per client.
    broken = Counter(status for _, status in results
                     if isinstance(status, str) and status != "wrong-body")
    assert sum(broken.values()) <= CLIENTS, broken
    wrong = Counter({k: n for k, n in unexpected(results).items() if k[1] not in broken})
    assert wrong == Counter(), wrong
    assert not any(isinstance(s, int) and s >= 500 and s not in (502, 504) for _, s in results)

    deadline = time.monotonic() + 30
    while (len(gunicorn.workers()) != WORKERS or victim in gunicorn.workers()) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(gunicorn.workers()) == WORKERS and victim not in gunicorn.workers()

    after: list[tuple[str, int | str]] = []
    run_clients(gunicorn.port, 3, after)  # every worker answers, none is stuck
    assert unexpected(after) == Counter(), unexpected(after)
    rss_after = gunicorn.rss_kib()
    log = gunicorn.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    # Memory is bounded: a replaced worker starts small, so compare with generous room for pools.
    assert rss_after < rss_before * 1.5 + 30 * 1024, (rss_before, rss_after)
    print(f"\nload: {len(results)} requests in {elapsed:.1f}s with one worker killed; "
          f"broken connections {dict(broken)}; worker RSS {rss_before} -> {rss_after} KiB")
