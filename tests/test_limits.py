"""Rate limits: per client, per upstream, shared through Redis, on every path in the path's own shape."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ALLOWED
from tests.upstream_server import UpstreamServer

LIMIT3 = "[limits]\nper_client = 3/minute\n"


def from_addr(addr: str, **headers: str) -> dict[str, object]:
    return {"environ_base": {"REMOTE_ADDR": addr}, "headers": headers}


def spend(client: FlaskClient, n: int, url: str = "/cors/api/", **kwargs: object) -> list[int]:
    return [client.get(url, **kwargs).status_code for _ in range(n)]  # type: ignore[arg-type]


@pytest.fixture
def limited(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(LIMIT3).test_client()


def test_over_the_limit_is_a_429_json_with_retry_after(limited: FlaskClient,
                                                       upstream: UpstreamServer) -> None:
    assert spend(limited, 3) == [200, 200, 200]
    before = upstream.count()
    response = limited.get("/cors/api/?fresh=1")  # not in the cache: it would go upstream
    assert response.status_code == 429
    assert response.get_json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Cache-Control"] == "no-store"
    assert upstream.count() == before  # the refused request never reached the upstream


def test_the_cors_refusal_is_readable_by_allowed_origins_only(limited: FlaskClient) -> None:
    spend(limited, 3)
    allowed = limited.get("/cors/api/", headers={"Origin": ALLOWED})
    assert allowed.status_code == 429
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in allowed.headers["Vary"]
    other = limited.get("/cors/api/", headers={"Origin": "https://evil.example.net"})
    assert other.status_code == 429 and "Access-Control-Allow-Origin" not in other.headers


def test_jsonp_envelope_carries_the_429(limited: FlaskClient) -> None:
    spend(limited, 3)
    envelope = limited.get("/jsonp/api/?callback=cb&envelope=1")
    assert envelope.status_code == 200
    text = envelope.get_data(as_text=True)
    assert text.startswith("/**/cb(") and '"status":429' in text and "rate_limited" in text
    assert '"retry-after":"' in text
    plain = limited.get("/jsonp/api/?callback=cb")
    assert plain.status_code == 429 and plain.get_json()["error"] == "rate_limited"


def test_budgets_are_per_client_address(limited: FlaskClient) -> None:
    assert spend(limited, 4, **from_addr("192.0.2.1")) == [200, 200, 200, 429]
    assert spend(limited, 1, **from_addr("192.0.2.2")) == [200]


@pytest.mark.parametrize("forwarded", [
    pytest.param({"X-Forwarded-For": "203.0.113.{i}"}, id="x-forwarded-for"),
    pytest.param({"X-Real-IP": "203.0.113.{i}"}, id="x-real-ip"),
    pytest.param({"Forwarded": "for=203.0.113.{i}"}, id="forwarded"),
])
def test_forwarded_headers_are_not_trusted_without_proxies(limited: FlaskClient,
                                                           forwarded: dict[str, str]) -> None:
    statuses = [limited.get("/cors/api/", **from_addr(  # type: ignore[arg-type]
        "192.0.2.9", **{k: v.format(i=i) for k, v in forwarded.items()})).status_code
        for i in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_behind_one_trusted_proxy_the_last_forwarded_address_counts(
        make_app: Callable[..., Flask]) -> None:
    client = make_app("[server]\ntrusted_proxies = 1\n" + LIMIT3).test_client()
    proxy = "10.0.0.2"
    # The client may prepend anything; only the entry our proxy appended identifies it.
    statuses = [client.get("/cors/api/", **from_addr(  # type: ignore[arg-type]
        proxy, **{"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7"})).status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    other = client.get("/cors/api/", **from_addr(proxy, **{"X-Forwarded-For": "203.0.113.8"}))  # type: ignore[arg-type]
    assert other.status_code == 200


def test_forwarded_host_and_proto_are_ignored_behind_proxies(make_app: Callable[..., Flask],
                                                             upstream: UpstreamServer) -> None:
    client = make_app("[server]\ntrusted_proxies = 2\n").test_client()
    response = client.get("/cors/api/", headers={"X-Forwarded-Host": "evil.example",
                                                 "X-Forwarded-Proto": "https",
                                                 "X-Forwarded-Prefix": "/admin"})
    assert response.status_code == 200
    seen = upstream.last()
    assert seen.headers["host"] == f"127.0.0.1:{upstream.port}"
    assert not any(h.startswith("x-forwarded") for h in seen.headers)


def test_healthz_is_never_limited(limited: FlaskClient) -> None:
    spend(limited, 3)
    assert spend(limited, 5, "/healthz") == [200] * 5


def test_an_upstream_budget_is_shared_by_its_cors_and_jsonp_paths(
        make_app: Callable[..., Flask]) -> None:
    client = make_app(upstream_extra="per_client = 2/minute").test_client()
    assert client.get("/cors/api/").status_code == 200
    assert client.get("/jsonp/api/?callback=cb").status_code == 200
    assert client.get("/cors/api/").status_code == 429
    assert client.get("/cors/closed/").status_code == 200  # another upstream: another budget


# --- Redis: one budget for several instances, and what happens when it is down ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A real redis-server on a free loopback port, without persistence; fails or skips by CI."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs Debian's redis-server package")
        pytest.skip("redis-server is missing: apt-get install redis-server (CI installs it)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)


def stop_redis(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    process, url = start_redis()
    yield url
    stop_redis(process)


@pytest.mark.redis
def test_instances_share_one_budget_through_redis(make_app: Callable[..., Flask],
                                                  redis_url: str) -> None:
    extra = f"[cache]\nbackend = {redis_url}\n{LIMIT3}"
    one, two = make_app(extra), make_app(extra)
    one.extensions["bridge.budget"].reset()
    clients = [one.test_client(), two.test_client()]
    statuses = [clients[i % 2].get("/cors/api/").status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.redis
def test_redis_down_falls_back_to_a_per_instance_budget(make_app: Callable[..., Flask],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_app(f"[cache]\nbackend = {dead}\n{LIMIT3}").test_client()
    assert spend(client, 4) == [200, 200, 200, 429]
    assert "falling back to in-memory storage" in caplog.text


@pytest.mark.parametrize(("section", "value"), [
    pytest.param("[limits]", "5/fortnight", id="unknown-unit"),
    pytest.param("[limits]", "many", id="not-a-rate"),
    pytest.param("[upstream:x]\nurl = http://127.0.0.1:9/", "-1/minute", id="negative"),
])
def test_a_bad_rate_fails_start_up_with_one_line(section: str, value: str) -> None:
    from bridge.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(f"{section}\nper_client = {value}\n", source="t.ini", env={})
    assert "per_client" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.browser
def test_a_page_reads_the_429_and_its_retry_after(engine_page, page_origin: str,  # type: ignore[no-untyped-def]
                                                  make_app: Callable[..., Flask]) -> None:
    """In Chromium, Firefox and WebKit: the refusal carries the grant, so the page reads it."""
    from tests.live import LiveServer

    page = engine_page
    server = LiveServer(make_app(LIMIT3)).start()
    try:
        page.goto(page_origin + "/")
        result = page.evaluate("""async url => {
            const statuses = [];
            let last;
            for (let i = 0; i < 4; i++) { last = await fetch(url); statuses.push(last.status); }
            return {statuses, body: await last.json(), retry: last.headers.get("Retry-After")};
        }""", f"{server.url}/cors/api/")
    finally:
        server.stop()
    assert result["statuses"] == [200, 200, 200, 429]
    assert result["body"]["error"] == "rate_limited"
    assert 1 <= int(result["retry"]) <= 60


@pytest.mark.redis
def test_redis_dying_mid_run_keeps_requests_answered_and_limited(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture) -> None:
    process, url = start_redis()
    try:
        client = make_app(f"[cache]\nbackend = {url}\n{LIMIT3}").test_client()
        assert spend(client, 2) == [200, 200]
    finally:
        stop_redis(process)
    # Redis is gone: no 500, and the in-memory fallback budget (3 again) still applies.
    assert spend(client, 4) == [200, 200, 200, 429]
    assert "falling back to in-memory storage" in caplog.text
