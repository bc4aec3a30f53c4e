"""/healthz: 200 while the bridge answers, names what it cannot reach, and probes each target rarely."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
from flask import Flask

from bridge.config import Config
from bridge.ops.health import Health, probe_target, tcp_connect
from tests.upstream_server import UpstreamServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class CountingConnect:
    """The real TCP probe, counted per target."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, port: int, timeout: float) -> str | None:
        with self.lock:
            self.calls.append((host, port))
        return tcp_connect(host, port, timeout)


def closed_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config_with_dead(make_config: Callable[..., Config]) -> Config:
    return make_config(extra=f"[upstream:dead]\nurl = http://127.0.0.1:{closed_port()}/base/\n")


def test_healthz_is_200_and_names_the_unreachable_upstream(make_app: Callable[..., Flask]) -> None:
    app = make_app(extra=f"[upstream:dead]\nurl = http://127.0.0.1:{closed_port()}/\n")
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["unreachable"] == ["dead"]
    assert body["upstreams"]["api"]["reachable"] is True
    assert body["upstreams"]["closed"]["reachable"] is True
    assert body["upstreams"]["dead"]["reachable"] is False and body["upstreams"]["dead"]["reason"]
    assert body["cache"]["backend"] == "memory"


def test_healthz_is_ok_when_everything_answers(app: Flask) -> None:
    body = app.test_client().get("/healthz").get_json()
    assert body["status"] == "ok" and body["unreachable"] == []


def test_one_probe_per_target_per_interval(config_with_dead: Config, upstream: UpstreamServer) -> None:
    clock, connect = Clock(), CountingConnect()
    health = Health(config_with_dead.upstreams, clock=clock, connect=connect, interval=10)
    for _ in range(5):
        health.report()
        clock.tick(1)
    # "api" and "closed" share one host and port: one probe covers both; "dead" is the other.
    assert len(connect.calls) == 2
    clock.tick(6)  # 10 s after the first probes
    report = health.report()
    assert len(connect.calls) == 4
    assert report["upstreams"]["api"]["checked_ago"] == 0
    assert report["unreachable"] == ["dead"]


def test_a_recovered_upstream_is_seen_at_the_next_probe(make_config: Callable[..., Config]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = make_config(extra=f"[upstream:later]\nurl = http://127.0.0.1:{port}/\n")
    clock = Clock()
    health = Health(config.upstreams, clock=clock)
    try:
        assert health.report()["unreachable"] == ["later"]  # bound but not listening yet
        listener.listen()
        assert health.report()["unreachable"] == ["later"]  # within the interval: the old answer
        clock.tick(10)
        assert health.report()["unreachable"] == []
    finally:
        listener.close()


def test_many_concurrent_reports_make_one_probe(config_with_dead: Config) -> None:
    connect = CountingConnect()
    health = Health(config_with_dead.upstreams, connect=connect)
    threads = [threading.Thread(target=health.report) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(connect.calls)) == sorted(connect.calls)  # no target probed twice


@pytest.mark.parametrize("url, target", [
    ("http://api.example.com/v1/", ("api.example.com", 80)),
    ("https://api.example.com/", ("api.example.com", 443)),
    ("http://127.0.0.1:8001/", ("127.0.0.1", 8001)),
    ("http://[::1]:9000/x/", ("::1", 9000)),
], ids=["http-default", "https-default", "explicit-port", "ipv6"])
def test_probe_target(url: str, target: tuple[str, int]) -> None:
    assert probe_target(url) == target


def test_tcp_connect_says_why(upstream: UpstreamServer) -> None:
    assert tcp_connect("127.0.0.1", upstream.port, 1) is None
    assert tcp_connect("127.0.0.1", closed_port(), 1)
    assert tcp_connect("no-such-host.invalid", 80, 1)


def test_a_name_resolving_inside_is_never_probed_without_allow_private(
        make_config: Callable[..., Config]) -> None:
    config = make_config(extra="[upstream:inside]\nurl = http://api.internal.example/\n")
    connect = CountingConnect()
    health = Health(config.upstreams, connect=connect, resolver=lambda host, port: ["10.1.2.3"])
    report = health.report()
    assert report["unreachable"] == ["inside"]
    assert "internal addresses" in report["upstreams"]["inside"]["reason"]
    assert "10.1.2.3" not in str(report) and "a private address" not in str(report)  # the log says
    assert all(host != "10.1.2.3" for host, _ in connect.calls)
