"""The CORS path in Chromium, Firefox and WebKit, from a page on another origin: credentials with
an exact origin, HEAD, a preflighted PUT with a custom header, and an upstream's 404 the page reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from tests.engines import Page
from tests.live import LiveServer
from tests.upstream_server import Reply, UpstreamServer

pytestmark = pytest.mark.browser

FETCH = """async ([url, init]) => {
  try {
    const response = await fetch(url, init);
    const text = await response.text();
    return {status: response.status, text: text, cache: response.headers.get('Cache-Status'),
            etag: response.headers.get('ETag')};
  } catch (error) { return {error: String(error)}; }
}"""


@pytest.fixture
def credentialed_bridge(make_app: Callable[..., Flask], upstream: UpstreamServer,
                        page_origin: str) -> Iterator[LiveServer]:
    """An upstream granting credentials to the page's exact origin only."""
    app = make_app(f"[upstream:private]\nurl = {upstream.url}\nallow_origins = {page_origin}\n"
                   "allow_credentials = true\n")
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_credentials_with_an_exact_origin_are_read(engine_page: Page, page_origin: str,
                                                   credentialed_bridge: LiveServer,
                                                   upstream: UpstreamServer) -> None:
    upstream.route("/me", Reply(200, {"me": True}))
    engine_page.goto(page_origin + "/")
    got = engine_page.evaluate(FETCH, [f"{credentialed_bridge.url}/cors/private/me",
                                       {"credentials": "include"}])
    assert got["status"] == 200 and got["text"] == '{"me": true}'
    assert "cookie" not in upstream.last().headers  # the bridge never passes the page's cookies


def test_head_and_a_preflighted_put_and_an_upstream_404(engine_page: Page, page_origin: str,
                                                        live_bridge: LiveServer,
                                                        upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers={"ETag": '"e1"'}))
    upstream.route("/put", lambda seen: Reply(200, {"got": seen.body.decode(),
                                                    "custom": seen.headers.get("x-custom")}))
    engine_page.goto(page_origin + "/")
    base = f"{live_bridge.url}/cors/api"
    head = engine_page.evaluate(FETCH, [f"{base}/items", {"method": "HEAD"}])
    assert head["status"] == 200 and head["text"] == "" and head["etag"] == '"e1"'
    assert head["cache"].startswith("jsonp-cors-bridge;")  # exposed to the page
    put = engine_page.evaluate(FETCH, [f"{base}/put", {"method": "PUT", "body": '{"a":1}', "headers": {
        "Content-Type": "application/json", "X-Custom": "yes"}}])
    # The preflight granted X-Custom (allow_headers); the bridge forwards only forward_headers.
    assert put["status"] == 200 and put["text"] == '{"got": "{\\"a\\":1}", "custom": null}'
    missing = engine_page.evaluate(FETCH, [f"{base}/missing", {}])
    assert missing["status"] == 404  # the upstream's own status, readable over CORS


@pytest.fixture
def extension_bridge(make_app: Callable[..., Flask], upstream: UpstreamServer) -> Iterator[LiveServer]:
    """An upstream that takes the extension method M-SEARCH."""
    server = LiveServer(make_app(f"[upstream:dav]\nurl = {upstream.url}\nmethods = GET M-SEARCH\n")).start()
    yield server
    server.stop()


def test_an_extension_method_is_preflighted_and_its_case_is_kept(
        engine_page: Page, page_origin: str, extension_bridge: LiveServer,
        upstream: UpstreamServer) -> None:
    """M-SEARCH is preflighted, granted and forwarded; ``m-search`` reaches the bridge as written
    (fetch upper-cases only DELETE, GET, HEAD, OPTIONS, POST and PUT), and the engine refuses it
    against the granted ``M-SEARCH``: method names are case-sensitive."""
    upstream.route("/devices", lambda seen: Reply(200, {"method": seen.method}))
    engine_page.goto(page_origin + "/")
    url = f"{extension_bridge.url}/cors/dav/devices"
    found = engine_page.evaluate(FETCH, [url, {"method": "M-SEARCH"}])
    assert found["status"] == 200 and found["text"] == '{"method": "M-SEARCH"}'
    asked = upstream.count()
    lower = engine_page.evaluate(FETCH, [url, {"method": "m-search"}])
    assert "error" in lower, lower  # refused by the engine after the preflight
    assert upstream.count() == asked  # and never forwarded
