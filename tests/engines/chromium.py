"""Debian's Chromium (``/usr/bin/chromium``, never a browser build Playwright would download) behind
the common `Engine` interface, over Playwright's sync API.

The suite's Playwright fixtures (``browser``, ``page``) launch Chromium with `launch_chromium`, and
the engine wraps that same browser, so one Chromium process serves both kinds of test. Console
messages are read from a CDP session of the page's own, because CDP says where each came from
(``javascript``, ``network``) and Playwright's console event does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, CDPSession, Playwright
from playwright.sync_api import Error as PlaywrightError

from tests.engines.base import (
    COMMAND_TIMEOUT,
    ConsoleMessage,
    Engine,
    EngineUnavailable,
    EvaluationError,
    Page,
    console_level,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Chromium from Debian's package, with the flags that keep it off the network."""
    if not Path(CHROMIUM).exists():
        raise EngineUnavailable(ChromiumEngine.name, "chromium", f"{CHROMIUM} is missing")
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except PlaywrightError as failure:
        raise EngineUnavailable(ChromiumEngine.name, "chromium", failure.message) from failure


class ChromiumEngine(Engine):
    """Pages in a running Playwright `Browser`, each in a browser context of its own.

    Quirks:
    - The engine does not own the browser: `close` closes its pages, the browser stays with
      whoever launched it (the session's ``browser`` fixture).
    - Playwright's sync API delivers events only while it runs, so `wait_console` waits with
      ``page.wait_for_timeout`` rather than on a condition.
    - `evaluate` is Playwright's own, so it also takes a list of statements, which the other engines
      refuse: write an expression or a function.
    """

    name = "chromium"

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self._pages: list[ChromiumPage] = []
        probe = browser.new_context()
        self.user_agent = probe.new_page().evaluate("navigator.userAgent")
        probe.close()

    def new_page(self) -> ChromiumPage:
        page = ChromiumPage(self)
        self._pages.append(page)
        return page

    def forget(self, page: ChromiumPage) -> None:
        self._pages.remove(page)

    def close(self) -> None:
        for page in list(self._pages):
            page.close()


class ChromiumPage(Page):
    """A Playwright page in a fresh browser context: cookies, storage and cache of its own."""

    def __init__(self, engine: ChromiumEngine) -> None:
        super().__init__()
        self._engine = engine
        self._context = engine.browser.new_context()
        self._context.set_default_timeout(COMMAND_TIMEOUT * 1000)
        self.playwright_page = self._context.new_page()
        self._cdp: CDPSession = self._context.new_cdp_session(self.playwright_page)
        self._cdp.on("Log.entryAdded", self._on_log_entry)
        self._cdp.on("Runtime.consoleAPICalled", self._on_console_call)
        self._cdp.send("Log.enable")
        self._cdp.send("Runtime.enable")

    def _on_log_entry(self, params: dict[str, Any]) -> None:
        entry = params["entry"]
        self._console.add(ConsoleMessage(console_level(entry["level"]), entry["text"], entry["source"]))

    def _on_console_call(self, params: dict[str, Any]) -> None:
        text = " ".join(str(argument["value"]) if "value" in argument else argument.get("description", "")
                        for argument in params["args"])
        self._console.add(ConsoleMessage(console_level(params["type"]), text, "console-api"))

    def goto(self, url: str) -> None:
        self.playwright_page.goto(url, wait_until="load")

    def evaluate(self, source: str, arg: Any = None) -> Any:
        try:
            return self.playwright_page.evaluate(source, arg)
        except PlaywrightError as error:
            # "Page.evaluate: TypeError: boom\n    at ...": the page's own words, as the others give them
            raise EvaluationError(error.message.removeprefix("Page.evaluate: ").split("\n    at ")[0]) \
                from error

    def add_init_script(self, source: str) -> None:
        self.playwright_page.add_init_script(source)

    def screenshot(self, path: str) -> None:
        self.playwright_page.screenshot(path=path)

    def _wait_for_events(self, seconds: float) -> None:
        self.playwright_page.wait_for_timeout(seconds * 1000)

    def close(self) -> None:
        self._engine.forget(self)
        self._context.close()
