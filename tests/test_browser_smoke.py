"""Chromium, from a page on another origin, reads an allowed answer over CORS."""

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.browser


def test_cors_fetch_from_another_origin(page, page_origin: str, live_bridge: LiveServer,  # type: ignore[no-untyped-def]
                                        upstream) -> None:
    page.goto(page_origin + "/")
    result = page.evaluate("url => fetch(url).then(r => r.json())", f"{live_bridge.url}/cors/api/")
    assert result == {"index": True}
    assert "origin" not in upstream.last().headers  # the browser sent one; the bridge keeps it
