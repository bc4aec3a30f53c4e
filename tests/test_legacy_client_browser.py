"""legacy-client.js in Chromium, Firefox and WebKit, loaded from the live bridge into a page on
another origin: every test runs in each engine (``page`` is the engine's page here).

Old browsers are simulated with init scripts that run before any page script: ``NO_CORS`` takes away
XMLHttpRequest level 2 (its ``withCredentials``) and ``fetch``, as in IE6-7; ``XDR_SHIM`` does the
same and adds a stand-in ``XDomainRequest`` built on a real XHR with IE8/9's surface and limits, to
prove the library's XDR path logic (the real one only exists in IE, which this machine cannot run).
What the page requested from the bridge is recorded by the bridge's server (not by a browser's
network events, which only Playwright has), and the page's uncaught errors by an init script.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.policy.jsonp import callback_problem
from tests.engines import Page
from tests.live import LiveServer, RequestLog
from tests.upstream_server import Reply, UpstreamServer


@pytest.fixture
def app(make_app: Any) -> Any:
    """The bridge with caching off: these tests compare what each transport sends upstream, so every
    call must reach it. That CORS and JSONP share one cache entry is tests/test_cache_browser.py's."""
    return make_app(extra="[cache]\nttl = 0\n")

pytestmark = pytest.mark.browser


@pytest.fixture
def page(engine_page: Page) -> Page:
    """This module's tests run in every engine: the engine's page, not Playwright's."""
    return engine_page


@pytest.fixture
def live_bridge(app: Any) -> Any:
    log = RequestLog(app)
    server = log.serve()
    server.requests = log  # type: ignore[attr-defined]
    yield server
    server.stop()


# Uncaught errors and unhandled rejections of the page's own scripts (a script tag that fails to
# load fires its own error event, which does not reach window's).
ERRORS = """(() => {
  window.__pageErrors = [];
  window.addEventListener('error', e => { if (e.error !== undefined || e.message) {
    window.__pageErrors.push(String(e.message)); } });
  window.addEventListener('unhandledrejection', e => window.__pageErrors.push('unhandled: ' + e.reason));
})();"""

LOAD_LIBRARY = """url => new Promise((resolve, reject) => {
  const script = document.createElement('script');
  script.src = url;
  script.onload = () => resolve(true);
  script.onerror = () => reject(new Error('legacy-client.js did not load'));
  document.head.appendChild(script);
})"""


class Seen:
    """``seen["bridge"]``: the urls requested from the bridge; ``seen["errors"]``: the page's errors."""

    def __init__(self, page: Page, bridge: LiveServer) -> None:
        self.page = page
        self.bridge = bridge

    def __getitem__(self, key: str) -> list:
        if key == "bridge":
            return self.bridge.requests.urls()  # type: ignore[attr-defined, no-any-return]
        return list(self.page.evaluate("window.__pageErrors"))


def wait_until(page: Page, expression: str, arg: Any = None, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"{expression} within {seconds}s"
        time.sleep(0.05)

# Runs requests one after another in the page; returns [{err, res}] as plain data.
RUN = """async ([base, calls]) => {
  const plain = (err, res) => ({
    err: err ? {type: err.type, status: err.status, message: err.message, transport: err.transport,
                data: err.data === undefined ? '<undefined>' : err.data} : null,
    res: res ? {status: res.status, data: res.data, transport: res.transport, headers: res.headers}
             : null});
  const out = [];
  for (const call of calls) {
    const client = LegacyBridge.create(Object.assign({base: base}, call.client || {}));
    out.push(await new Promise(resolve =>
      client.request(call.request, (err, res) => resolve(plain(err, res)))));
  }
  return out;
}"""

# IE6/7 (and any browser without CORS): XMLHttpRequest without level 2, no fetch, no XDomainRequest.
NO_CORS = """(() => {
  // The library only probes for 'withCredentials'; an XHR level 1 constructor is all it may see.
  window.XMLHttpRequest = function XMLHttpRequestLevel1() {};
  delete window.fetch;
})();"""

# IE8/9: no XHR2, no fetch, and XDomainRequest. A shim on a real XHR with XDR's surface and limits:
# GET/POST only, the page's scheme only, no request headers (no setRequestHeader at all), text/plain
# bodies, and no status: a non-2xx answer is reported as onerror, exactly as XDR does.
XDR_SHIM = """(() => {
  const RealXHR = window.XMLHttpRequest;
  window.__xdr = [];
  function XDomainRequest() { this.responseText = ''; this.contentType = ''; this.timeout = 0; }
  XDomainRequest.prototype.open = function (method, url) {
    if (method !== 'GET' && method !== 'POST') { throw new Error('Invalid argument.'); }
    if (new URL(url, location.href).protocol !== location.protocol) { throw new Error('Access is denied.'); }
    this._xhr = new RealXHR();
    this._xhr.open(method, url, true);
    window.__xdr.push(method + ' ' + url);
  };
  XDomainRequest.prototype.send = function (body) {
    const self = this, xhr = this._xhr;
    if (body) { xhr.setRequestHeader('Content-Type', 'text/plain'); }
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        self.responseText = xhr.responseText;
        self.contentType = xhr.getResponseHeader('Content-Type') || '';
        self.onload();
      } else {
        self.onerror();
      }
    };
    xhr.onerror = () => self.onerror();
    xhr.send(body || null);
  };
  XDomainRequest.prototype.abort = function () { if (this._xhr) { this._xhr.abort(); } };
  window.XDomainRequest = XDomainRequest;
  window.XMLHttpRequest = function XMLHttpRequestLevel1() {};
  delete window.fetch;
})();"""


def open_page(page: Page, page_origin: str, bridge: LiveServer, init: str | None = None) -> Seen:
    """Load a blank page on the page origin, then the library by a script tag from the bridge.

    Returns what fills as the page runs: page errors and the URLs requested from the bridge.
    """
    page.add_init_script(ERRORS + "\n" + (init or ""))
    page.goto(page_origin + "/")
    page.evaluate(LOAD_LIBRARY, bridge.url + "/legacy-client.js")
    assert page.evaluate("typeof LegacyBridge.create") == "function"
    return Seen(page, bridge)


def run(page: Page, bridge: LiveServer, *calls: dict) -> list[dict]:
    return page.evaluate(RUN, [bridge.url, list(calls)])


def callback_names(urls: list[str]) -> list[str]:
    return [parse_qs(urlsplit(url).query)["callback"][0] for url in urls if "/jsonp/" in url]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the same answer over every transport ---

SAME_ANSWER_CASES = [
    pytest.param("/things/1", Reply(200, {"id": 1, "text": "</script><!-- & \u2028 ü 😀", "n": 1.5e3}),
                 {"q": "a b&c", "many": ["1", "2"]}, id="object-with-hostile-text"),
    pytest.param("/list", Reply(200, [1, "two", None, True, {"deep": [[[]]]}]), {}, id="array"),
    pytest.param("/missing", Reply(404, {"error": "not_here", "message": "no such thing"}), {},
                 id="upstream-404"),
    pytest.param("/down", Reply(503, {"down": True}), {"retry": "no"}, id="upstream-503"),
    pytest.param("/empty", Reply(204), {}, id="empty-204"),
]


@pytest.mark.parametrize(("path", "reply", "params"), SAME_ANSWER_CASES)
def test_same_status_and_data_over_cors_and_jsonp(page: Page, page_origin: str, live_bridge: LiveServer,
                                                  upstream: UpstreamServer, path: str, reply: Reply,
                                                  params: dict) -> None:
    upstream.route(path, reply)
    seen = open_page(page, page_origin, live_bridge)
    request = {"api": "api", "path": path, "params": params}
    cors, jsonp = run(page, live_bridge, {"request": {**request, "transport": "cors"}},
                      {"request": {**request, "transport": "jsonp"}})
    expected_data = reply.body  # None for the empty 204: JSON null on both
    for outcome, transport in ((cors, "cors"), (jsonp, "jsonp")):
        assert outcome["res"]["transport"] == transport
        assert outcome["res"]["status"] == reply.status
        assert outcome["res"]["data"] == expected_data
        if 200 <= reply.status < 300:
            assert outcome["err"] is None
        else:
            assert outcome["err"]["type"] == "http"
            assert outcome["err"]["status"] == reply.status
            assert outcome["err"]["data"] == expected_data
    if reply.body is not None:
        assert cors["res"]["headers"]["content-type"] == jsonp["res"]["headers"]["content-type"]
    # The upstream saw the same request both times: JSONP's control parameters never reach it.
    assert upstream.count(path) == 2
    first, second = (s for s in upstream.seen if s.path == path)
    assert first.query == second.query == [(k, v) for k, vs in params.items()
                                           for v in (vs if isinstance(vs, list) else [vs])]
    names = callback_names(seen["bridge"])
    assert len(names) == 1 and callback_problem(names[0]) is None
    assert seen["errors"] == []


def test_bridge_errors_carry_status_on_cors_and_jsonp(page: Page, page_origin: str, live_bridge: LiveServer,
                                                      upstream: UpstreamServer) -> None:
    open_page(page, page_origin, live_bridge)
    calls = [{"request": {"api": api, "path": "x", "transport": transport}}
             for api in ("no-such-api", "closed") for transport in ("cors", "jsonp")]
    unknown_cors, unknown_jsonp, closed_cors, closed_jsonp = run(page, live_bridge, *calls)
    for outcome in (unknown_cors, unknown_jsonp):
        assert outcome["err"]["type"] == "http" and outcome["err"]["status"] == 404
        assert outcome["res"]["data"]["error"] == "unknown_api"
    assert unknown_cors["res"]["data"] == unknown_jsonp["res"]["data"]
    assert closed_cors["err"]["status"] == 404  # the upstream's own 404 for /x, over CORS
    assert closed_jsonp["err"]["type"] == "http" and closed_jsonp["err"]["status"] == 403
    assert closed_jsonp["res"]["data"]["error"] == "jsonp_disabled"
    assert "403" in closed_jsonp["err"]["message"] and "JSONP is turned off" in closed_jsonp["err"]["message"]


def test_non_json_answer_is_a_parse_error_over_cors_and_a_502_over_jsonp(
        page: Page, page_origin: str, live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    upstream.route("/text", Reply(200, "plain words", headers={"Content-Type": "text/plain"}))
    open_page(page, page_origin, live_bridge)
    cors, jsonp = run(page, live_bridge, {"request": {"api": "api", "path": "text", "transport": "cors"}},
                      {"request": {"api": "api", "path": "text", "transport": "jsonp"}})
    assert cors["err"]["type"] == "parse" and cors["err"]["status"] == 200
    assert jsonp["err"]["type"] == "http" and jsonp["err"]["status"] == 502


# --- 'auto' and old browsers ---


def test_auto_uses_cors_where_the_browser_has_it(page: Page, page_origin: str, live_bridge: LiveServer,
                                                 upstream: UpstreamServer) -> None:
    seen = open_page(page, page_origin, live_bridge)
    assert page.evaluate("LegacyBridge.create({base: 'x'}).detect()") == "cors"
    (outcome,) = run(page, live_bridge, {"request": {"api": "api", "path": ""}})
    assert outcome["res"] == {"status": 200, "data": {"index": True}, "transport": "cors",
                              "headers": outcome["res"]["headers"]}
    assert [url for url in seen["bridge"] if "/cors/" in url] == [live_bridge.url + "/cors/api/"]


def test_auto_picks_jsonp_without_cors(page: Page, page_origin: str, live_bridge: LiveServer,
                                       upstream: UpstreamServer) -> None:
    upstream.route("/things", Reply(200, {"things": [1, 2]}))
    seen = open_page(page, page_origin, live_bridge, NO_CORS)
    assert page.evaluate("[typeof window.fetch, 'withCredentials' in new XMLHttpRequest(), "
                         "typeof window.XDomainRequest]") == ["undefined", False, "undefined"]
    assert page.evaluate("LegacyBridge.create({base: 'x'}).detect()") == "jsonp"
    ok, missing = run(page, live_bridge, {"request": {"api": "api", "path": "things", "params": {"a": "1"}}},
                      {"request": {"api": "api", "path": "nothing-here"}})
    assert ok["err"] is None
    assert ok["res"]["transport"] == "jsonp" and ok["res"]["status"] == 200
    assert ok["res"]["data"] == {"things": [1, 2]}
    assert missing["res"]["transport"] == "jsonp" and missing["err"]["status"] == 404
    assert not [url for url in seen["bridge"] if "/cors/" in url]
    assert upstream.last().query == []  # the second call's; the first carried only a=1:
    assert next(s for s in upstream.seen if s.path == "/things").query == [("a", "1")]
    assert seen["errors"] == []


def test_xdomainrequest_path(page: Page, page_origin: str, live_bridge: LiveServer,
                             upstream: UpstreamServer) -> None:
    upstream.route("/ok", Reply(200, {"via": "xdr"}))
    upstream.route("/missing", Reply(404, {"error": "gone"}))
    upstream.route("/echo", lambda seen: Reply(200, {"got": seen.body.decode(),
                                                      "type": seen.headers.get("content-type")}))
    upstream.route("/broken", Reply(500, {"error": "boom"}))
    seen = open_page(page, page_origin, live_bridge, XDR_SHIM)
    assert page.evaluate("LegacyBridge.create({base: 'x'}).detect()") == "xdr"
    get_ok, get_missing, post, post_broken, put, with_headers = run(
        page, live_bridge,
        {"request": {"api": "api", "path": "ok"}},
        {"request": {"api": "api", "path": "missing"}},
        {"request": {"api": "api", "path": "echo", "method": "POST", "body": {"a": [1, "é"]}}},
        {"request": {"api": "api", "path": "broken", "method": "POST", "body": "x"}},
        {"request": {"api": "api", "path": "ok", "method": "PUT", "body": "x"}},
        {"request": {"api": "api", "path": "ok", "headers": {"X-Custom": "1"}}})
    assert get_ok["err"] is None
    assert get_ok["res"] == {"status": 200, "data": {"via": "xdr"}, "transport": "xdr",
                             "headers": {"content-type": "application/json"}}
    # XDR hides the 404; the library asks once more over JSONP, which shows it.
    assert get_missing["err"]["type"] == "http" and get_missing["err"]["status"] == 404
    assert get_missing["res"]["transport"] == "jsonp" and get_missing["res"]["data"] == {"error": "gone"}
    assert post["err"] is None and post["res"]["transport"] == "xdr"
    assert post["res"]["data"] == {"got": '{"a":[1,"é"]}', "type": "text/plain"}
    # A failed POST cannot be asked again: XDR cannot tell an HTTP error from a network one.
    assert post_broken["err"]["type"] == "network" and post_broken["err"]["status"] == 0
    assert "XDomainRequest" in post_broken["err"]["message"]
    assert put["err"]["type"] == "method" and "PUT" in put["err"]["message"]
    assert with_headers["err"]["type"] == "method" and "headers" in with_headers["err"]["message"]
    assert page.evaluate("window.__xdr") == [
        f"GET {live_bridge.url}/cors/api/ok", f"GET {live_bridge.url}/cors/api/missing",
        f"POST {live_bridge.url}/cors/api/echo", f"POST {live_bridge.url}/cors/api/broken"]
    assert upstream.count("/broken") == 1 and upstream.count("/missing") == 2
    assert seen["errors"] == []


def test_forced_xdr_refuses_another_scheme(page: Page, page_origin: str, live_bridge: LiveServer,
                                           upstream: UpstreamServer) -> None:
    seen = open_page(page, page_origin, live_bridge, XDR_SHIM)
    https_base = live_bridge.url.replace("http://", "https://")
    (outcome,) = page.evaluate(RUN, [https_base, [{"request": {"api": "api", "transport": "xdr"}}]])
    assert outcome["err"]["type"] == "method" and "scheme" in outcome["err"]["message"]
    assert page.evaluate("window.__xdr") == []
    assert [url for url in seen["bridge"] if "/api/" in url] == []


# --- refusals before the network ---

REFUSED_BEFORE_THE_NETWORK = [
    pytest.param({"method": "PUT", "body": "x", "transport": "jsonp"}, "JSONP can only GET",
                 id="put-jsonp"),
    pytest.param({"method": "POST", "body": "x", "transport": "jsonp"}, "JSONP can only GET",
                 id="post-jsonp"),
    pytest.param({"method": "delete", "transport": "jsonp"}, "JSONP can only GET", id="delete-lowercase"),
    pytest.param({"method": "HEAD", "transport": "jsonp"}, "JSONP can only GET", id="head-jsonp"),
    pytest.param({"headers": {"X-Custom": "1"}, "transport": "jsonp"}, "headers", id="headers-jsonp"),
    pytest.param({"body": {"a": 1}, "transport": "jsonp"}, "body", id="body-jsonp"),
    pytest.param({"params": {"callback": "evil"}, "transport": "jsonp"}, "'callback' is reserved",
                 id="callback-param"),
    pytest.param({"params": {"envelope": "0"}, "transport": "jsonp"}, "'envelope' is reserved",
                 id="envelope-param"),
    pytest.param({"method": "PUT", "transport": "xdr"}, "no XDomainRequest", id="xdr-absent"),
]


@pytest.mark.parametrize(("request_options", "message"), REFUSED_BEFORE_THE_NETWORK)
def test_refused_before_the_network(page: Page, page_origin: str, live_bridge: LiveServer,
                                    upstream: UpstreamServer, request_options: dict, message: str) -> None:
    seen = open_page(page, page_origin, live_bridge)
    before = list(seen["bridge"])
    refused, allowed = run(page, live_bridge, {"request": {"api": "api", "path": "", **request_options}},
                           {"request": {"api": "api", "path": "", "transport": "jsonp"}})
    assert refused["err"]["type"] == "method"
    assert message in refused["err"]["message"]
    assert refused["res"] is None
    # The follow-up GET shows the request log works: it holds that one request and nothing else.
    assert allowed["err"] is None
    assert [url.split("?")[0] for url in seen["bridge"][len(before):]] == [live_bridge.url + "/jsonp/api/"]
    assert upstream.count() == 1


def test_refusal_is_asynchronous(page: Page, page_origin: str, live_bridge: LiveServer) -> None:
    open_page(page, page_origin, live_bridge)
    order = page.evaluate("""base => new Promise(resolve => {
        const order = [];
        LegacyBridge.create({base: base}).request({api: 'api', method: 'PUT', transport: 'jsonp'},
            err => { order.push('callback:' + err.type); resolve(order); });
        order.push('returned');
    })""", live_bridge.url)
    assert order == ["returned", "callback:method"]


# --- timeouts and failures ---


def test_jsonp_timeout_cleans_up_and_a_late_answer_does_not_throw(
        page: Page, page_origin: str, live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    upstream.route("/slow", Reply(200, {"late": True}, delay=0.8))
    seen = open_page(page, page_origin, live_bridge)
    state = page.evaluate("""base => new Promise(resolve => {
            window.__calls = 0;
            LegacyBridge.create({base: base, timeout: 150}).request(
                {api: 'api', path: 'slow', transport: 'jsonp'}, function (err, res) {
                    window.__calls += 1;
                    resolve({type: err && err.type, transport: err && err.transport, res: res || null,
                             scripts: document.querySelectorAll('script[src*="/jsonp/"]').length,
                             handlers: Object.keys(window).filter(k => k.indexOf('LegacyBridge_cb') === 0)
                                 .map(k => String(window[k]))});
                });
        })""", live_bridge.url)
    assert state["type"] == "timeout" and state["transport"] == "jsonp" and state["res"] is None
    assert state["scripts"] == 0  # the script tag is gone at once
    # What is left under the name is a no-op that removes itself: the request's handler is gone.
    assert len(state["handlers"]) == 1 and "settle" not in state["handlers"][0]
    (name,) = callback_names(seen["bridge"])
    # The late answer arrives, runs the no-op, and the global goes with it; nothing throws.
    wait_until(page, "name => !(name in window)", name)
    assert page.evaluate("window.__calls") == 1
    assert seen["errors"] == []


def test_cors_timeout(page: Page, page_origin: str, live_bridge: LiveServer,
                     upstream: UpstreamServer) -> None:
    upstream.route("/slow", Reply(200, {"late": True}, delay=0.8))
    open_page(page, page_origin, live_bridge)
    (outcome,) = run(page, live_bridge, {"client": {"timeout": 150},
                                         "request": {"api": "api", "path": "slow", "transport": "cors"}})
    assert outcome["err"]["type"] == "timeout" and outcome["err"]["transport"] == "cors"
    assert outcome["err"]["status"] == 0 and outcome["res"] is None


def test_unreachable_bridge_is_a_network_error(page: Page, page_origin: str, live_bridge: LiveServer) -> None:
    seen = open_page(page, page_origin, live_bridge)
    dead = f"http://127.0.0.1:{closed_port()}"
    outcomes = page.evaluate(RUN, [dead, [{"request": {"api": "api", "transport": "jsonp"}},
                                          {"request": {"api": "api", "transport": "cors"}}]])
    for outcome, transport in zip(outcomes, ("jsonp", "cors"), strict=True):
        assert outcome["err"]["type"] == "network" and outcome["err"]["transport"] == transport
        assert outcome["err"]["status"] == 0
    assert page.evaluate("Object.keys(window).filter(k => k.indexOf('LegacyBridge_cb') === 0)") == []
    assert page.evaluate("document.querySelectorAll('script[src*=\"/jsonp/\"]').length") == 0
    assert seen["errors"] == []


# --- the API's other forms ---


def test_promise_form_get_shorthand_and_concurrent_jsonp(page: Page, page_origin: str,
                                                        live_bridge: LiveServer,
                                                        upstream: UpstreamServer) -> None:
    for n in range(3):
        upstream.route(f"/n/{n}", Reply(200, {"n": n}))
    seen = open_page(page, page_origin, live_bridge)
    result = page.evaluate("""base => {
        const client = LegacyBridge.create({base: base + '/', transport: 'jsonp'});
        const viaCallback = new Promise(resolve => client.get('api', 'n/0', (err, res) => resolve(res.data)));
        return Promise.all([viaCallback, client.get('api', 'n/1', {}).then(res => res.data),
                            client.request({api: 'api', path: '/n/2'}).then(res => res.data),
                            client.get('nope', '').then(() => 'resolved',
                                                        err => err.type + ' ' + err.status)]);
    }""", live_bridge.url)
    assert result == [{"n": 0}, {"n": 1}, {"n": 2}, "http 404"]
    names = callback_names(seen["bridge"])
    assert len(names) == 4 and len(set(names)) == 4
    assert all(callback_problem(name) is None for name in names)
    assert seen["errors"] == []


def test_without_native_json_or_promise(page: Page, page_origin: str, live_bridge: LiveServer,
                                        upstream: UpstreamServer) -> None:
    """IE6/7 have neither window.JSON nor Promise: the fallback reader and writer carry the data."""
    upstream.route("/echo", lambda seen: Reply(200, {"got": seen.body.decode(),
                                                      "text": "é \u2028 </script>"}))
    seen = open_page(page, page_origin, live_bridge, "delete window.JSON;")
    assert page.evaluate("typeof window.JSON") == "undefined"
    (outcome,) = run(page, live_bridge, {"request": {"api": "api", "path": "echo", "method": "POST",
                                                     "body": {"list": [1, "two", None], "é": True}}})
    assert outcome["err"] is None and outcome["res"]["transport"] == "cors"
    assert outcome["res"]["data"] == {"got": '{"list":[1,"two",null],"é":true}', "text": "é \u2028 </script>"}
    assert upstream.last().headers["content-type"] == "application/json"
    refused = page.evaluate("""base => {
        const saved = window.Promise;
        window.Promise = undefined;
        try { LegacyBridge.create({base: base}).get('api', ''); return 'no error'; }
        catch (e) { return e.name + ': ' + e.message; }
        finally { window.Promise = saved; }
    }""", live_bridge.url)
    assert refused == "TypeError: LegacyBridge: pass a callback; this browser has no Promise"
    assert seen["errors"] == []


def test_example_page(page: Page, page_origin: str, live_bridge: LiveServer,
                      upstream: UpstreamServer) -> None:
    """example.html with its bridge address pointed at the live bridge, driven as a person would:
    choose a transport, press Run."""
    upstream.route("/items", Reply(200, {"items": ["a", "b"]}))
    html = (Path(__file__).resolve().parent.parent / "legacy_client" / "example.html").read_text("utf-8")
    html = html.replace("http://127.0.0.1:8000", live_bridge.url).replace('value="demo"', 'value="api"')

    # Written into a page of the page origin (as Playwright's set_content does), so the origin is
    # one the bridge grants and, for Chromium, the loopback address space it needs.
    page.add_init_script(ERRORS)
    page.goto(page_origin + "/")
    page.evaluate("html => { document.open(); document.write(html); document.close(); }", html)
    text = "id => (document.getElementById(id) || {}).innerText || ''"  # null until parsed
    wait_until(page, "() => document.readyState === 'complete' && "
                     "(document.getElementById('detected') || {innerText: ''}).innerText.indexOf('uses') > 0")
    assert "'auto' uses cors" in page.evaluate(text, "detected"), page.evaluate(text, "output")
    for transport in ("cors", "jsonp"):
        page.evaluate("t => { document.getElementById('transport').value = t; "
                      "document.getElementById('run').click(); }", transport)
        wait_until(page, "t => document.getElementById('output').innerText.indexOf(' over ' + t) > 0",
                   transport)
        assert page.evaluate(text, "output").startswith(f"HTTP 200 over {transport}\n")
        assert 'data: {"items":["a","b"]}' in page.evaluate(text, "output")
    page.evaluate("() => { document.getElementById('path').value = 'nothing'; "
                  "document.getElementById('run').click(); }")
    wait_until(page, "() => document.getElementById('output').className.indexOf('error') >= 0")
    assert page.evaluate(text, "output").startswith("error http (HTTP 404) over jsonp")
    assert page.evaluate("window.__pageErrors") == []
