"""Shared fixtures: real upstream servers on loopback, and the app built from the factory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge import create_app
from bridge.config import Config, parse_config
from tests.upstream_server import Reply, UpstreamServer

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: UpstreamServer) -> UpstreamServer:
    """The session's upstream, with no routes and an empty request log."""
    upstream_server.reset()
    upstream_server.route("/", Reply(200, {"index": True}))
    return upstream_server


def config_text(upstream_url: str, extra: str = "", upstream_extra: str = "") -> str:
    return textwrap.dedent("""
        [cors]
        allow_origins = {allowed} https://*.example.org null
        allow_headers = Content-Type X-Custom
        max_age = 600

        [upstream:api]
        url = {url}
        methods = GET HEAD POST PUT
        timeout = 2
        headers = X-Api-Key: secret-key
        {upstream_extra}

        [upstream:closed]
        url = {url}
        jsonp = false
        {extra}
    """).format(allowed=ALLOWED, url=upstream_url, extra=textwrap.dedent(extra),
                upstream_extra=upstream_extra)


@pytest.fixture
def make_config(upstream: UpstreamServer) -> Callable[..., Config]:
    def make(extra: str = "", upstream_extra: str = "") -> Config:
        return parse_config(config_text(upstream.url, extra, upstream_extra), source="test.ini",
                            env={})
    return make


@pytest.fixture
def make_app(make_config: Callable[..., Config]) -> Callable[..., Flask]:
    def make(extra: str = "", upstream_extra: str = "") -> Flask:
        app = create_app(make_config(extra, upstream_extra))
        app.testing = True
        return app
    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
