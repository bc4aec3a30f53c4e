"""Request ids (accepted, replaced, forwarded upstream) and one structured access line per request."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from bridge import create_app
from bridge.config import Config
from bridge.ops import access
from bridge.ops.access import ACCESS_LOGGER, AccessRecord, accepted_request_id, new_request_id
from tests.conftest import config_text
from tests.forking import in_forked_child
from tests.test_server import ROOT, free_port, start, stop, wait_ready
from tests.upstream_server import Reply, UpstreamServer

GENERATED = re.compile(r"[0-9a-f]{32}")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def access_lines(client: FlaskClient) -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("value", ["abc", "a" * 128, "Req-1.2_3", "0"],
                         ids=["short", "128", "punct", "digit"])
def test_a_well_formed_id_is_kept_returned_and_sent_upstream(client: FlaskClient, upstream: UpstreamServer,
                                                             value: str) -> None:
    response = client.get("/cors/api/", headers={"X-Request-ID": value})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == value
    assert upstream.last().headers["x-request-id"] == value


@pytest.mark.parametrize("value", [
    "", "a" * 129, "has space", "semi;colon", "quote\"d", "<script>", "caf\u00e9", "a,b", "tab\there",
], ids=["empty", "129-chars", "space", "semicolon", "quote", "markup", "non-ascii", "comma", "tab"])
def test_a_malformed_id_is_replaced_everywhere(client: FlaskClient, upstream: UpstreamServer,
                                               value: str) -> None:
    response = client.get("/cors/api/", headers={"X-Request-ID": value})
    assert response.status_code == 200
    rid = response.headers["X-Request-ID"]
    assert rid != value and GENERATED.fullmatch(rid)
    assert upstream.last().headers["x-request-id"] == rid


def test_ids_are_generated_fresh_and_reach_the_jsonp_upstream(client: FlaskClient,
                                                              upstream: UpstreamServer) -> None:
    first = client.get("/jsonp/api/?callback=cb").headers["X-Request-ID"]
    assert upstream.last().headers["x-request-id"] == first
    second = client.get("/jsonp/api/?callback=cb").headers["X-Request-ID"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_generated_ids_differ_between_forked_workers() -> None:
    """gunicorn forks workers from a master that imported the bridge: each must draw its own ids."""
    parent_ids = {new_request_id() for _ in range(1000)}
    assert len(parent_ids) == 1000
    output = in_forked_child(lambda: " ".join(new_request_id() for _ in range(1000)).encode())
    child_ids = set(output.decode().split())
    assert len(child_ids) == 1000 and all(GENERATED.fullmatch(i) for i in child_ids)
    assert not child_ids & (parent_ids | {new_request_id() for _ in range(1000)})
    assert {i[:16] for i in child_ids} != {i[:16] for i in parent_ids}


def test_refusals_carry_an_id_too(client: FlaskClient) -> None:
    response = client.get("/cors/nope/", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "trace-me"


def test_one_access_line_per_request_with_every_field(client: FlaskClient, upstream: UpstreamServer,
                                                      access_lines: Lines) -> None:
    client.get("/cors/api/", headers={"X-Request-ID": "line-1"})
    client.options("/cors/api/", headers={"Origin": "https://app.example.com",
                                          "Access-Control-Request-Method": "PUT"})
    client.get("/jsonp/api/?callback=cb")
    client.get("/cors/nope/")
    client.get("/healthz")
    lines = access_lines.records
    assert [(line["kind"], line["upstream"], line["status"]) for line in lines] == [
        ("cors", "api", 200), ("preflight", "api", 204), ("jsonp", "api", 200),
        ("cors", "", 404), ("other", "", 200),
    ]
    first = lines[0]
    assert set(first) == {"method", "kind", "upstream", "status", "cache", "duration", "request_id", "error"}
    assert first["method"] == "GET" and first["request_id"] == "line-1"
    assert first["cache"] in ("hit", "miss")
    assert isinstance(first["duration"], float) and first["duration"] >= 0
    assert lines[3]["error"] == "unknown_api"  # an unknown name never reaches a label or a log field


@pytest.mark.parametrize("value, expected", [
    (None, None), ("x", "x"), ("a" * 129, None), ("a b", None), ("a\r\nSet-Cookie: x", None),
], ids=["missing", "ok", "too-long", "space", "header-injection"])
def test_accepted_request_id(value: str | None, expected: str | None) -> None:
    assert accepted_request_id(value) == expected


def test_an_upstream_caches_hit_is_not_the_bridges(make_config: Callable[..., Config],
                                                   upstream: UpstreamServer) -> None:
    """The access record (and the metrics made from it) says what the bridge did: an upstream that
    answers from a cache of its own is still a trip upstream, a miss, on an upstream never cached."""
    upstream.route("/c", Reply(200, {"c": 1}, {"Content-Type": "application/json",
                                               "Cache-Status": "upstream-cache; hit"}))
    app = create_app(make_config(upstream_extra="ttl = 0"))
    records: list[AccessRecord] = []
    app.extensions["bridge.access_recorder"].listeners.append(records.append)
    for url in ("/cors/api/c", "/jsonp/api/c?callback=cb"):
        answer = app.test_client().get(url)
        assert answer.headers.getlist("Cache-Status") == ["upstream-cache; hit",
                                                          "jsonp-cors-bridge; fwd=bypass"]
    assert [r.cache for r in records] == ["miss", "miss"]


# --- the default handler's lines on a real file: written together, soon, never lost or repeated ---


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[access._BareLines, Path]]:
    """The default access handler on a real file, and the file's path (closed after the test)."""
    handler = access._BareLines()
    path = tmp_path / "access.log"
    with path.open("a") as stream:
        handler.setStream(stream)
        yield handler, path


@pytest.fixture
def held_log_file(log_file: tuple[access._BareLines, Path],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[access._BareLines, Path]:
    """The same, its lines held until a flush (``WRITE_AFTER`` of 30 s)."""
    monkeypatch.setattr(access, "WRITE_AFTER", 30.0)
    return log_file


def test_lines_are_written_soon_without_a_flush_and_at_once_with_one(
        log_file: tuple[access._BareLines, Path]) -> None:
    handler, path = log_file
    threads = [threading.Thread(target=lambda n=n: [handler.write(f"{n}-{i}") for i in range(200)])
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    while len(path.read_text().splitlines()) < 1600:
        assert time.monotonic() < deadline, "the writer thread never wrote the lines"
        time.sleep(access.WRITE_AFTER)
    handler.write("last")
    handler.flush()  # what logging.shutdown does at exit: no wait
    lines = path.read_text().splitlines()
    assert sorted(lines) == sorted([f"{n}-{i}" for n in range(8) for i in range(200)] + ["last"])


def test_a_queued_record_is_written_as_its_line_in_order_with_the_lines_around_it(
        held_log_file: tuple[access._BareLines, Path]) -> None:
    """A request hands its record over as it is; the writer makes its line when it writes it."""
    handler, path = held_log_file
    records = [AccessRecord("GET", "cors", "api", 200, "hit", 0.000125, f"id-{n}") for n in range(3)]
    handler.write("before")
    for record in records:
        handler.write(record)
    handler.write("after")
    assert path.read_text() == ""
    handler.flush()
    assert path.read_text().splitlines() == ["before", *map(access.access_line, records), "after"]


def test_a_line_through_logging_comes_after_the_lines_still_waiting(
        held_log_file: tuple[access._BareLines, Path]) -> None:
    """When an operator adds a handler at run time, access lines go through ``logging``, written at
    once: the lines the fast path queued before still come out first, however long the new one."""
    handler, path = held_log_file
    logger = logging.getLogger("bridge.test-order")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    other = logging.NullHandler()  # a second handler: the fast path no longer applies
    try:
        access._log_access(logger, AccessRecord("GET", "cors", "api", 200, "hit", 0.001, "queued"))
        assert path.read_text() == ""  # queued, held
        logger.addHandler(other)
        # A line longer than the stream's buffer goes straight to the file, as write() is called.
        access._log_access(logger, AccessRecord("M" * 10_000, "cors", "api", 405, "", 0.001, "logged"))
        ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
        assert ids == ["queued", "logged"]
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(other)


def test_a_forked_child_never_writes_the_lines_its_parent_queued(
        held_log_file: tuple[access._BareLines, Path]) -> None:
    """gunicorn forks its workers from the master: lines queued before a fork are the parent's."""
    handler, path = held_log_file
    for n in range(3):
        handler.write(f"parent-{n}")

    def child() -> bytes:
        handler.write("child")
        handler.flush()
        return b"done"

    def quiet_child() -> bytes:  # exits (logging.shutdown flushes) having written nothing
        handler.flush()
        return b"done"

    assert in_forked_child(quiet_child) == b"done"
    assert path.read_text() == ""
    assert in_forked_child(child) == b"done"
    assert path.read_text() == "child\n"
    handler.flush()
    assert sorted(path.read_text().splitlines()) == ["child", "parent-0", "parent-1", "parent-2"]


@pytest.mark.slow
def test_two_workers_lines_reach_one_pipe_whole_and_each_once(tmp_path: Path,
                                                              upstream: UpstreamServer) -> None:
    """Under gunicorn (2 workers of 8 threads, stderr a pipe as under systemd or docker): every
    request's line arrives whole while the server runs, and the last ones when it stops."""
    upstream.route("/d", Reply(200, {"d": 1}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url))
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--config", str(ini), "--bind",
                                f"127.0.0.1:{port}", "--workers", "2"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(iter(lambda: process.stderr.read1(65536), b"")))
    reader.start()
    base = f"http://127.0.0.1:{port}"

    def ids_seen() -> list[str]:
        text = b"".join(output).decode()
        return [json.loads(line)["request_id"] for line in text.splitlines() if line.startswith("{")]

    def burst(prefix: str, n: int) -> None:
        with requests.Session() as session:
            for i in range(n):
                assert session.get(f"{base}/cors/api/d", headers={"X-Request-ID": f"{prefix}-{i}"},
                                   timeout=10).status_code == 200

    try:
        wait_ready(base + "/healthz", process)
        threads = [threading.Thread(target=burst, args=(f"run{n}", 50)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = {f"run{n}-{i}" for n in range(8) for i in range(50)}
        deadline = time.monotonic() + 10
        while not sent <= set(ids_seen()):
            assert time.monotonic() < deadline, "the lines were not written while the server ran"
            time.sleep(0.05)
        burst("last", 20)
    finally:
        stop(process)
        reader.join(10)
        process.stderr.close()  # type: ignore[union-attr]
    seen = ids_seen()  # every access line parsed: none was cut or run into another
    ours = [i for i in seen if i.startswith(("run", "last"))]
    assert sorted(ours) == sorted(sent | {f"last-{i}" for i in range(20)})


def test_each_write_is_whole_lines_of_at_most_pipe_buf_bytes(
        held_log_file: tuple[access._BareLines, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe keeps a write whole among other processes' writes only up to PIPE_BUF bytes."""
    handler, _ = held_log_file
    writes: list[bytes] = []
    monkeypatch.setattr(handler, "_write_all", writes.append)
    lines = [f"{i:03d}" + "x" * 96 for i in range(100)] + ["y" * (access.PIPE_BUF + 10), "z"]
    for line in lines:
        handler.write(line)
    handler.flush()
    assert b"".join(writes).decode().splitlines() == lines
    assert all(w.endswith(b"\n") for w in writes)
    assert all(len(w) <= access.PIPE_BUF for w in writes if not w.startswith(b"y"))
    assert len(writes) < len(lines) / 10  # together, not one write per line


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGQUIT])
def test_a_worker_that_stops_writes_the_lines_still_waiting(tmp_path: Path, upstream: UpstreamServer,
                                                            stop_signal: signal.Signals) -> None:
    """gunicorn's graceful (TERM) and quick (QUIT) stops both let a worker exit through Python, and
    logging's exit hook flushes the handler: lines held back for far longer than a stop still arrive."""
    upstream.route("/d", Reply(200, {"d": 1}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url))
    log = tmp_path / "out.log"
    port = free_port()
    held_back = ("import runpy, sys, bridge.ops.access as a; a.WRITE_AFTER = 60.0; "
                 "sys.argv = ['app.py'] + sys.argv[1:]; runpy.run_path('app.py', run_name='__main__')")
    process = start([sys.executable, "-c", held_back, "--config", str(ini), "--bind",
                     f"127.0.0.1:{port}", "--workers", "2"], log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        for i in range(20):
            requests.get(f"http://127.0.0.1:{port}/cors/api/d", headers={"X-Request-ID": f"held-{i}",
                                                                          "Connection": "close"},
                         timeout=10)
        time.sleep(0.5)
        assert "held-" not in log.read_text()  # still waiting: only a stop writes them now
        os.killpg(process.pid, stop_signal)
        process.wait(timeout=20)
    finally:
        stop(process)
    ids = [json.loads(line)["request_id"] for line in log.read_text().splitlines() if line.startswith("{")]
    assert sorted(i for i in ids if i.startswith("held-")) == sorted(f"held-{i}" for i in range(20))
