"""Prometheus metrics: counters move with requests, and two real gunicorn workers are summed at /metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bridge import create_app
from bridge.cache import Cache
from bridge.ops.access import AccessRecord
from bridge.ops.metrics import FLUSH_EVERY, BridgeMetrics
from tests.conftest import config_text
from tests.upstream_server import Reply, Seen, UpstreamServer

ROOT = Path(__file__).resolve().parent.parent


def metrics_of(app: Flask) -> BridgeMetrics:
    metrics: BridgeMetrics = app.extensions["bridge.metrics"]
    return metrics


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition; 0 when the series does not exist."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_requests_are_counted_by_kind_upstream_and_status(app: Flask, client: FlaskClient,
                                                          upstream: UpstreamServer) -> None:
    client.get("/cors/api/")
    client.get("/cors/api/")
    client.get("/jsonp/api/?callback=cb")
    client.options("/cors/api/", headers={"Origin": "https://app.example.com",
                                          "Access-Control-Request-Method": "GET"})
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "bridge_requests_total", kind="cors", upstream="api", status="200") == 2
    assert sample(text, "bridge_requests_total", kind="jsonp", upstream="api", status="200") == 1
    assert sample(text, "bridge_requests_total", kind="preflight", upstream="api", status="204") == 1


def test_metrics_is_prometheus_text_and_not_cached(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"bridge_requests", "bridge_refused", "bridge_rate_limited", "bridge_cache_events",
            "bridge_upstream_latency_seconds"} <= names


def test_refusals_are_counted_by_code_and_unknown_names_never_become_labels(client: FlaskClient) -> None:
    client.get("/cors/nope/")
    client.get("/cors/also-not-configured/")
    client.get("/jsonp/closed/?callback=cb")
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "bridge_refused_total", kind="cors", code="unknown_api") == 2
    assert sample(text, "bridge_refused_total", kind="jsonp", code="jsonp_disabled") == 1
    assert sample(text, "bridge_requests_total", kind="cors", upstream="", status="404") == 2
    assert "nope" not in text and "also-not-configured" not in text


def test_upstream_latency_is_observed_with_its_outcome(make_app: Callable[..., Flask],
                                                       upstream: UpstreamServer) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    app = make_app(extra=f"[upstream:dead]\nurl = http://127.0.0.1:{dead_port}/\n")
    client = app.test_client()
    assert client.get("/cors/api/").status_code == 200
    assert client.get("/cors/dead/").status_code == 502
    registry = metrics_of(app).registry
    assert registry.get_sample_value("bridge_upstream_latency_seconds_count",
                                     {"upstream": "api", "outcome": "200"}) == 1
    assert registry.get_sample_value("bridge_upstream_latency_seconds_count",
                                     {"upstream": "dead", "outcome": "upstream_unreachable"}) == 1


def test_cache_hits_misses_and_evictions_are_counted(make_app: Callable[..., Flask],
                                                     upstream: UpstreamServer) -> None:
    upstream.route("/big", Reply(200, {"pad": "x" * 3000}))
    app = make_app(extra="[cache]\nmax_bytes = 8 KiB\n")
    client = app.test_client()
    client.get("/cors/api/")
    client.get("/cors/api/")
    for n in range(4):  # 4 x 3 KB cannot all fit in 8 KiB
        client.get(f"/cors/api/big?n={n}")
    get = metrics_of(app).registry.get_sample_value
    assert get("bridge_cache_events_total", {"event": "hit"}) == 1
    assert get("bridge_cache_events_total", {"event": "miss"}) == 5
    assert get("bridge_cache_events_total", {"event": "eviction"}) >= 1


def test_a_cache_hook_handed_in_still_hears_events(make_config: Callable[..., Any],
                                                   upstream: UpstreamServer) -> None:
    heard: list[str] = []
    config = make_config()
    app = create_app(config, cache=Cache.from_config(config, on_event=heard.append))
    app.test_client().get("/cors/api/")
    assert "miss" in heard
    assert metrics_of(app).registry.get_sample_value("bridge_cache_events_total", {"event": "miss"}) == 1


def test_rate_limited_requests_are_counted(make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    app = make_app(upstream_extra="per_client = 2/minute")
    client = app.test_client()
    statuses = [client.get(f"/cors/api/?n={n}").status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    get = metrics_of(app).registry.get_sample_value
    assert get("bridge_rate_limited_total", {"kind": "cors", "upstream": "api"}) == 1
    assert get("bridge_refused_total", {"kind": "cors", "code": "rate_limited"}) == 1
    assert get("bridge_requests_total", {"kind": "cors", "upstream": "api", "status": "429"}) == 1


def test_cache_events_and_rate_limits_have_their_counters(app: Flask) -> None:
    metrics = metrics_of(app)
    for event in ("hit", "hit", "miss", "stale", "eviction", "not-an-event"):
        metrics.cache_event(event)
    metrics.record_access(AccessRecord("GET", "cors", "api", 429, "", 0.001, "r1", "rate_limited"))
    get = metrics.registry.get_sample_value
    assert [get("bridge_cache_events_total", {"event": e}) for e in ("hit", "miss", "stale", "eviction")] \
        == [2, 1, 1, 1]
    assert get("bridge_cache_events_total", {"event": "not-an-event"}) is None
    assert get("bridge_rate_limited_total", {"kind": "cors", "upstream": "api"}) == 1
    assert get("bridge_refused_total", {"kind": "cors", "code": "rate_limited"}) == 1


def test_counts_gathered_by_many_threads_reach_the_files_once_each(tmp_path: Path) -> None:
    """Multiprocess mode: threads count while flushes from a scrape and from the flusher run at the
    same time; every count lands in the files exactly once."""
    metrics = BridgeMetrics(str(tmp_path))
    threads, per_thread = 8, 5000
    start = threading.Barrier(threads + 1)

    def count() -> None:
        start.wait()
        for _ in range(per_thread):
            metrics.cache_event("hit")

    def scrape() -> None:
        start.wait()
        while any(worker.is_alive() for worker in workers):
            metrics.flush()

    workers = [threading.Thread(target=count) for _ in range(threads)]
    scraper = threading.Thread(target=lambda: scrape())
    for thread in [*workers, scraper]:
        thread.start()
    for thread in [*workers, scraper]:
        thread.join(60)
    get = metrics.registry.get_sample_value
    metrics.flush()  # what is left, as a scrape or the exit does
    assert get("bridge_cache_events_total", {"event": "hit"}) == threads * per_thread
    assert get("bridge_cache_events_total", {"event": "miss"}) == 0


# --- a real gunicorn with two sync workers: the exposition sums both ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_worker_bridge(tmp_path: Path, upstream: UpstreamServer) -> Iterator[tuple[str, Path]]:
    ini = tmp_path / "bridge.ini"
    # sync workers with one thread each: a worker busy with one request cannot accept another.
    ini.write_text("[server]\nworker_class = sync\nthreads = 1\n"
                   + config_text(upstream.url, page_origin="http://localhost:1"))
    port = free_port()
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "app.py", "--config", str(ini), "--bind",
                                 f"127.0.0.1:{port}", "--workers", "2"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start:\n" + log.read_text()) from None
                time.sleep(0.05)
        yield base, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_two_gunicorn_workers_are_summed_in_one_exposition(two_worker_bridge: tuple[str, Path],
                                                           upstream: UpstreamServer) -> None:
    base, log = two_worker_bridge
    release = threading.Event()

    def held(seen: Seen) -> Reply:
        release.wait(20)
        return Reply(200, {"held": True})

    upstream.route("/held", held)
    upstream.route("/quick", Reply(200, {"quick": True}))
    holder = threading.Thread(target=requests.get, args=(base + "/cors/api/held",), kwargs={"timeout": 20})
    holder.start()
    while upstream.count("/held") == 0:  # one worker is now inside that request and cannot accept
        time.sleep(0.01)
    for n in range(10):  # so these ten (distinct keys: all misses) are all served by the other worker
        assert requests.get(base + f"/cors/api/quick?n={n}", headers={"Connection": "close"},
                            timeout=10).status_code == 200
    release.set()
    holder.join(20)
    # Whichever worker answers the scrape, it reports both workers' counts, each within FLUSH_EVERY.
    time.sleep(FLUSH_EVERY + 0.5)
    for _ in range(4):
        text = requests.get(base + "/metrics", headers={"Connection": "close"}, timeout=10).text
        assert sample(text, "bridge_requests_total", kind="cors", upstream="api", status="200") == 11
        assert sample(text, "bridge_upstream_latency_seconds_count", upstream="api", outcome="200") == 11
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    cors_lines = [line for line in lines if line["kind"] == "cors"]
    assert len(cors_lines) == 11
    assert all(line["status"] == 200 and line["upstream"] == "api" for line in cors_lines)
