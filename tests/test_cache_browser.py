"""Chromium, Firefox and WebKit: a page's fetch and a JSONP script tag for one resource are one
upstream request."""

import pytest

from tests.live import LiveServer
from tests.upstream_server import Reply, UpstreamServer

pytestmark = pytest.mark.browser


def test_fetch_then_script_tag_share_one_entry(engine_page, page_origin: str,  # type: ignore[no-untyped-def]
                                               live_bridge: LiveServer,
                                               upstream: UpstreamServer) -> None:
    page = engine_page
    upstream.route("/shared", Reply(200, {"shared": [1, 2]}, headers={"ETag": '"s1"'}))
    page.goto(page_origin + "/")
    fetched = page.evaluate("""async url => {
        const response = await fetch(url);
        return {body: await response.json(), status: response.headers.get('Cache-Status'),
                etag: response.headers.get('ETag')};
    }""", f"{live_bridge.url}/cors/api/shared?b=2&a=1")
    assert fetched == {"body": {"shared": [1, 2]}, "etag": '"s1"',
                       "status": "jsonp-cors-bridge; fwd=uri-miss; stored; ttl=60"}
    loaded = page.evaluate("""url => new Promise((resolve, reject) => {
        window.cb = data => resolve(data);
        const script = document.createElement('script');
        script.src = url;
        script.onerror = () => reject(new Error('script failed'));
        document.head.appendChild(script);
    })""", f"{live_bridge.url}/jsonp/api/shared?b=2&callback=cb&a=1&_=1700000000")
    assert loaded == {"shared": [1, 2]}
    assert upstream.count("/shared") == 1
    # The fetch asked (its */* sent as the JSON it takes); the script tag was a hit.
    assert upstream.last().headers["accept"] == "application/json"
    assert upstream.last().raw_path == "/shared?b=2&a=1"
