"""The upstream client's pooled connections: kept alive within a process, never shared across a fork."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.forking import in_forked_child
from tests.upstream_server import Reply, UpstreamServer


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_does_not_share_the_parents_pooled_connections(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    """gunicorn preloads the app in its master and forks workers: a pool made before the fork must
    not hand the child the parent's socket (two processes on one connection corrupt both)."""
    upstream.route("/p", Reply(200, {"p": 1}))
    app = make_app(upstream_extra="ttl = 0")
    client = app.test_client()
    assert client.get("/cors/api/p").status_code == 200  # the parent now holds a pooled connection
    assert in_forked_child(lambda: str(client.get("/cors/api/p").status_code).encode()) == b"200"
    assert client.get("/cors/api/p").status_code == 200
    ports = [s.client_port for s in upstream.seen if s.path == "/p"]
    assert len(ports) == 3 and ports[0] == ports[2] != ports[1]  # the child used a connection of its own
