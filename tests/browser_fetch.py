"""Run one fetch() in the real browser and read what Chromium prints about it: the judge of verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BLOCKED = "has been blocked by CORS policy: "
FETCH_JS = """async ([url, init]) => {
  try { const r = await fetch(url, init); return {ok: true, status: r.status}; }
  catch (e) { return {ok: false, error: String(e)}; }
}"""


@dataclass
class BrowserOutcome:
    ok: bool
    status: int | None
    console: str | None  # Chromium's "Access to fetch at ... has been blocked by CORS policy: ..."


def browser_fetch(page: Any, page_url: str, url: str, method: str = "GET",
                  headers: dict[str, str] | None = None, credentials: str = "same-origin",
                  ) -> BrowserOutcome:
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text) if BLOCKED in m.text else None)
    if page.url.rstrip("/") != page_url.rstrip("/"):
        page.goto(page_url)
    init = {"method": method, "headers": headers or {}, "credentials": credentials}
    result = page.evaluate(FETCH_JS, [url, init])
    if not result["ok"] and not messages:
        # The console message and the rejection race; wait for the message rather than sleep.
        with page.expect_console_message(lambda m: BLOCKED in m.text, timeout=5000):
            pass
    return BrowserOutcome(result["ok"], result.get("status"), messages[-1] if messages else None)
