"""Redis mode: instances share entries and fetches, and a Redis that goes away costs no request."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

import bridge.policy.jsonp
from tests.concurrency import together
from tests.conftest import config_text
from tests.live import LiveServer
from tests.redis_server import RedisServer, free_port
from tests.test_cache import Bridge, FakeClock, cache_status
from tests.test_cache import make_bridge as make_bridge  # noqa: F401 - a fixture used below
from tests.upstream_server import Reply, Seen, UpstreamServer

pytestmark = pytest.mark.redis


@pytest.fixture
def backend(redis_server: RedisServer) -> str:
    """Every test here talks to the session's redis-server, emptied first."""
    redis_server.flush()
    return redis_server.url


def test_two_bridges_share_entries_and_script_json(make_bridge: Callable[..., Bridge],
                                                   upstream: UpstreamServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    one, two = make_bridge(clock=clock), make_bridge(clock=clock)
    assert one.cache is not two.cache
    calls: list[int] = []
    real = bridge.policy.jsonp.script_safe_json
    monkeypatch.setattr(bridge.policy.jsonp, "script_safe_json",
                        lambda body, depth=64: calls.append(1) or real(body, depth))
    upstream.route("/items", Reply(200, {"n": 1}))
    assert one.client.get("/jsonp/api/items?callback=a").status_code == 200
    clock.tick(5)
    other = two.client.get("/jsonp/api/items?callback=b")
    assert other.get_data(as_text=True) == '/**/b({"n": 1});'
    assert cache_status(other) == "jsonp-cors-bridge; hit; ttl=55"
    assert other.headers["Age"] == "5"
    assert two.client.get("/cors/api/items").get_json() == {"n": 1}
    assert upstream.count("/items") == 1
    assert len(calls) == 1  # the second bridge read the script JSON from Redis


def test_concurrent_misses_across_instances_are_one_upstream_request(
        make_bridge: Callable[..., Bridge], upstream: UpstreamServer) -> None:
    bridges = [make_bridge(), make_bridge()]
    held = threading.Event()

    def route(seen: Seen) -> Reply:
        # Answer once each instance has one thread fetching or waiting on Redis and nine waiting for
        # it, so the test does not depend on how the threads happen to be scheduled.
        if not held.is_set():
            held.set()
            for _ in range(10_000):
                if all(b.cache.flight.under_way() == 1 and b.cache.flight.waiting() == 9 for b in bridges):
                    break
                threading.Event().wait(0.001)
        return Reply(200, {"slow": True})

    upstream.route("/slow", route)
    servers = [LiveServer(b.app).start() for b in bridges]
    codes: list[int] = []

    def one(index: int) -> None:
        response = requests.get(servers[index % 2].url + "/cors/api/slow", timeout=10)
        codes.append(response.status_code)

    try:
        together(one, 20)
    finally:
        for server in servers:
            server.stop()
    assert codes == [200] * 20
    assert upstream.count("/slow") == 1


def test_a_dead_lock_holder_blocks_nobody_for_long(make_bridge: Callable[..., Bridge],
                                                   upstream: UpstreamServer,
                                                   redis_server: RedisServer) -> None:
    bridge_ = make_bridge()
    upstream.route("/items", Reply(200, {"n": 1}))
    bridge_.client.get("/cors/api/items")  # learn the key this request uses
    with redis_server.client() as client:
        keys = [k for k in client.keys("jcb:e:*")]
        assert len(keys) == 1
        key = keys[0].decode().removeprefix("jcb:e:")
        client.flushall()
        # An instance that took the lock and died: it expires by itself.
        client.set("jcb:l:" + key, "dead-holder", px=300)
    response = bridge_.client.get("/cors/api/items")
    assert response.status_code == 200
    assert upstream.count("/items") == 2


def test_redis_going_away_costs_no_request(make_bridge: Callable[..., Bridge],
                                           upstream: UpstreamServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    own = RedisServer().start()
    back = RedisServer(port=own.port)  # the same address, started again later
    try:
        bridge_ = make_bridge(backend_url=own.url)
        upstream.route("/items", Reply(200, {"n": 1}))
        bridge_.client.get("/cors/api/items")
        assert cache_status(bridge_.client.get("/cors/api/items")).startswith("jsonp-cors-bridge; hit")
        own.stop()
        caplog.set_level(logging.WARNING, logger="bridge.cache.redis")
        for index in range(3):
            response = bridge_.client.get(f"/jsonp/api/items?callback=cb{index}")
            assert response.status_code == 200
            assert response.get_data(as_text=True) == f'/**/cb{index}({{"n": 1}});'
            bridge_.clock.tick(1)
        assert upstream.count("/items") == 4  # served from the upstream while Redis is away
        health = bridge_.client.get("/healthz")
        assert health.status_code == 200
        cache = health.get_json()["cache"]
        assert (cache["backend"], cache["redis"]) == ("redis", "down")
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1
        assert bridge_.events.count("redis_down") == 1

        back.start()
        bridge_.clock.tick(3)  # past the pause between attempts
        assert bridge_.client.get("/healthz").get_json()["cache"]["redis"] == "up"
        bridge_.client.get("/cors/api/items")
        assert cache_status(bridge_.client.get("/cors/api/items")).startswith("jsonp-cors-bridge; hit")
        assert bridge_.events.count("redis_up") == 1
    finally:
        own.close()
        back.close()


def test_an_unreachable_redis_from_the_start(make_bridge: Callable[..., Bridge],
                                             upstream: UpstreamServer) -> None:
    bridge_ = make_bridge(backend_url=f"redis://127.0.0.1:{free_port()}/0")
    upstream.route("/items", Reply(200, {"n": 1}))
    for _ in range(2):
        response = bridge_.client.get("/cors/api/items")
        assert response.status_code == 200 and response.get_json() == {"n": 1}
    assert bridge_.client.get("/healthz").get_json()["cache"]["redis"] == "down"


# --- two gunicorn processes, one Redis ---


@pytest.fixture
def gunicorn_bridges(tmp_path: Path, upstream: UpstreamServer, redis_server: RedisServer,
                     page_origin: str) -> Iterator[list[str]]:
    config = tmp_path / "bridge.ini"
    config.write_text(config_text(upstream.url, f"[cache]\nbackend = {redis_server.url}\n",
                                  page_origin=page_origin))
    root = Path(__file__).resolve().parent.parent
    processes, urls = [], []
    log = (tmp_path / "gunicorn.log").open("wb")
    try:
        for _ in range(2):
            port = free_port()
            processes.append(subprocess.Popen(
                [sys.executable, "app.py", "--config", str(config), "--bind", f"127.0.0.1:{port}",
                 "--workers", "2"], cwd=root, stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "PYTHONPATH": str(root)}, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url, process in zip(urls, processes, strict=True):
            while True:
                assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
                try:
                    if requests.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, f"gunicorn at {url} did not start"
                time.sleep(0.05)
        yield urls
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
        log.close()


@pytest.mark.slow
def test_two_gunicorn_processes_share_one_redis(gunicorn_bridges: list[str],
                                                upstream: UpstreamServer,
                                                redis_server: RedisServer) -> None:
    redis_server.flush()
    upstream.route("/items", Reply(200, {"shared": True}))
    first, second = gunicorn_bridges
    stored = requests.get(first + "/cors/api/items", timeout=5)
    assert "stored" in stored.headers["Cache-Status"]
    hit = requests.get(second + "/jsonp/api/items?callback=cb", timeout=5)
    assert hit.text == '/**/cb({"shared": true});'
    assert hit.headers["Cache-Status"].startswith("jsonp-cors-bridge; hit")
    assert upstream.count("/items") == 1
    assert requests.get(second + "/healthz", timeout=5).json()["cache"]["redis"] == "up"


@pytest.mark.slow
def test_stale_while_revalidate_refreshes_once_across_instances_and_workers(
        gunicorn_bridges: list[str], upstream: UpstreamServer, redis_server: RedisServer) -> None:
    """Two gunicorn instances of two workers each, one Redis: a burst on an entry gone stale is
    answered at once from it, and the upstream sees one refresh."""
    redis_server.flush()
    swr = {"Cache-Control": "max-age=1, stale-while-revalidate=60"}
    versions = iter(range(1, 100))
    upstream.route("/items", lambda seen: Reply(200, {"v": next(versions)}, headers=swr, delay=0.3))
    assert requests.get(gunicorn_bridges[0] + "/cors/api/items", timeout=5).json() == {"v": 1}
    time.sleep(1.2)  # the entry is stale now, well within its window
    statuses: list[tuple[int, str, object]] = []

    def one(index: int) -> None:
        response = requests.get(gunicorn_bridges[index % 2] + "/cors/api/items", timeout=10)
        statuses.append((response.status_code, response.headers["Cache-Status"], response.json()))

    together(one, 40, at_once=False)  # as before the helper: each thread as it starts
    assert all(code == 200 and status.startswith("jsonp-cors-bridge; hit")
               for code, status, _ in statuses), statuses
    assert any("detail=stale-while-revalidate" in status for _, status, _ in statuses)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and upstream.count("/items") < 2:
        time.sleep(0.05)
    time.sleep(0.5)  # a second refresh, had one been started, would have arrived by now
    assert upstream.count("/items") == 2
    for url in gunicorn_bridges:
        renewed = requests.get(url + "/cors/api/items", timeout=5)
        assert renewed.json() == {"v": 2} and renewed.headers["Cache-Status"].startswith(
            "jsonp-cors-bridge; hit; ttl=")
