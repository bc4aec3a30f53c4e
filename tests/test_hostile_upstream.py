"""An upstream that breaks HTTP gets the client a clean 502, never a 500, a 1xx or a stored answer.

Each upstream here is a loopback server sending exactly the bytes of the case (tests/raw_upstream.py).
The wire-level cases go through a real gunicorn (``python app.py``), whose own checks on what the
app hands it turned some of them into a 500 before; the storage cases run in process, where the
cache's clock can be moved.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import requests
from flask import Flask

from bridge import create_app
from bridge.cache import Cache
from bridge.config import Config
from bridge.policy.headers import http_date
from tests.conftest import ALLOWED
from tests.raw_upstream import RawUpstream
from tests.test_cache import FakeClock
from tests.test_server import free_port, start, stop, wait_ready

GOOD_BODY = b'{"ok": true}'


def answer(head: bytes, body: bytes = GOOD_BODY) -> bytes:
    return head + b"\r\n" + body


GOOD = answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n")
HOSTILE = {
    "nul-in-value": answer(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 12\r\n"),
    "cr-in-value": answer(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 12\r\n"),
    "obs-fold": answer(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 12\r\n"),
    "space-before-colon": answer(b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 12\r\n"),
    "no-colon": answer(b"HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 12\r\n"),
    "switching-protocols": answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\n", b""),
    "status-999": answer(b"HTTP/1.1 999 Whatever\r\nContent-Length: 12\r\n"),
    "status-099": answer(b"HTTP/1.1 099 Below\r\nContent-Length: 12\r\n"),
    "status-600": answer(b"HTTP/1.1 600 Above\r\nContent-Length: 12\r\n"),
    "status-not-a-number": answer(b"HTTP/1.1 2xx OK\r\nContent-Length: 12\r\n"),
    "http-2-status-line": answer(b"HTTP/2 200\r\nContent-Length: 12\r\n"),
    "header-section-cut-off": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Partial: 1",
    "status-line-only": b"HTTP/1.1 200 OK\r\n",
    "nothing": b"",
    "two-lengths": answer(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Length: 13\r\n"),
    "length-not-a-number": answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n"),
    "unknown-transfer-coding": answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"),
    "bad-chunk-size": answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunked-cut-off": answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", b"c\r\n{\"ok\""),
    "body-short-of-its-length": answer(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n"),
    "header-flood": answer(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150))
                           + b"Content-Length: 12\r\n"),
}
INTERIM = {
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + GOOD,
    "processing-then-continue": b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + GOOD,
    "chunked-with-trailer": answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n",
                                   b"6\r\n{\"ok\":\r\n6;ext=1\r\n true}\r\n0\r\nX-Trailer: t\r\n\r\n"),
}

# Statuses HTTP does not name but whose class it defines (RFC 9110 section 15): forwarded as they are.
EXTENSION_STATUSES = {
    f"status-{code}": answer(b"HTTP/1.1 %d Whatever\r\nCache-Control: max-age=60\r\n"
                             b"Content-Length: 12\r\n" % code)
    for code in (299, 499, 599)
}


@pytest.fixture(scope="module")
def raw_upstreams() -> Iterator[dict[str, RawUpstream]]:
    servers = {name: RawUpstream(data)
               for name, data in {**HOSTILE, **INTERIM, **EXTENSION_STATUSES}.items()}
    yield servers
    for server in servers.values():
        server.close()


SECRET = "s3cr3t-only-the-upstream-may-see;x"  # from the environment, with a ';' to split on


def bridge_ini(servers: dict[str, RawUpstream]) -> str:
    sections = "".join(f"[upstream:{name}]\nurl = {server.url}\ntimeout = 3\n"
                       "headers = Authorization: Bearer ${HOSTILE_SECRET}\n\n"
                       for name, server in servers.items())
    return f"[cors]\nallow_origins = {ALLOWED}\n\n{sections}"


@pytest.fixture(scope="module")
def gunicorn_bridge(raw_upstreams: dict[str, RawUpstream],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("hostile")
    ini = work / "bridge.ini"
    ini.write_text(bridge_ini(raw_upstreams))
    port = free_port()
    log = work / "bridge.log"
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "1"], log, env={"HOSTILE_SECRET": SECRET})
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(process)


def status_line(url: str) -> bytes:
    """The first line the bridge itself writes, read off the socket (so no client library hides a
    1xx or a missing body)."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    path = url.split(port, 1)[1]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HOSTILE))
def test_an_upstream_breaking_http_is_a_clean_502_on_both_paths(
        name: str, gunicorn_bridge: tuple[str, Path], raw_upstreams: dict[str, RawUpstream]) -> None:
    base, _ = gunicorn_bridge
    cors = requests.get(f"{base}/cors/{name}/x", headers={"Origin": ALLOWED}, timeout=10)
    assert cors.status_code == 502, cors.text
    assert cors.json()["error"] == "upstream_error" and cors.json()["message"]
    assert cors.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-A" not in cors.headers and "X-Partial" not in cors.headers
    envelope = requests.get(f"{base}/jsonp/{name}/x?callback=cb&envelope=1", timeout=10)
    assert envelope.status_code == 200
    assert envelope.text.startswith("/**/cb(") and '"status":502' in envelope.text
    assert status_line(f"{base}/cors/{name}/x") == b"HTTP/1.1 502 BAD GATEWAY"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INTERIM))
def test_interim_answers_are_read_past_and_never_forwarded(
        name: str, gunicorn_bridge: tuple[str, Path]) -> None:
    base, _ = gunicorn_bridge
    assert status_line(f"{base}/cors/{name}/x") == b"HTTP/1.1 200 OK"
    cors = requests.get(f"{base}/cors/{name}/x", timeout=10)
    assert cors.status_code == 200 and cors.json() == {"ok": True}
    assert "Link" not in cors.headers and "X-Trailer" not in cors.headers
    script = requests.get(f"{base}/jsonp/{name}/x?callback=cb", timeout=10)
    assert script.text == '/**/cb({"ok": true});'


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXTENSION_STATUSES))
def test_a_status_http_does_not_name_is_forwarded_by_its_class_and_not_stored(
        name: str, gunicorn_bridge: tuple[str, Path], raw_upstreams: dict[str, RawUpstream]) -> None:
    base, _ = gunicorn_bridge
    code = int(name.split("-")[1])
    asked = len(raw_upstreams[name].requests)
    for _ in range(2):  # max-age=60, but the bridge stores only what it knows it may: 200 and 404
        cors = requests.get(f"{base}/cors/{name}/x", headers={"Origin": ALLOWED}, timeout=10)
        assert cors.status_code == code and cors.json() == {"ok": True}
        assert cors.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "stored" not in cors.headers["Cache-Status"] and "hit" not in cors.headers["Cache-Status"]
    assert status_line(f"{base}/cors/{name}/x") == b"HTTP/1.1 %d UNKNOWN" % code
    script = requests.get(f"{base}/jsonp/{name}/x?callback=cb", timeout=10)
    assert script.status_code == code and script.text == '/**/cb({"ok": true});'
    envelope = requests.get(f"{base}/jsonp/{name}/x?callback=cb&envelope=1", timeout=10)
    assert envelope.status_code == 200 and f'"status":{code}' in envelope.text
    assert len(raw_upstreams[name].requests) == asked + 5  # each one asked: nothing was stored


HOSTILE_REQUESTS = [  # what a hostile client sends beside them: (method, path, headers)
    ("GET", "/cors/nothing/%2e%2e/%2e%2e/etc/passwd", {}),
    ("GET", "/cors/nothing/x%0d%0aSet-Cookie:%20a=b", {}),
    ("GET", "/jsonp/nothing/x?callback=jQuery.globalEval", {}),
    ("GET", "/jsonp/nothing/x?callback=%3Cscript%3E", {}),
    ("OPTIONS", "/cors/nothing/x",
     {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}),
    ("GET", "/cors/nothing/x", {"Origin": ALLOWED, "X-Big": "v" * 20000}),
    ("GET", "/cors/nothing/x", {"Origin": f"{ALLOWED}, https://evil.example"}),
    ("POST", "/jsonp/nothing/x?callback=cb", {}),
    ("GET", "/cors/" + "a" * 5000, {}),
]


@pytest.mark.slow
def test_the_log_says_what_the_upstream_did_and_never_a_traceback(
        gunicorn_bridge: tuple[str, Path], raw_upstreams: dict[str, RawUpstream]) -> None:
    base, log = gunicorn_bridge
    for name in HOSTILE:
        requests.get(f"{base}/cors/{name}/x", timeout=10)
    for method, path, headers in HOSTILE_REQUESTS:
        answer = requests.request(method, base + path, headers=headers, timeout=10)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
    deadline = time.monotonic() + 5  # access lines reach the log within WRITE_AFTER, not at once
    while (text := log.read_text(errors="replace")).count('"error":"upstream_error"') < len(HOSTILE) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Traceback" not in text and "Error handling request" not in text
    # The secret went upstream whole, as one header, and nowhere else: not in the log, not split.
    seen = raw_upstreams["nul-in-value"].heads
    assert seen and f"\r\nauthorization: bearer {SECRET}\r\n".encode() in seen[-1].lower()
    assert SECRET not in text and SECRET.split(";")[0] not in text
    refusals = [line for line in text.splitlines() if '"error":"upstream_error"' in line]
    assert len(refusals) >= len(HOSTILE)


# --- a broken answer is never stored, and leaves what is stored in place ---


@pytest.fixture
def switching_upstream() -> Iterator[RawUpstream]:
    server = RawUpstream(GOOD)
    yield server
    server.close()


def bridge_on(make_config: Callable[..., Config], url: str, cache_extra: str) -> tuple[Flask, FakeClock]:
    config = make_config(f"[cache]\n{cache_extra}\n[upstream:raw]\nurl = {url}\ntimeout = 3\n")
    clock = FakeClock()
    return create_app(config, cache=Cache.from_config(config, clock=clock)), clock


@pytest.mark.parametrize("name", ["header-section-cut-off", "status-line-only", "chunked-cut-off",
                                  "body-short-of-its-length"])
def test_an_answer_that_did_not_arrive_whole_is_never_stored(
        name: str, make_config: Callable[..., Config], switching_upstream: RawUpstream) -> None:
    switching_upstream.answer = HOSTILE[name]
    app, _ = bridge_on(make_config, switching_upstream.url, "ttl = 60")
    client = app.test_client()
    for _ in range(2):
        assert client.get("/cors/raw/x").status_code == 502
    assert len(switching_upstream.requests) == 2  # asked again: nothing was stored
    switching_upstream.answer = GOOD
    assert "stored" in client.get("/cors/raw/x").headers["Cache-Status"]


@pytest.mark.parametrize("name", ["header-section-cut-off", "nul-in-value", "status-999"])
def test_a_broken_answer_leaves_the_stored_one_for_stale_if_error(
        name: str, make_config: Callable[..., Config], switching_upstream: RawUpstream) -> None:
    app, clock = bridge_on(make_config, switching_upstream.url, "ttl = 10\nstale_if_error = 300")
    client = app.test_client()
    assert "stored" in client.get("/cors/raw/x").headers["Cache-Status"]
    clock.tick(30)  # stale now
    switching_upstream.answer = HOSTILE[name]
    stale = client.get("/cors/raw/x")
    assert stale.status_code == 200 and stale.get_json() == {"ok": True}
    assert "detail=stale-if-error" in stale.headers["Cache-Status"]


# --- an answer's Date ---

NOW_DATE = "Tue, 01 Dec 2026 12:00:00 GMT"
OTHER_DATE = "Wed, 02 Dec 2026 12:00:00 GMT"


@pytest.mark.parametrize(("dates", "kept"), [
    ([NOW_DATE], NOW_DATE),
    ([NOW_DATE, OTHER_DATE], NOW_DATE),  # several: the first, the one a recipient reads
    ([], None),
    (["nope"], None),
    (["Sun, 31 Feb 2026 12:00:00 GMT"], None),  # no such day
    (["Tue, 01 Dec 2026 12:00:00 UTC"], None),  # not one of RFC 9110's three forms
    (["nope", NOW_DATE], None),
])
def test_an_answer_goes_on_with_one_date_the_upstreams_when_it_is_one(
        dates: list[str], kept: str | None, make_config: Callable[..., Config],
        switching_upstream: RawUpstream) -> None:
    """RFC 9110 section 6.6.1: one Date on every answer, hit or miss, on both paths: the upstream's
    when it sent an HTTP-date, else the time the answer arrived (a recipient may replace an invalid
    one), so that no client is handed a Date it cannot read."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=60\r\n"
    head += b"".join(b"Date: %s\r\n" % date.encode() for date in dates)
    switching_upstream.answer = answer(head + b"Content-Length: 12\r\n")
    app, _ = bridge_on(make_config, switching_upstream.url, "ttl = 60")
    client = app.test_client()
    before = time.time()
    for path in ("/cors/raw/x", "/cors/raw/x", "/jsonp/raw/x?callback=cb"):
        sent = client.get(path)
        assert sent.status_code == 200, sent.get_data()
        (date,) = sent.headers.getlist("Date")
        if kept is not None:
            assert date == kept
        else:
            assert abs(http_date(date) - before) < 5, date  # type: ignore[operator]
    assert len(switching_upstream.requests) == 1  # stored, then hits


def test_an_expires_counts_from_the_time_of_arrival_when_the_date_is_invalid(
        make_config: Callable[..., Config], switching_upstream: RawUpstream) -> None:
    """With its invalid Date replaced, an answer's Expires gives it a lifetime (before, an invalid
    Date made the answer stale at once and it was never stored)."""
    expires = formatdate(time.time() + 600, usegmt=True)
    switching_upstream.answer = answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       b"Date: nope\r\nExpires: %s\r\nContent-Length: 12\r\n"
                                       % expires.encode())
    app, _ = bridge_on(make_config, switching_upstream.url, "ttl = 60")
    client = app.test_client()
    assert "stored" in client.get("/cors/raw/x").headers["Cache-Status"]
    assert "hit" in client.get("/cors/raw/x").headers["Cache-Status"]
    assert len(switching_upstream.requests) == 1
