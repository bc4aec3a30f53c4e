"""The bridge as an operator runs it: gunicorn via app.py, `gunicorn app:app`, and `make run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from tests.conftest import config_text
from tests.upstream_server import Reply, UpstreamServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = getattr(process, "log_path", Path("/dev/null")).read_text(errors="replace")
            raise AssertionError(f"server exited with {process.returncode}:\n{output}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {seconds}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process group with its output in ``log`` (a pipe nobody reads would fill and block)."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    process.log_path = log  # type: ignore[attr-defined]
    return process


@pytest.fixture
def ini(tmp_path: Path, upstream: UpstreamServer) -> Iterator[Path]:
    path = tmp_path / "bridge.ini"
    path.write_text(config_text(upstream.url))
    yield path


def test_app_py_serves_under_gunicorn(ini: Path, upstream: UpstreamServer) -> None:
    upstream.route("/hello", Reply(200, {"hello": "world"}))
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "2"], ini.parent / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        response = requests.get(f"http://127.0.0.1:{port}/cors/api/hello", timeout=5)
        assert response.json() == {"hello": "world"}
        assert response.headers["Server"].startswith("gunicorn")
        script = requests.get(f"http://127.0.0.1:{port}/jsonp/api/hello?callback=cb", timeout=5)
        assert script.content == b'/**/cb({"hello": "world"});'
    finally:
        stop(process)


def test_gunicorn_app_app_reads_bridge_config(ini: Path, upstream: UpstreamServer) -> None:
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    process = start([gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "1", "app:app"],
                    ini.parent / "out.log", env={"BRIDGE_CONFIG": str(ini)})
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        assert requests.get(f"http://127.0.0.1:{port}/apis", timeout=5).json()["apis"][0]["name"] == "api"
    finally:
        stop(process)


def test_new_user_make_run_serves_the_demo(tmp_path: Path) -> None:
    """As a new user would: `make run` (on ports of its own: all three move), then curl the demo
    through /cors/demo/, and the comparison page's origin is granted wherever it runs."""
    bridge, demo, page = free_port(), free_port(), free_port()
    process = start(["make", "--no-print-directory", "run", f"BRIDGE_BIND=127.0.0.1:{bridge}",
                     f"DEMO_BIND=127.0.0.1:{demo}", f"PAGE_BIND=127.0.0.1:{page}"], tmp_path / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{bridge}/healthz", process, seconds=120)
        response = requests.get(f"http://127.0.0.1:{bridge}/cors/demo/", timeout=10)
        assert response.status_code == 200, (response.text, (tmp_path / "out.log").read_text())
        assert response.json()["name"] == "demo"
        whoami = requests.get(f"http://127.0.0.1:{bridge}/cors/demo/whoami", timeout=10).json()
        assert whoami["api_key_present"] is True  # the bridge's server-side header arrived
        wait_ready(f"http://127.0.0.1:{page}/", process)
        for origin in (f"http://127.0.0.1:{page}", f"http://localhost:{page}"):
            granted = requests.get(f"http://127.0.0.1:{bridge}/cors/demo/", headers={"Origin": origin},
                                   timeout=10)
            assert granted.headers.get("Access-Control-Allow-Origin") == origin
        other = requests.get(f"http://127.0.0.1:{bridge}/cors/demo/",
                             headers={"Origin": "http://127.0.0.1:8002"}, timeout=10)
        assert other.status_code == 403  # the default page port is not granted when the page moved
    finally:
        stop(process)


def test_a_port_already_taken_stops_start_up_instead_of_sharing_it(ini: Path) -> None:
    """With reuse_port, workers bind with SO_REUSEPORT; without the check a second bridge would
    quietly share the port."""
    ini.write_text("[server]\nreuse_port = true\n" + ini.read_text())
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another bridge's worker would
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "app.py", "--config", str(ini), "--bind",
                                 f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in result.stderr


def raw_fields(port: int, data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """``data`` sent as it is; the status line, every header field in order (repeats kept) and the
    body, read off the socket until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [(name, value) for name, _, value in (line.partition(": ") for line in lines[1:])]
    return lines[0], fields, body


def raw_exchange(port: int, data: bytes) -> tuple[str, dict[str, str], bytes]:
    line, fields, body = raw_fields(port, data)
    return line, dict(fields), body


def test_what_gunicorn_refuses_itself_is_answered_in_json_without_echo(ini: Path) -> None:
    """Request lines and headers gunicorn cannot parse never reach the app; their refusals still have
    the bridge's JSON shape, and never repeat the client's bytes."""
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "1"], ini.parent / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        cases = [
            (b"GET /cors/api/?q=\xe9<script> HTTP/1.1\r\nHost: x\r\n\r\n", "400", "bad_request"),
            (b"GET /cors/api/?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "414", "uri_too_long"),
            (b"GET /cors/api/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", "431",
             "headers_too_large"),
        ]
        for data, status, code in cases:
            line, headers, body = raw_exchange(port, data)
            assert line.split(" ")[1] == status, line
            assert headers["Content-Type"] == "application/json"
            assert headers["X-Content-Type-Options"] == "nosniff"
            document = json.loads(body)
            assert document["error"] == code and document["message"]
            assert b"<script>" not in body and b"aaaa" not in body and b"bbbb" not in body
    finally:
        stop(process)


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_an_answer_keeps_the_upstreams_date_through_gunicorn(
        worker_class: str, tmp_path: Path, upstream: UpstreamServer) -> None:
    """gunicorn writes the time of sending as Date and drops the app's; the bridge's workers send the
    upstream's (RFC 9110 section 6.6.1), on the miss and on every later hit, on both paths, and give
    an answer that came without one the time it arrived. The bridge's own answers get gunicorn's."""
    made = formatdate(time.time() - 5, usegmt=True)
    upstream.route("/dated", Reply(200, {"ok": True}, {"Date": made, "Cache-Control": "max-age=600"}))
    upstream.route("/undated", Reply(200, {"ok": True}, {"Date": None, "Cache-Control": "max-age=600"}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url, f"[server]\nworker_class = {worker_class}\n"))
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "1"], tmp_path / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        request = b"GET /cors/api/%s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
        line, headers, _ = raw_exchange(port, request % b"dated")
        assert line.startswith("HTTP/1.1 200") and "fwd=uri-miss" in headers["Cache-Status"]
        assert headers["Date"] == made
        _, first, _ = raw_exchange(port, request % b"undated")
        time.sleep(1.1)  # a second on, so that a Date written at sending would differ
        for path, stored in ((b"dated", made), (b"undated", first["Date"])):
            _, fields, _ = raw_fields(port, request % path)
            assert [v for k, v in fields if k == "Date"] == [stored], fields  # one Date: the stored one
            assert "hit" in dict(fields)["Cache-Status"]
        script = requests.get(f"http://127.0.0.1:{port}/jsonp/api/dated?callback=cb", timeout=5)
        assert script.headers["Date"] == made and "hit" in script.headers["Cache-Status"]
        own = requests.get(f"http://127.0.0.1:{port}/cors/nothing/x", timeout=5)
        assert own.status_code == 404
        assert abs(parsedate_to_datetime(own.headers["Date"]).timestamp() - time.time()) < 3
    finally:
        stop(process)
