"""Shared fixtures: real upstream servers on loopback, the app built from the factory, the browsers."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Page as PlaywrightPage

from bridge import create_app
from bridge.config import Config, parse_config
from tests.engines import ENGINE_NAMES, Engine, EngineUnavailable
from tests.engines import Page as EnginePage
from tests.engines.chromium import ChromiumEngine, launch_chromium
from tests.engines.firefox import FirefoxEngine
from tests.engines.webkit import WebKitEngine
from tests.live import LiveServer
from tests.redis_server import RedisServer
from tests.upstream_server import Reply, UpstreamServer

ALLOWED = "https://app.example.com"
T = TypeVar("T")


def _page_origin_app(environ, start_response):  # type: ignore[no-untyped-def]
    """A blank page on another origin than the bridge's: the origin the browser tests run in."""
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [b"<!doctype html><meta charset=utf-8><title>page origin</title>"]


@pytest.fixture(scope="session")
def page_origin() -> Iterator[str]:
    """``http://localhost:PORT``: loopback like the bridge (so Chromium's local-network rules are
    not in play) but another host, so every request from it to the bridge is cross-origin."""
    server = LiveServer(_page_origin_app).start()
    yield f"http://localhost:{server.port}"
    server.stop()


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


def config_text(upstream_url: str, extra: str = "", upstream_extra: str = "",
                page_origin: str = "") -> str:
    return textwrap.dedent("""
        [cors]
        allow_origins = {allowed} https://*.example.org null {page_origin}
        allow_headers = Content-Type X-Custom
        max_age = 600

        [upstream:api]
        url = {url}
        methods = GET HEAD POST PUT
        headers = X-Api-Key: secret-key
        {upstream_extra}

        [upstream:closed]
        url = {url}
        jsonp = false
        {extra}
    """).format(allowed=ALLOWED, url=upstream_url, page_origin=page_origin, extra=textwrap.dedent(extra),
                upstream_extra=upstream_extra)


@pytest.fixture
def make_config(upstream: UpstreamServer, page_origin: str) -> Callable[..., Config]:
    def make(extra: str = "", upstream_extra: str = "") -> Config:
        return parse_config(config_text(upstream.url, extra, upstream_extra, page_origin),
                            source="test.ini", env={})
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


# --- browsers: each engine started once per run, from Debian's packages, never a downloaded build ---


def started_or_skipped(start: Callable[[], T]) -> T:
    """`start()`; a browser this machine cannot start fails the test in CI and skips it elsewhere,
    naming the Debian package either way."""
    try:
        return start()
    except EngineUnavailable as unavailable:
        if os.environ.get("CI"):
            pytest.fail(str(unavailable))
        pytest.skip(str(unavailable))


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Playwright's Chromium, for the tests written against Playwright's own page."""
    with sync_playwright() as playwright:
        launched = started_or_skipped(lambda: launch_chromium(playwright))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[PlaywrightPage]:
    """A fresh browser context and page per test, sharing the one browser process."""
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session", params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Chromium, Firefox and WebKit in turn, each started once per run: a test that takes it (or
    `engine_page`) runs once per engine, with ids ``[chromium]``, ``[firefox]``, ``[webkit]``.
    Chromium is the ``browser`` fixture's process."""
    started: Engine
    if request.param == "chromium":
        started = ChromiumEngine(request.getfixturevalue("browser"))
    elif request.param == "firefox":
        started = started_or_skipped(FirefoxEngine.launch)
    else:
        started = started_or_skipped(WebKitEngine.launch)
    yield started
    started.close()


@pytest.fixture
def engine_page(engine: Engine) -> Iterator[EnginePage]:
    """A fresh blank page of the engine under test (a new context and tab where the engine has them)."""
    opened = engine.new_page()
    yield opened
    opened.close()


@pytest.fixture
def live_bridge(app: Flask) -> Iterator[LiveServer]:
    """The app under test on a real loopback port, for the browser to talk to."""
    server = LiveServer(app).start()
    yield server
    server.stop()


# --- Redis: one real redis-server for the session (tests that need their own start a RedisServer) ---


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()
