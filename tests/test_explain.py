"""/explain: the Fetch classification, the bridge's verdict from cors.py, and Chromium as the judge."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from bridge.policy.browser import BrowserRequest, classify
from bridge.policy.engines import PAGE_ERRORS
from bridge.policy.fetch import Observed, check_access, check_preflight, safelist_problem, unsafe_header_names
from bridge.policy.messages import error_reason
from tests.browser_fetch import BLOCKED, browser_fetch
from tests.conftest import ALLOWED
from tests.live import LiveServer
from tests.upstream_server import Reply, UpstreamServer

# An upstream whose policy is '*': the credentials-with-wildcard case.
PUBLIC = """
[upstream:public]
url = {url}
methods = GET PUT
allow_origins = *
"""


@pytest.mark.parametrize("name,value,safelisted", [
    ("Accept", "application/json", True),
    ("Accept", "text/html(", False),
    ("Accept", "a" * 128, True),
    ("Accept", "a" * 129, False),
    ("Accept-Language", "en-GB, fr;q=0.8", True),
    ("Accept-Language", "en_GB", False),
    ("Content-Language", "de", True),
    ("Content-Type", "text/plain", True),
    ("Content-Type", "Text/Plain; charset=utf-8", True),
    ("Content-Type", "multipart/form-data; boundary=x", True),
    ("Content-Type", "application/x-www-form-urlencoded", True),
    ("Content-Type", "application/json", False),
    ("Content-Type", "text/plain; charset=" + "u" * 120, False),
    ("Content-Type", 'text/plain; charset="utf-8"', False),
    ("Content-Type", "", False),
    ("Range", "bytes=0-99", True),
    ("Range", "bytes=5-1", False),
    ("Range", "bytes=0-1,3-4", False),
    ("Range", "bytes=" + "1" * 20 + "-", False),
    ("Save-Data", "on", True),
    ("Save-Data", "off", False),
    ("DPR", "1.5", True),
    ("Width", "1.5", False),
    ("X-Custom", "1", False),
    ("Authorization", "Bearer x", False),
], ids=lambda v: str(v)[:24])
def test_safelisted_request_headers(name: str, value: str, safelisted: bool) -> None:
    assert (safelist_problem(name, value) is None) is safelisted


def test_unsafe_names_are_sorted_lowercase_and_unique() -> None:
    names = unsafe_header_names([("X-B", "1"), ("x-a", "1"), ("X-A", "2"), ("Accept", "x")])
    assert names == ("x-a", "x-b")


def test_safelisted_values_over_1024_bytes_together_all_count_as_unsafe() -> None:
    # Fetch's own names cap at 5 x 128 bytes; Chromium's client hints make the total reachable.
    headers = list(OVER_1024.items())
    assert unsafe_header_names(headers[:-1]) == ()  # 941 bytes: not over
    assert unsafe_header_names(headers) == tuple(sorted(n.lower() for n, _ in headers))
    with_custom = unsafe_header_names([("X-Z", "1"), *headers])
    assert with_custom[0] == "x-z" and sorted(with_custom[1:]) == list(with_custom[1:])


# Ten safelisted values, 1069 bytes in all: each is safelisted, together they are not.
OVER_1024 = {**{n: "1" * 128 for n in ("Accept", "Accept-Language", "Content-Language", "Width",
                                        "Viewport-Width", "DPR", "Device-Memory")},
             "Range": "bytes=" + "1" * 18 + "-" + "2" * 18, "Save-Data": "on",
             "Content-Type": "text/plain; x=" + "a" * 114}


@pytest.mark.parametrize("method,headers,preflight", [
    ("GET", (), False),
    ("get", (), False),
    ("POST", (("Content-Type", "text/plain"),), False),
    ("POST", (("Content-Type", "application/json"),), True),
    ("PUT", (), True),
    ("patch", (), True),
    ("GET", (("X-Custom", "1"),), True),
    ("GET", (("Cookie", "a=1"), ("Origin", "https://evil.example")), False),  # forbidden: dropped
], ids=["get", "lowercase-get", "post-text", "post-json", "put", "patch", "custom-header",
        "forbidden-headers-dropped"])
def test_classify_decides_the_preflight(method: str, headers: tuple[tuple[str, str], ...],
                                        preflight: bool) -> None:
    sent_method, sent_headers, _, needs = classify(BrowserRequest("http://b/", "http://a", method,
                                                                  headers))
    assert needs is preflight
    assert sent_method == (method.upper() if method.lower() != "patch" else "patch")
    assert all(n.lower() not in ("cookie", "origin") for n, _ in sent_headers)


@pytest.mark.parametrize("headers,credentials,error", [
    ((), "omit", "kMissingAllowOriginHeader"),
    ((("Access-Control-Allow-Origin", "*"),), "omit", None),
    ((("Access-Control-Allow-Origin", "*"),), "include", "kWildcardOriginNotAllowed"),
    ((("Access-Control-Allow-Origin", "http://a"),), "omit", None),
    ((("Access-Control-Allow-Origin", "http://a"),), "include", "kInvalidAllowCredentials"),
    ((("Access-Control-Allow-Origin", "http://a"), ("Access-Control-Allow-Credentials", "True")),
     "include", "kInvalidAllowCredentials"),
    ((("Access-Control-Allow-Origin", "http://a"), ("Access-Control-Allow-Credentials", "true")),
     "include", None),
    ((("Access-Control-Allow-Origin", "http://a"), ("Access-Control-Allow-Origin", "http://a")),
     "omit", "kMultipleAllowOriginValues"),
    ((("Access-Control-Allow-Origin", "http://b"),), "omit", "kAllowOriginMismatch"),
    ((("Access-Control-Allow-Origin", "null"),), "omit", "kAllowOriginMismatch"),
    ((("Access-Control-Allow-Origin", "foo"),), "omit", "kInvalidAllowOriginValue"),
], ids=["missing", "wildcard", "wildcard-credentials", "exact", "no-acac", "acac-case",
        "credentials-ok", "repeated", "mismatch", "null", "invalid"])
def test_cors_check(headers: tuple[tuple[str, str], ...], credentials: str, error: str | None) -> None:
    failure = check_access(Observed(200, headers), "http://a", credentials)
    assert (failure.error if failure else None) == error


GRANT = (("Access-Control-Allow-Origin", "http://a"),)


@pytest.mark.parametrize("status,headers,method,names,reason", [
    (204, GRANT + (("Access-Control-Allow-Methods", "GET, PUT"),), "DELETE", (),
     "Method DELETE is not allowed by Access-Control-Allow-Methods in preflight response."),
    (204, GRANT + (("Access-Control-Allow-Methods", "PATCH"),), "patch", (),
     "Method patch is not allowed by Access-Control-Allow-Methods in preflight response."),
    (204, GRANT + (("Access-Control-Allow-Methods", "*"),), "DELETE", (), None),
    (204, GRANT + (("Access-Control-Allow-Methods", "PUT"),
                   ("Access-Control-Allow-Headers", "X-Other")), "PUT", ("x-custom",),
     "Request header field x-custom is not allowed by Access-Control-Allow-Headers in preflight "
     "response."),
    (204, GRANT + (("Access-Control-Allow-Headers", "X-CUSTOM"),), "GET", ("x-custom",), None),
    (204, GRANT + (("Access-Control-Allow-Methods", "PUT, a b"),), "PUT", (),
     "Cannot parse Access-Control-Allow-Methods response header field in preflight response."),
    (404, GRANT, "PUT", (), "Response to preflight request doesn't pass access control check: It "
     "does not have HTTP ok status."),
    (403, (), "PUT", (), "Response to preflight request doesn't pass access control check: No "
     "'Access-Control-Allow-Origin' header is present on the requested resource."),
    (302, GRANT, "PUT", (), "Response to preflight request doesn't pass access control check: "
     "Redirect is not allowed for a preflight request."),
], ids=["method", "patch-case", "method-wildcard", "header", "header-case", "unparsable", "status",
        "no-grant-before-status", "redirect"])
def test_preflight_checks(status: int, headers: tuple[tuple[str, str], ...], method: str,
                          names: tuple[str, ...], reason: str | None) -> None:
    failure = check_preflight(Observed(status, headers), "http://a", "omit", method, names)
    assert (error_reason(failure) if failure else None) == reason


# --- /explain over the bridge's policy ---


@pytest.fixture
def public_app(make_app: Callable[..., Flask], upstream: UpstreamServer) -> Flask:
    return make_app(PUBLIC.format(url=upstream.url))


def explain(client: FlaskClient, **params: str) -> dict:
    response = client.get("/explain?" + urlencode(params))
    assert response.status_code == 200, response.get_json()
    body: dict = response.get_json()
    return body


@pytest.mark.parametrize("params,allowed,preflight,error", [
    ({"api": "api", "origin": ALLOWED}, True, False, None),
    ({"api": "api", "origin": "https://evil.example"}, False, False,
     "No 'Access-Control-Allow-Origin' header is present on the requested resource."),
    ({"api": "api", "origin": "https://x.example.org"}, True, False, None),
    ({"api": "api", "origin": "https://example.org.evil.com"}, False, False,
     "No 'Access-Control-Allow-Origin' header is present on the requested resource."),
    ({"api": "api", "origin": ALLOWED, "method": "PUT", "headers": "X-Custom"}, True, True, None),
    ({"api": "api", "origin": ALLOWED, "method": "PUT", "headers": "x-other"}, False, True,
     "Request header field x-other is not allowed by Access-Control-Allow-Headers in preflight "
     "response."),
    ({"api": "api", "origin": ALLOWED, "method": "DELETE"}, False, True,
     "Method DELETE is not allowed by Access-Control-Allow-Methods in preflight response."),
    ({"api": "api", "origin": "https://evil.example", "method": "PUT"}, False, True,
     "Response to preflight request doesn't pass access control check: No "
     "'Access-Control-Allow-Origin' header is present on the requested resource."),
    ({"api": "api", "origin": ALLOWED, "method": "POST", "content_type": "application/json"},
     True, True, None),
    ({"api": "api", "origin": ALLOWED, "method": "POST", "content_type": "text/plain"},
     True, False, None),
    ({"api": "api", "origin": ALLOWED, "headers": "Accept-Language: en(GB)"}, False, True,
     "Request header field accept-language is not allowed by Access-Control-Allow-Headers in "
     "preflight response."),
    ({"api": "api", "origin": ALLOWED, "credentials": "include"}, False, False,
     "The value of the 'Access-Control-Allow-Credentials' header in the response is '' which must "
     "be 'true' when the request's credentials mode is 'include'."),
    ({"api": "public", "origin": "https://anyone.example", "credentials": "include"}, False, False,
     "The value of the 'Access-Control-Allow-Origin' header in the response must not be the "
     "wildcard '*' when the request's credentials mode is 'include'."),
    ({"api": "public", "origin": "https://anyone.example", "method": "PUT",
      "credentials": "include"}, False, True,
     "Response to preflight request doesn't pass access control check: The value of the "
     "'Access-Control-Allow-Origin' header in the response must not be the wildcard '*' when the "
     "request's credentials mode is 'include'."),
    ({"api": "public", "origin": "https://anyone.example"}, True, False, None),
], ids=["simple-get", "disallowed-origin", "wildcard-pattern", "suffix-trick", "put-custom-header",
        "header-not-configured", "method-not-configured", "preflight-disallowed-origin",
        "json-post", "text-post", "unsafe-language", "credentials-without-acac",
        "credentials-wildcard", "credentials-wildcard-preflight", "public-get"])
def test_explain_verdicts(public_app: Flask, params: dict[str, str], allowed: bool, preflight: bool,
                          error: str | None) -> None:
    body = explain(public_app.test_client(), **params)
    assert (body["allowed"], body["preflight"], body["browser_error"]) == (allowed, preflight, error)
    assert body["steps"] and all({"actor", "check", "ok", "detail"} <= set(s) for s in body["steps"])
    assert any(s["ok"] is False for s in body["steps"]) is not allowed
    assert [r["preflight"] for r in body["requests"]][:1] == ([True] if preflight else [False])
    if error is not None:
        assert body["console"].endswith(BLOCKED + error)


def test_explain_says_what_jsonp_does(client: FlaskClient) -> None:
    assert explain(client, api="api", origin=ALLOWED)["jsonp"]["allowed"] is True
    put = explain(client, api="api", origin=ALLOWED, method="PUT")["jsonp"]
    assert put["allowed"] is False and "405" in put["reason"]
    assert explain(client, api="closed", origin=ALLOWED)["jsonp"]["allowed"] is False


def test_explain_uses_the_same_policy_as_the_cors_path(client: FlaskClient) -> None:
    """The simulated preflight and the real one carry the same headers."""
    body = explain(client, api="api", origin=ALLOWED, method="PUT", headers="X-Custom")
    real = client.options("/cors/api/", headers={"Origin": ALLOWED,
                                                 "Access-Control-Request-Method": "PUT",
                                                 "Access-Control-Request-Headers": "x-custom"})
    sent = dict(body["requests"][0]["headers"])
    assert sent["Access-Control-Request-Headers"] == "x-custom"
    preflight_step = next(s for s in body["steps"] if s["check"] == "preflight checks")
    for name in ("Access-Control-Allow-Methods", "Access-Control-Allow-Headers"):
        assert f"{name}: {real.headers[name]}" in preflight_step["detail"]


@pytest.mark.parametrize("query,status,code", [
    ("origin=https://a.example", 400, "bad_request"),
    ("api=api", 400, "bad_request"),
    ("api=api&origin=https://A.example/", 400, "bad_request"),
    ("api=nope&origin=https://a.example", 404, "unknown_api"),
    ("api=api&origin=https://a.example&credentials=sometimes", 400, "bad_request"),
    ("api=api&origin=https://a.example&method=TRACE", 400, "bad_request"),
    ("api=api&origin=https://a.example&method=G%20T", 400, "bad_request"),
    ("api=api&origin=https://a.example&headers=X%20Y", 400, "bad_request"),
    ("api=api&origin=https://a.example&headers=" + ",".join(["X-A"] * 65), 400, "bad_request"),
], ids=["no-api", "no-origin", "bad-origin", "unknown-api", "bad-credentials", "forbidden-method",
        "bad-method", "bad-header-name", "too-many-headers"])
def test_explain_refusals(client: FlaskClient, query: str, status: int, code: str) -> None:
    response = client.get("/explain?" + query)
    assert response.status_code == status
    assert response.get_json()["error"] == code and response.get_json()["message"]


def test_explain_is_readable_by_any_origin_without_credentials(client: FlaskClient) -> None:
    """A public, read-only diagnostic: the page on an origin the config does not list is the one
    that most needs to read why its request failed."""
    for origin in (ALLOWED, "https://not-configured.example", "null"):
        answer = client.get(f"/explain?api=api&origin={ALLOWED}", headers={"Origin": origin})
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers
        assert "Set-Cookie" not in answer.headers


@pytest.mark.parametrize(("user_agent", "query", "engine"), [
    pytest.param("", "", "chromium", id="default"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0", "",
                 "firefox", id="firefox-ua"),
    pytest.param("Mozilla/5.0 (Macintosh; Intel Mac OS X 15_1) AppleWebKit/605.1.15 (KHTML, like "
                 "Gecko) Version/18.1 Safari/605.1.15", "", "webkit", id="safari-ua"),
    pytest.param("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0", "", "chromium", id="edge-ua"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0",
                 "&browser=webkit", "webkit", id="the-query-wins"),
])
def test_explain_speaks_the_engine_the_user_agent_names(client: FlaskClient, user_agent: str, query: str,
                                                        engine: str) -> None:
    refused = "https://refused.example"
    body = client.get(f"/explain?api=api&origin={refused}{query}",
                      headers={"User-Agent": user_agent}).get_json()
    assert body["browser"] == engine
    assert body["page_error"] == PAGE_ERRORS[engine]
    assert body["console"] == "\n".join(body["engines"][engine]["console"])
    assert set(body["engines"]) == {"chromium", "firefox", "webkit"}
    assert body["engines"]["firefox"]["console"][0].startswith("Cross-Origin Request Blocked:")
    assert body["engines"]["webkit"]["console"][0] == (
        f"Origin {refused} is not allowed by Access-Control-Allow-Origin. Status code: 403")


def test_explain_refuses_an_unknown_browser(client: FlaskClient) -> None:
    answer = client.get(f"/explain?api=api&origin={ALLOWED}&browser=netscape")
    assert answer.status_code == 400 and "chromium, firefox, webkit" in answer.get_json()["message"]


def test_explain_gives_each_engines_preflight_cache(make_app: Callable[..., Flask]) -> None:
    app = make_app("", "max_age = 7200")
    body = app.test_client().get(f"/explain?api=api&origin={ALLOWED}&method=PUT").get_json()
    assert body["preflight"] and body["allowed"]
    assert {name: view["preflight_cache_seconds"] for name, view in body["engines"].items()} == {
        "chromium": 7200, "firefox": 7200, "webkit": 600}


# --- Chromium is the judge: the same request in the browser, the same words ---


@pytest.fixture
def public_bridge(public_app: Flask):  # type: ignore[no-untyped-def]
    server = LiveServer(public_app).start()
    yield server
    server.stop()


@pytest.mark.browser
@pytest.mark.parametrize("api,method,headers,credentials,other_origin", [
    ("api", "GET", {}, "same-origin", False),
    ("api", "GET", {}, "same-origin", True),
    ("api", "PUT", {"X-Custom": "1"}, "same-origin", False),
    ("api", "PUT", {"X-Other": "1"}, "same-origin", False),
    ("api", "DELETE", {}, "same-origin", False),
    ("api", "PUT", {}, "same-origin", True),
    ("api", "GET", {"Accept": "a" * 129}, "same-origin", False),
    ("api", "GET", {}, "include", False),
    ("public", "GET", {}, "include", False),
    ("public", "PUT", {}, "include", False),
    ("api", "POST", {"Content-Type": "application/json"}, "omit", False),
    ("api", "GET", OVER_1024, "omit", False),
], ids=["simple-get", "disallowed-origin", "put-custom-header", "header-not-configured",
        "method-not-configured", "preflight-disallowed-origin", "accept-over-128-bytes",
        "credentials-without-acac", "credentials-wildcard", "credentials-wildcard-preflight",
        "json-post", "safelisted-values-over-1024-bytes"])
def test_explain_matches_chromium(page, page_origin: str, public_bridge: LiveServer,  # type: ignore[no-untyped-def]
                                  upstream: UpstreamServer, api: str, method: str,
                                  headers: dict[str, str], credentials: str,
                                  other_origin: bool) -> None:
    upstream.route("*", Reply(200, {"ok": True}))
    # The page origin's server also answers on 127.0.0.1, an origin the test config does not list.
    origin = page_origin.replace("localhost", "127.0.0.1") if other_origin else page_origin
    outcome = browser_fetch(page, origin + "/", f"{public_bridge.url}/cors/{api}/items", method,
                            headers, credentials)
    query = {"api": api, "origin": origin, "method": method, "credentials": credentials,
             "path": "items", "headers": ",".join(f"{k}: {v}" for k, v in headers.items())}
    body = requests.get(f"{public_bridge.url}/explain", params=query, timeout=5).json()
    assert body["allowed"] is outcome.ok
    if headers is OVER_1024:
        # Chromium refuses them all, and names the first in its own internal order (not sorted:
        # viewport-width, in Chromium 156); the verdict names the first sorted. The rest is word
        # for word.
        named = re.compile(r"field (\S+) is not allowed")
        assert outcome.console is not None and body["console"] is not None
        assert named.search(outcome.console)[1] in dict(body["requests"][0]["headers"])[  # type: ignore[index]
            "Access-Control-Request-Headers"].split(",")
        assert named.sub("", body["console"]) == named.sub("", outcome.console)
    else:
        assert body["console"] == outcome.console
    if outcome.ok:
        assert outcome.status == 200
