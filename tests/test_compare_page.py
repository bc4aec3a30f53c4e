"""The comparison page in headless Chromium: each scenario, what the page shows, one screenshot each.

The page runs on its own origin (http://localhost:PORT) against the bridge (http://127.0.0.1:PORT),
with the real demo upstream behind it, so the browser's CORS enforcement is the real one. Where the
browser blocks, the console line the page shows (from /explain) must be the one Chromium printed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import create_app
from bridge.config import load_config, parse_config
from bridge.site.demo import create_demo_app
from bridge.site.page import SCENARIOS, create_page_app
from tests.browser_fetch import BLOCKED
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


@pytest.mark.browser
@pytest.mark.parametrize("scenario_id", list(EXPECTED))
def test_scenario(page: Any, servers: Servers, scenario_id: str) -> None:
    cors, cors_status, jsonp, jsonp_status, preflight = EXPECTED[scenario_id]
    console = run_scenario(page, servers, scenario_id)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{scenario_id}.png"), full_page=True)

    assert page.get_attribute("#cors", "data-outcome") == cors
    assert page.get_attribute("#jsonp", "data-outcome") == jsonp
    assert side(page, "cors", "status").startswith(cors_status)
    assert side(page, "jsonp", "status").startswith(jsonp_status)
    requests_row = side(page, "cors", "requests")
    assert requests_row.startswith("OPTIONS (preflight)") is preflight
    summary = page.inner_text("#explain-summary")
    assert summary.startswith("CORS: allowed" if cors != "blocked" else "CORS: blocked")
    assert ("after a preflight" in summary) is preflight
    shown = page.locator("#explain-error")
    if cors == "blocked":
        # The page cannot read the browser's console; it shows /explain's. They must be the same.
        assert len(console) == 1
        assert shown.inner_text() == "Console: " + console[0]
        assert side(page, "cors", "error").startswith("TypeError: Failed to fetch")
    else:
        assert console == [] and not shown.is_visible()
    if cors == "ok":
        assert "jsonp-cors-bridge" in side(page, "cors", "cache")  # Cache-Status is exposed
        assert "cache-status" in side(page, "cors", "headers")
    if jsonp == "refused":
        assert side(page, "jsonp", "requests").startswith("none")
        assert "JSONP can only GET" in side(page, "jsonp", "error")


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
