"""Each engine (Chromium, Firefox, WebKit), from a page on another origin: an allowed CORS read, a
refused origin in the engine's own words, a JSONP script tag, and the harness's own promises (init
scripts before page scripts, screenshots, the user agent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engines import ConsoleMessage, Engine, EvaluationError, Page
from tests.live import LiveServer
from tests.upstream_server import UpstreamServer

pytestmark = pytest.mark.browser

FETCH_JSON = """async url => {
  try { const response = await fetch(url); return {status: response.status, body: await response.json()}; }
  catch (error) { return {error: String(error)}; }
}"""

LOAD_SCRIPT = """url => new Promise((resolve, reject) => {
  window.cb = data => resolve(data);
  const script = document.createElement('script');
  script.src = url;
  script.onerror = () => reject(new Error('script failed'));
  document.head.appendChild(script);
})"""

# What fetch() rejects with when CORS refuses the answer: every engine words it differently.
FETCH_REFUSED = {
    "chromium": "TypeError: Failed to fetch",
    "firefox": "TypeError: NetworkError when attempting to fetch resource.",
    "webkit": "TypeError: Load failed",
}

# The console's account of an answer without Access-Control-Allow-Origin (the bridge's 403 for an
# origin it does not grant), exactly as each engine prints it.
MISSING_ALLOW_ORIGIN = {
    "chromium": ["Access to fetch at '{url}' from origin '{page}' has been blocked by CORS policy: "
                 "No 'Access-Control-Allow-Origin' header is present on the requested resource."],
    "firefox": ["Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote "
                "resource at {url}. (Reason: CORS header \u2018Access-Control-Allow-Origin\u2019 "
                "missing). Status code: 403."],
    "webkit": ["Origin {page} is not allowed by Access-Control-Allow-Origin. Status code: 403",
               "Fetch API cannot load {url} due to access control checks."],
}

USER_AGENT_MARK = {"chromium": "HeadlessChrome/", "firefox": "Gecko/20100101 Firefox/",
                   "webkit": "AppleWebKit/605.1.15"}


def text_is(text: str) -> Callable[[ConsoleMessage], bool]:
    return lambda message: message.text == text


def test_allowed_origin_reads_the_answer(engine_page: Page, page_origin: str, live_bridge: LiveServer,
                                         upstream: UpstreamServer) -> None:
    engine_page.goto(page_origin + "/")
    result = engine_page.evaluate(FETCH_JSON, f"{live_bridge.url}/cors/api/")
    assert result == {"status": 200, "body": {"index": True}}
    assert "origin" not in upstream.last().headers


def test_refused_origin_in_the_engines_own_words(engine: Engine, engine_page: Page, page_origin: str,
                                                 live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    refused_page = page_origin.replace("localhost", "127.0.0.1")  # not in allow_origins
    url = f"{live_bridge.url}/cors/api/"
    engine_page.goto(refused_page + "/")
    assert engine_page.evaluate(FETCH_JSON, url) == {"error": FETCH_REFUSED[engine.name]}
    for expected in MISSING_ALLOW_ORIGIN[engine.name]:
        assert engine_page.wait_console(text_is(expected.format(url=url, page=refused_page))).level == "error"
    assert upstream.count() == 0  # refused before the upstream was asked


def test_jsonp_script_tag(engine_page: Page, page_origin: str, live_bridge: LiveServer,
                          upstream: UpstreamServer) -> None:
    engine_page.goto(page_origin + "/")
    assert engine_page.evaluate(LOAD_SCRIPT, f"{live_bridge.url}/jsonp/api/?callback=cb") == {"index": True}


def test_init_script_runs_once_before_page_scripts_on_every_origin(engine_page: Page,
                                                                    page_origin: str) -> None:
    engine_page.add_init_script("window.initRuns = (window.initRuns || 0) + 1; delete window.fetch;")
    # The second origin is another site: WebKit swaps the web process for it.
    for origin in (page_origin, page_origin.replace("localhost", "127.0.0.1")):
        engine_page.goto(origin + "/")
        assert engine_page.evaluate("[window.initRuns, typeof fetch]") == [1, "undefined"]


def test_console_and_evaluation_errors(engine_page: Page, page_origin: str) -> None:
    engine_page.goto(page_origin + "/")
    engine_page.evaluate("() => console.warn('careful', 2)")
    message = engine_page.wait_console(text_is("careful 2"))
    assert message.level == "warning"
    engine_page.clear_console()
    assert engine_page.console_messages() == []
    with pytest.raises(EvaluationError, match="^RangeError: too far$"):
        engine_page.evaluate("async () => { throw new RangeError('too far'); }")


def test_screenshot_and_user_agent(engine: Engine, engine_page: Page, page_origin: str,
                                   tmp_path: Path) -> None:
    engine_page.goto(page_origin + "/")
    engine_page.screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert engine_page.evaluate("navigator.userAgent") == engine.user_agent
    assert USER_AGENT_MARK[engine.name] in engine.user_agent
