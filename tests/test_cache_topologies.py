"""The cache and the rate budgets on Redis Sentinel and Redis Cluster: real ``redis-server`` and
``redis-sentinel`` processes on loopback (``tests/redis_topologies.py``), two bridges on each.

Two bridges share entries, a herd of cold requests across both is one upstream request, a purge on
one reaches the other, budgets are one, and ``/healthz`` names the topology. On Sentinel, two gunicorn
instances under load lose no request when the master is killed, and once the replica is promoted
the herd is one upstream request again and the budgets are shared again.
"""

from __future__ import annotations

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

from tests.concurrency import together
from tests.conftest import config_text
from tests.live import LiveServer
from tests.redis_topologies import RedisClusterSet, RedisSentinelSet, require_binaries
from tests.test_cache import Bridge, cache_status
from tests.test_cache import make_bridge as make_bridge  # noqa: F401 - a fixture used below
from tests.test_purge import AUTH, TOKEN, versioned
from tests.test_server import free_port
from tests.upstream_server import Reply, UpstreamServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinelSet]:
    require_binaries()
    with RedisSentinelSet() as topology:
        yield topology


@pytest.fixture(scope="module")
def cluster_set() -> Iterator[RedisClusterSet]:
    require_binaries()
    with RedisClusterSet() as topology:
        yield topology


@pytest.fixture(params=["sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sentinel":
        return str(request.getfixturevalue("sentinel_set").sentinel_url)
    return str(request.getfixturevalue("cluster_set").cluster_url)


@pytest.fixture
def backend(topology_url: str) -> str:
    """make_bridge's backend: the topology (a key prefix per test keeps tests apart)."""
    return topology_url


def two_bridges(make_bridge: Callable[..., Bridge], extra: str = "") -> list[Bridge]:
    # The real clock: these bridges share a Redis with every earlier test in the module, and the
    # times kept there (a purge's) must be of one clock.
    return [make_bridge(f"\n[admin]\ntoken = {TOKEN}\n{extra}", clock=time.time) for _ in range(2)]


def test_two_bridges_share_entries_herds_purges_and_budgets(make_bridge: Callable[..., Bridge],
                                                            upstream: UpstreamServer,
                                                            topology_url: str) -> None:
    first, second = two_bridges(make_bridge, "\n[limits]\nper_client = 1000/minute\n")
    path = f"/items-{time.time_ns()}"  # a key no earlier test stored in this topology
    upstream.route(path, versioned({"Surrogate-Key": "t1"}))
    stored = first.client.get(f"/cors/api{path}")
    assert "stored" in cache_status(stored)
    hit = second.client.get(f"/jsonp/api{path}?callback=cb")
    assert cache_status(hit).startswith("jsonp-cors-bridge; hit") and upstream.count(path) == 1

    purged = second.client.post("/purge", json={"tag": "t1"}, headers=AUTH)
    assert purged.status_code == 200 and purged.get_json()["purged"] == 1
    assert first.client.get(f"/cors/api{path}").get_json()["v"] == 2  # gone for the other bridge

    health = first.client.get("/healthz").get_json()["cache"]
    kind = "sentinel" if topology_url.startswith("redis+sentinel") else "cluster"
    assert health["redis"] == "up" and health["topology"] == kind
    if kind == "sentinel":
        assert health["master"] and health["sentinels"] == 3
    else:
        assert len(health["primaries"]) == 3


def test_a_herd_across_two_bridges_is_one_upstream_request(make_bridge: Callable[..., Bridge],
                                                           upstream: UpstreamServer) -> None:
    bridges = two_bridges(make_bridge)
    path = f"/slow-{time.time_ns()}"
    upstream.route(path, Reply(200, {"slow": True}, delay=0.5))
    servers = [LiveServer(bridge.app).start() for bridge in bridges]
    codes: list[int] = []

    def one(index: int) -> None:
        codes.append(requests.get(servers[index % 2].url + f"/cors/api{path}", timeout=10).status_code)

    try:
        together(one, 20)
    finally:
        for server in servers:
            server.stop()
    assert codes == [200] * 20
    assert upstream.count(path) == 1


def test_budgets_are_one_across_bridges(make_bridge: Callable[..., Bridge], upstream: UpstreamServer) -> None:
    name = f"b{time.time_ns()}"  # an upstream of its own: a budget no earlier test has counted
    bridges = [make_bridge(f"\n[upstream:{name}]\nurl = {upstream.url}\nper_client = 4/minute\n",
                           clock=time.time) for _ in range(2)]
    codes = [bridges[index % 2].client.get(f"/cors/{name}/").status_code for index in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]


# --- a failover under load, through gunicorn ---


def start_gunicorn(ini: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, "app.py", "--config", str(ini), "--bind",
                                    f"127.0.0.1:{port}", "--workers", "2"], cwd=root, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def wait_for(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds:g}s")


def test_a_failover_under_load_loses_no_request(tmp_path: Path, upstream: UpstreamServer,
                                                sentinel_set: RedisSentinelSet, page_origin: str) -> None:
    name = f"limited{time.time_ns()}"
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url, f"[cache]\nbackend = {sentinel_set.sentinel_url}\n\n"
                                             f"[upstream:{name}]\nurl = {upstream.url}\n"
                                             "per_client = 4/minute\n", page_origin=page_origin))
    upstream.route("/hot", Reply(200, {"hot": True}))
    upstream.route("/cold", Reply(200, {"cold": True}))
    log = tmp_path / "gunicorn.log"
    processes = [start_gunicorn(ini, log) for _ in range(2)]
    urls = [url for _, url in processes]
    try:
        for process, url in processes:
            wait_for(f"gunicorn at {url}", lambda url=url, process=process:
                     process.poll() is None and requests.get(url + "/healthz", timeout=1).ok)
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def load(index: int) -> None:
            counter = 0
            while not stop.is_set():
                counter += 1
                target = "/hot" if counter % 2 else f"/cold?n={index}-{counter}"
                try:
                    response = requests.get(urls[index % 2] + "/cors/api" + target, timeout=10)
                    answers.append((response.status_code, response.headers.get("Cache-Status", "")))
                except requests.RequestException as exc:
                    answers.append((0, type(exc).__name__))

        threads = [threading.Thread(target=load, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        old = sentinel_set.master_address()
        failover = sentinel_set.failover()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(20)
        assert answers and all(code == 200 for code, _ in answers), \
            [a for a in answers if a[0] != 200][:5]
        assert sentinel_set.master_address() != old and failover.seconds < 30

        # Once both instances are back on Redis (the new master), sharing works as before.
        for url in urls:
            wait_for(f"{url} back on the new master", lambda url=url: (
                requests.get(url + "/healthz", timeout=5).json()["cache"].get("master")
                == "{}:{}".format(*sentinel_set.master_address())))
        herd_path = f"/herd-{time.time_ns()}"
        upstream.route(herd_path, Reply(200, {"herd": True}, delay=0.5))
        codes: list[int] = []
        together(lambda index: codes.append(
            requests.get(urls[index % 2] + f"/cors/api{herd_path}", timeout=10).status_code), 10)
        assert codes == [200] * 10 and upstream.count(herd_path) == 1
        time.sleep(2.5)  # past the rate budgets' wait before they try Redis again
        budget = [requests.get(urls[index % 2] + f"/cors/{name}/", timeout=5).status_code
                  for index in range(6)]
        assert budget == [200, 200, 200, 200, 429, 429]
    finally:
        for process, _ in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
