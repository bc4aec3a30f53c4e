"""/explain's prediction held to each engine: the same request made by a page in Chromium, Firefox
and WebKit, and every console line /explain predicts for that engine printed by it, word for word,
with the error the page's code caught.

Each case asks /explain with ``browser=ENGINE`` first, then makes the very request from a page on
the origin it names. URLs carry a fresh path per case, so no engine's preflight cache can carry an
answer from one case to the next. All three engines let the tests read their console (Chromium
through Playwright, Firefox through WebDriver BiDi, WebKit through its inspector protocol).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask

from tests.engines import ConsoleMessage, Engine, Page
from tests.live import LiveServer
from tests.test_explain import PUBLIC
from tests.upstream_server import UpstreamServer

pytestmark = pytest.mark.browser

FETCH = """async ([url, init]) => {
  try { const response = await fetch(url, init); return {status: response.status}; }
  catch (error) { return {error: String(error)}; }
}"""

_paths = itertools.count()


@pytest.fixture
def bridge(make_app: Callable[..., Flask], upstream: UpstreamServer) -> Iterator[LiveServer]:
    server = LiveServer(make_app(PUBLIC.format(url=upstream.url))).start()
    yield server
    server.stop()


# (name, api, page origin: "allowed" or "refused", fetch init, /explain parameters)
CASES = [
    ("origin-refused", "api", "refused", {}, {}),
    ("origin-refused-preflighted", "api", "refused", {"method": "PUT"}, {"method": "PUT"}),
    ("method-not-allowed", "api", "allowed", {"method": "DELETE"}, {"method": "DELETE"}),
    ("header-not-allowed", "api", "allowed", {"headers": {"X-Other": "1"}}, {"headers": "X-Other: 1"}),
    ("credentials-not-allowed", "api", "allowed", {"credentials": "include"},
     {"credentials": "include"}),
    ("credentials-with-wildcard", "public", "allowed", {"credentials": "include"},
     {"credentials": "include"}),
]


@pytest.mark.parametrize(("case", "api", "page", "init", "params"), CASES, ids=[c[0] for c in CASES])
def test_explain_predicts_what_the_engine_prints(engine: Engine, engine_page: Page, page_origin: str,
                                                 bridge: LiveServer, case: str, api: str, page: str,
                                                 init: dict[str, object], params: dict[str, str]) -> None:
    origin = page_origin if page == "allowed" else page_origin.replace("localhost", "127.0.0.1")
    path = f"{case}-{engine.name}-{next(_paths)}"
    url = f"{bridge.url}/cors/{api}/{path}"
    query = {"api": api, "path": path, "origin": origin, "browser": engine.name, **params}
    predicted = requests.get(f"{bridge.url}/explain?{urlencode(query)}", timeout=10).json()
    assert predicted["allowed"] is False and predicted["browser"] == engine.name
    lines = predicted["engines"][engine.name]["console"]
    assert lines and predicted["console"] == "\n".join(lines)

    engine_page.goto(origin + "/")
    outcome = engine_page.evaluate(FETCH, [url, init])
    assert outcome == {"error": predicted["page_error"]}, (case, outcome)
    for line in lines:
        printed = engine_page.wait_console(_text_is(line), timeout=10)
        assert printed.level == "error", (case, printed)


def _text_is(text: str) -> Callable[[ConsoleMessage], bool]:
    return lambda message: message.text == text


def test_an_allowed_request_prints_nothing_and_keeps_its_preflight_for_the_engines_cap(
        engine: Engine, engine_page: Page, page_origin: str, bridge: LiveServer) -> None:
    path = f"allowed-{engine.name}-{next(_paths)}"
    query = {"api": "api", "path": path, "origin": page_origin, "method": "PUT", "browser": engine.name}
    predicted = requests.get(f"{bridge.url}/explain?{urlencode(query)}", timeout=10).json()
    assert predicted["allowed"] and predicted["console"] is None
    assert predicted["preflight_cache_seconds"] == {"chromium": 600, "firefox": 600, "webkit": 600}[
        engine.name]  # the test config's max_age is 600, within every engine's cap
    engine_page.goto(page_origin + "/")
    outcome = engine_page.evaluate(FETCH, [f"{bridge.url}/cors/api/{path}", {"method": "PUT"}])
    assert "error" not in outcome, json.dumps(outcome)
    cors_lines = [m for m in engine_page.console_messages() if "CORS" in m.text or "access control"
                  in m.text or "Cross-Origin" in m.text]
    assert cors_lines == []
