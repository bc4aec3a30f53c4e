"""JSONP on a cross-origin isolated page, in Chromium, Firefox and WebKit.

A page that sends ``Cross-Origin-Embedder-Policy: require-corp`` loads a cross-origin script only
if the answer says ``Cross-Origin-Resource-Policy: cross-origin``; the bridge's JSONP answers do
(the data is public by design), its envelope-mode refusals too. The control: a script from the
bridge without that header (``/legacy-client.js``) is blocked on the same page, so the page really
is isolated.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engines import Page
from tests.live import LiveServer
from tests.upstream_server import UpstreamServer

pytestmark = pytest.mark.browser

LOAD = """url => new Promise(resolve => {
  window.cb = data => resolve({data});
  const script = document.createElement('script');
  script.src = url;
  script.onerror = () => resolve({blocked: true});
  document.head.appendChild(script);
})"""


def _isolated_page(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Cross-Origin-Embedder-Policy", "require-corp"),
                              ("Cross-Origin-Opener-Policy", "same-origin")])
    return [b"<!doctype html><meta charset=utf-8><title>isolated</title>"]


@pytest.fixture(scope="module")
def isolated_origin() -> Iterator[str]:
    server = LiveServer(_isolated_page).start()
    yield f"http://localhost:{server.port}"
    server.stop()


def test_jsonp_loads_on_a_page_that_requires_corp(engine_page: Page, isolated_origin: str,
                                                  live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    engine_page.goto(isolated_origin + "/")
    assert engine_page.evaluate("crossOriginIsolated") is True
    assert engine_page.evaluate(LOAD, f"{live_bridge.url}/jsonp/api/?callback=cb") == {
        "data": {"index": True}}
    refused = engine_page.evaluate(LOAD, f"{live_bridge.url}/jsonp/nope/?callback=cb&envelope=1")
    assert refused["data"]["status"] == 404  # an envelope refusal is a script that runs, here too
    assert engine_page.evaluate(LOAD, f"{live_bridge.url}/legacy-client.js") == {"blocked": True}
