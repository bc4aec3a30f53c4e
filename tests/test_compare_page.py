"""The comparison page in Chromium, Firefox and WebKit: each scenario, what the page shows, one
screenshot each per engine.

The page runs on its own origin (http://localhost:PORT) against the bridge (http://127.0.0.1:PORT),
with the real demo upstream behind it, so the browser's CORS enforcement is the real one. Where the
browser blocks, the console lines the page shows (from /explain, for the engine it runs in) must be
the ones that engine printed, and the other two engines' words are in a table beside them.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import create_app
from bridge.config import load_config, parse_config
from bridge.policy.engines import ENGINE_TITLES, PAGE_ERRORS
from bridge.site.demo import create_demo_app
from bridge.site.page import SCENARIOS, create_page_app
from tests.browser_fetch import BLOCKED
from tests.engines import Engine
from tests.engines import Page as EnginePage
from tests.live import LiveServer

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-results" / "screenshots"


def test_every_scenario_names_an_api_of_the_shipped_config() -> None:
    config = load_config(ROOT / "wsgi.ini", env={})
    assert {s.api for s in SCENARIOS} <= set(config.upstreams)
    page_origin = "http://127.0.0.1:8002"
    assert page_origin in config.cors.exact_origins
    assert page_origin not in config.upstreams["partner"].cors.exact_origins
    assert config.upstreams["public"].cors.allows_any_origin
    assert config.upstreams["slow"].timeout < 10  # the slow scenario asks the demo for 10 s


def test_the_page_carries_server_values_as_json(upstream: Any) -> None:
    config = parse_config(f"[upstream:demo]\nurl = {upstream.url}\n", env={})
    page = create_page_app(config, "http://bridge.example:8000/").test_client().get("/")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<script src="http://bridge.example:8000/legacy-client.js">' in text
    assert '"bridge": "http://bridge.example:8000"' in text
    assert '"id": "simple-get"' in text and '"id": "slow-timeout"' not in text  # no such api here


class Servers:
    def __init__(self) -> None:
        self.demo = LiveServer(create_demo_app()).start()
        self.page_app: Any = None
        self.page = LiveServer(lambda environ, start: self.page_app(environ, start)).start()
        self.page_url = f"http://localhost:{self.page.port}"
        url = self.demo.url + "/"
        config = parse_config(textwrap.dedent(f"""
            [cors]
            allow_origins = {self.page_url}
            allow_headers = Content-Type X-Requested-With
            [upstream:demo]
            url = {url}
            methods = GET HEAD PUT POST
            [upstream:partner]
            url = {url}
            allow_origins = https://partner.example.com
            [upstream:public]
            url = {url}
            allow_origins = *
            [upstream:slow]
            url = {url}
            timeout = 1
        """), source="page-test.ini", env={})
        self.bridge = LiveServer(create_app(config)).start()
        self.page_app = create_page_app(config, self.bridge.url)

    def stop(self) -> None:
        for server in (self.bridge, self.page, self.demo):
            server.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.stop()


def side(page: Any, name: str, row: str) -> str:
    text: str = page.locator(f"#{name} [data-row={row}]").inner_text()
    return text


def run_scenario(page: Any, servers: Servers, scenario_id: str) -> list[str]:
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if BLOCKED in m.text else None)
    page.goto(servers.page_url + "/")
    page.wait_for_selector("body[data-state=ready]")
    page.click(f"[data-scenario={scenario_id}]")
    page.wait_for_selector("body[data-state=done]", timeout=15000)
    return console


# scenario id: (CORS outcome, CORS status, JSONP outcome, JSONP status, preflight)
EXPECTED = {
    "simple-get": ("ok", "200", "ok", "200", False),
    "preflight-put": ("ok", "200", "refused", "none", True),
    "disallowed-origin": ("blocked", "none", "ok", "200", False),
    "upstream-404": ("http-error", "404", "http-error", "404", False),
    "slow-timeout": ("http-error", "504", "http-error", "504", False),
    "put-over-jsonp": ("ok", "200", "refused", "none", True),
    "credentials-wildcard": ("blocked", "none", "ok", "200", False),
}


def test_the_table_covers_every_scenario() -> None:
    assert set(EXPECTED) == {s.id for s in SCENARIOS}


STATE = """() => ({state: document.body.getAttribute('data-state'),
  cors: document.querySelector('#cors').getAttribute('data-outcome'),
  jsonp: document.querySelector('#jsonp').getAttribute('data-outcome'),
  rows: Object.fromEntries(['cors', 'jsonp'].map(side => [side, Object.fromEntries(
    Array.from(document.querySelectorAll('#' + side + ' [data-row]')).map(
      row => [row.getAttribute('data-row'), row.innerText]))])),
  engine: document.querySelector('#explain-engine').innerText,
  summary: document.querySelector('#explain-summary').innerText,
  shown: document.querySelector('#explain-error').hidden ? null
    : document.querySelector('#explain-error').innerText,
  others: document.querySelector('#explain-others').hidden ? null : Array.from(
    document.querySelectorAll('#explain-others tbody tr')).map(row => [row.getAttribute('data-engine'),
    row.cells[1].innerText, row.cells[2].innerText])})"""


def run_in(engine_page: EnginePage, servers: Servers, scenario_id: str) -> dict[str, Any]:
    """Load the page, press the scenario's button, and return what the page shows once done."""
    engine_page.goto(servers.page_url + "/")
    wait_state(engine_page, "ready")
    engine_page.evaluate(f"() => document.querySelector('[data-scenario={scenario_id}]').click()")
    return wait_state(engine_page, "done")


def wait_state(engine_page: EnginePage, state: str, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown: dict[str, Any] = engine_page.evaluate(STATE)
        if shown["state"] == state or time.monotonic() > deadline:
            assert shown["state"] == state, shown
            return shown
        time.sleep(0.05)


@pytest.mark.browser
@pytest.mark.parametrize("scenario_id", list(EXPECTED))
def test_scenario(engine: Engine, engine_page: EnginePage, servers: Servers, scenario_id: str) -> None:
    """Each scenario in Chromium, Firefox and WebKit: the same outcomes, and the page speaking the
    words of the engine it runs in, each line of which that engine printed."""
    cors, cors_status, jsonp, jsonp_status, preflight = EXPECTED[scenario_id]
    shown = run_in(engine_page, servers, scenario_id)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The viewport scrolled to the verdict: the engine's own words and the other two engines'.
    engine_page.evaluate("() => document.querySelector('#explain').scrollIntoView()")
    engine_page.screenshot(str(SCREENSHOTS / f"{engine.name}-{scenario_id}.png"))

    assert (shown["cors"], shown["jsonp"]) == (cors, jsonp)
    rows = shown["rows"]
    assert rows["cors"]["status"].startswith(cors_status)
    assert rows["jsonp"]["status"].startswith(jsonp_status)
    assert rows["cors"]["requests"].startswith("OPTIONS (preflight)") is preflight
    assert shown["summary"].startswith("CORS: allowed" if cors != "blocked" else "CORS: blocked")
    assert ("after a preflight" in shown["summary"]) is preflight
    assert shown["engine"].startswith(f"Your browser: {ENGINE_TITLES[engine.name]}")
    if cors == "blocked":
        # The page cannot read the console; it shows /explain's prediction for its own engine,
        # and the engine printed every line of it.
        heading = f"Console ({ENGINE_TITLES[engine.name]}): "
        assert shown["shown"].startswith(heading)
        lines, caught = shown["shown"][len(heading):].split("\nThe page's code catches: ")
        assert caught == PAGE_ERRORS[engine.name]
        for line in lines.split("\n"):
            engine_page.wait_console(lambda message, line=line: message.text == line, timeout=10)
        assert rows["cors"]["error"].startswith(PAGE_ERRORS[engine.name])
        others = {name: (error, text) for name, error, text in shown["others"]}
        assert set(others) == set(ENGINE_TITLES) - {engine.name}
        for name, (error, text) in others.items():
            assert error == PAGE_ERRORS[name] and text  # their words, from /explain
    else:
        assert shown["shown"] is None and shown["others"] is None
    if cors == "ok":
        assert "jsonp-cors-bridge" in rows["cors"]["cache"]  # Cache-Status is exposed
        assert "cache-status" in rows["cors"]["headers"]
    if jsonp == "refused":
        assert rows["jsonp"]["requests"].startswith("none")
        assert "JSONP can only GET" in rows["jsonp"]["error"]


@pytest.mark.browser
def test_phone_width_reads_in_one_column(browser: Any, servers: Servers) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    try:
        page = context.new_page()
        run_scenario(page, servers, "disallowed-origin")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "phone-disallowed-origin.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        cors = page.locator("#cors").bounding_box()
        jsonp = page.locator("#jsonp").bounding_box()
        assert jsonp["y"] >= cors["y"] + cors["height"]  # stacked, not squeezed side by side
    finally:
        context.close()
