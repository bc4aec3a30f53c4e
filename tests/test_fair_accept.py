"""gunicorn's workers share a burst of connections fairly (bridge/fair_accept.py), through app.py."""

from __future__ import annotations

import collections
import socket
import sys
import time
from pathlib import Path

import pytest

from bridge.ops.workers import STALE_AFTER, WorkerTable
from tests.conftest import config_text
from tests.test_server import free_port, start, stop, wait_ready
from tests.upstream_server import Reply, UpstreamServer

pytestmark = pytest.mark.slow


def burst(port: int, connections: int) -> list[int]:
    """Open ``connections`` at once, as a load balancer or wrk does, and count them per worker (by
    the worker's own request-id prefix)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(connections)]
    workers = []
    try:
        for sock in socks:
            sock.sendall(b"GET /cors/api/ HTTP/1.1\r\nHost: bridge\r\n\r\n")
        for sock in socks:
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            line = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"x-request-id:"))
            workers.append(line.split(b":", 1)[1].strip()[:16])
    finally:
        for sock in socks:
            sock.close()
    return sorted(collections.Counter(workers).values(), reverse=True)


def test_a_burst_of_connections_is_shared_by_the_workers(tmp_path: Path,
                                                         upstream: UpstreamServer) -> None:
    upstream.route("/", Reply(200, {"ok": True}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url))
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "2"], tmp_path / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        deadline = time.monotonic() + 30
        while len(burst(port, 8)) < 2:  # until both workers are up (one may still be booting)
            assert time.monotonic() < deadline, "the second worker never answered"
            time.sleep(0.2)
        time.sleep(1)
        spreads = []
        for _ in range(5):
            spreads.append(burst(port, 32))
            time.sleep(1)  # the workers see the last burst's connections close
    finally:
        stop(process)
    assert all(len(spread) == 2 and spread[0] <= 20 for spread in spreads), spreads


def test_a_worker_gone_quiet_is_not_waited_for() -> None:
    clock = [1000.0]
    table = WorkerTable(rows=4, clock=lambda: clock[0])
    mine, other = table.claim(101), table.claim(102)
    table.publish(other, 102, 0)
    assert table.least_loaded_other(mine) == 0
    clock[0] += STALE_AFTER + 1
    assert table.least_loaded_other(mine) is None  # no heartbeat: counts as gone
    table.publish(mine, 101, 3)  # this one is alive
    assert table.claim(103) == other  # and the quiet one's row is free for its replacement
    table.release(101)
    assert table.claim(104) == mine
