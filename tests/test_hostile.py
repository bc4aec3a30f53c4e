"""Hostile requests get a clear 4xx JSON refusal, reach no upstream, and change nothing for others."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ALLOWED
from tests.upstream_server import Reply, UpstreamServer


def assert_refused(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"} and body["message"]
    if code is not None:
        assert body["error"] == code
    return body


# --- Origin ---


@pytest.mark.parametrize(("origins", "status", "code"), [
    pytest.param([ALLOWED, ALLOWED], 400, "bad_request", id="duplicate-same"),
    pytest.param([ALLOWED, "https://evil.example"], 400, "bad_request", id="duplicate-different"),
    pytest.param([f"{ALLOWED}, https://evil.example"], 400, "bad_request", id="comma-joined"),
    pytest.param([ALLOWED + "/"], 403, "origin_not_allowed", id="trailing-slash"),
    pytest.param([ALLOWED.upper()], 403, "origin_not_allowed", id="uppercase"),
    pytest.param([ALLOWED + ":443"], 403, "origin_not_allowed", id="default-port"),
    pytest.param([ALLOWED + ".evil.com"], 403, "origin_not_allowed", id="suffix-trick"),
    pytest.param(["https://evilapp.example.com"], 403, "origin_not_allowed", id="prefix-trick"),
    pytest.param(["https://evil.com#.example.org"], 403, "origin_not_allowed", id="fragment-trick"),
    pytest.param(["https://a.example.org@evil.com"], 403, "origin_not_allowed", id="userinfo-trick"),
    pytest.param(["https://.example.org"], 403, "origin_not_allowed", id="empty-label"),
    pytest.param(["http://a.example.org"], 403, "origin_not_allowed", id="wildcard-wrong-scheme"),
    pytest.param(["https://a.example.org:8443"], 403, "origin_not_allowed", id="wildcard-wrong-port"),
    pytest.param(["null null"], 403, "origin_not_allowed", id="null-twice"),
    pytest.param(["https://app.example.com\t"], 403, "origin_not_allowed", id="trailing-tab"),
    pytest.param(["*"], 403, "origin_not_allowed", id="star"),
    pytest.param(["https://" + "a." * 3000 + "example.org"], 403, "origin_not_allowed", id="huge"),
])
def test_bad_origins_are_refused_without_a_grant(client: FlaskClient, upstream: UpstreamServer,
                                                 origins: list[str], status: int, code: str) -> None:
    headers = [("Origin", origin) for origin in origins]
    for method, extra in (("GET", []), ("OPTIONS", [("Access-Control-Request-Method", "GET")])):
        response = client.open("/cors/api/", method=method, headers=headers + extra)
        assert_refused(response, status, code)
        assert not any(h.lower().startswith("access-control-") for h in response.headers.keys())
    assert upstream.count() == 0


# --- Access-Control-Request-Headers ---


@pytest.mark.parametrize("value", [
    pytest.param(", ".join(f"x-h{i}" for i in range(65)), id="65-names"),
    pytest.param("x-custom," * 300, id="too-long"),
    pytest.param("x custom", id="space-in-name"),
    pytest.param("x-custom, <script>", id="angle-brackets"),
    pytest.param(",,,,", id="only-commas"),
    pytest.param("content-type,", id="trailing-comma"),
    pytest.param("x-custom;evil=1", id="semicolon"),
    pytest.param("é", id="non-ascii"),
])
def test_absurd_request_header_lists_are_a_400(client: FlaskClient, value: str) -> None:
    response = client.options("/cors/api/", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": value})
    assert_refused(response, 400, "bad_preflight")
    assert "Access-Control-Allow-Origin" not in response.headers


# --- control characters ---


@pytest.mark.parametrize(("url", "headers", "code"), [
    pytest.param("/cors/api/a%00b", {}, "invalid_path", id="nul-in-path"),
    pytest.param("/cors/api/a%0d%0aSet-Cookie:x=1", {}, "invalid_path", id="crlf-in-path"),
    pytest.param("/cors/api%0a/x", {}, "invalid_path", id="lf-in-api-name"),
    pytest.param("/cors/api/a%250d%250a", {}, "invalid_path", id="double-encoded-crlf-in-path"),
    pytest.param("/cors/api/?q=a%00b", {}, "bad_request", id="nul-in-query"),
    pytest.param("/cors/api/?q=a%0d%0aX:1", {}, "bad_request", id="crlf-in-query"),
    pytest.param("/cors/api/?a%0a=1", {}, "bad_request", id="lf-in-query-name"),
    pytest.param("/jsonp/api/?callback=cb%0a", {}, "invalid_callback", id="lf-in-callback"),
    pytest.param("/cors/api/", {"Accept": "a\x00b"}, "bad_request", id="nul-in-header"),
    pytest.param("/cors/api/", {"X-Custom": "a\x1bb"}, "bad_request", id="escape-in-header"),
    pytest.param("/cors/api/", {"Origin": ALLOWED + "\x00"}, "bad_request", id="nul-in-origin"),
])
def test_control_characters_anywhere_are_a_400(client: FlaskClient, upstream: UpstreamServer,
                                               url: str, headers: dict[str, str], code: str) -> None:
    assert_refused(client.get(url, headers=headers), 400, code)
    assert upstream.count() == 0


# --- path traversal in every encoding ---

TRAVERSALS = [
    pytest.param("../secret", id="raw-dotdot"),
    pytest.param("a/../../secret", id="raw-dotdot-deeper"),
    pytest.param("./a", id="raw-dot"),
    pytest.param("%2e%2e/secret", id="pct-dotdot"),
    pytest.param("%2E%2E/secret", id="pct-dotdot-upper"),
    pytest.param(".%2e/secret", id="mixed-dotdot"),
    pytest.param("%2e/a", id="pct-dot"),
    pytest.param("%252e%252e/secret", id="double-pct-dotdot"),
    pytest.param("%25252e%25252e/secret", id="triple-pct-dotdot"),
    pytest.param("%2525252e%2525252e/secret", id="quadruple-pct-dotdot"),
    pytest.param("%c0%ae%c0%ae/secret", id="overlong-utf8-dot"),
    pytest.param("%e0%80%ae%e0%80%ae/secret", id="overlong-utf8-3byte-dot"),
    pytest.param("%c0%af", id="overlong-utf8-slash"),
    pytest.param("..%5csecret", id="pct-backslash"),
    pytest.param("..%255csecret", id="double-pct-backslash"),
    pytest.param("a\\..\\secret", id="raw-backslash"),
    pytest.param("%2f%2fevil.example/x", id="pct-slashes"),
    pytest.param("a%2f..%2fsecret", id="pct-slash-dotdot"),
    pytest.param("%252f", id="double-pct-slash"),
    pytest.param("/evil.example/x", id="leading-double-slash"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("..%00/secret", id="nul-dotdot"),
    pytest.param("%ff", id="invalid-utf8"),
    pytest.param("%25aa", id="invalid-utf8-after-one-decoding"),
    pytest.param("%2525c0%2525ae", id="overlong-after-two-decodings"),
]


@pytest.mark.parametrize("path", TRAVERSALS)
@pytest.mark.parametrize("kind", ["cors", "jsonp"])
def test_path_traversal_never_leaves_the_base(client: FlaskClient, upstream: UpstreamServer,
                                              path: str, kind: str) -> None:
    response = client.get(f"/{kind}/api/{path}?callback=cb")
    assert_refused(response, 400, "invalid_path")
    assert upstream.count() == 0


@pytest.mark.parametrize(("path", "seen"), [
    pytest.param("....//", None, id="four-dots-then-empty"),
    pytest.param("...", "/...", id="three-dots-is-a-name"),
    pytest.param("%u002e%u002e", "/%25u002e%25u002e", id="iis-unicode-is-literal"),
    pytest.param("a..b", "/a..b", id="dots-inside-a-name"),
    pytest.param("caf%C3%A9", "/caf%C3%A9", id="utf8-name"),
])
def test_odd_but_harmless_names_stay_literal(client: FlaskClient, upstream: UpstreamServer,
                                             path: str, seen: str | None) -> None:
    upstream.route("*", Reply(200, {"ok": True}))
    response = client.get(f"/cors/api/{path}")
    if seen is None:
        assert response.status_code == 400 and upstream.count() == 0
    else:
        assert response.status_code == 200
        assert upstream.last().raw_path == seen


# --- Host and forwarding spoofing ---


@pytest.mark.parametrize("headers", [
    pytest.param({"Host": "evil.example"}, id="host"),
    pytest.param({"Host": "127.0.0.1:1"}, id="host-internal"),
    pytest.param({"X-Forwarded-Host": "evil.example"}, id="x-forwarded-host"),
    pytest.param({"X-Forwarded-Proto": "https", "X-Forwarded-Port": "1"}, id="x-forwarded-proto"),
    pytest.param({"X-Original-URL": "/admin", "X-Rewrite-URL": "/admin"}, id="rewrite-url"),
    pytest.param({"Forwarded": "host=evil.example;proto=https"}, id="forwarded"),
    pytest.param({"X-HTTP-Method-Override": "DELETE"}, id="method-override"),
])
def test_spoofed_routing_headers_change_nothing(client: FlaskClient, upstream: UpstreamServer,
                                                headers: dict[str, str]) -> None:
    upstream.route("/x", Reply(200, {"for": "everyone"}, headers={"Location": "/x"}))
    response = client.get("/cors/api/x", headers=headers)
    assert response.status_code == 200 and response.get_json() == {"for": "everyone"}
    seen = upstream.last()
    assert seen.method == "GET" and seen.path == "/x"
    assert seen.headers["host"] == f"127.0.0.1:{upstream.port}"
    for name in headers:
        assert name.lower() not in seen.headers or name.lower() == "host"
    assert "evil" not in response.get_data(as_text=True)
    assert client.get("/cors/api/x").get_json() == {"for": "everyone"}


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:1", "localhost"])
def test_the_trailing_slash_redirect_does_not_echo_the_host(client: FlaskClient, host: str) -> None:
    response = client.get("/cors/api?x=1", headers={"Host": host})
    assert response.status_code == 308
    assert response.headers["Location"] == "/cors/api/?x=1"


# --- callbacks ---


@pytest.mark.parametrize("callback", [
    pytest.param("alert(1)//", id="call"),
    pytest.param("cb;alert(1)", id="statement"),
    pytest.param("a.constructor", id="constructor"),
    pytest.param("x.__proto__", id="proto"),
    pytest.param("a[0]", id="brackets"),
    pytest.param("a['b']", id="quoted-brackets"),
    pytest.param("a..b", id="double-dot"),
    pytest.param(".a", id="leading-dot"),
    pytest.param("a.", id="trailing-dot"),
    pytest.param("1abc", id="leading-digit"),
    pytest.param("a b", id="space"),
    pytest.param("eval", id="eval"),
    pytest.param("window.location.assign", id="navigation"),
    pytest.param("setTimeout", id="timer"),
    pytest.param("Function", id="function-constructor"),
    pytest.param("new", id="reserved"),
    pytest.param("a" * 129, id="too-long"),
    pytest.param("\u0430lert", id="cyrillic-a"),
    pytest.param("cb\u2028", id="line-separator"),
    pytest.param("<script>", id="tag"),
    pytest.param("/**/cb", id="comment"),
    pytest.param("cb%0a", id="encoded-newline"),
    pytest.param("cb`x`", id="template"),
    pytest.param("a=>1", id="arrow"),
    pytest.param("", id="empty"),
    pytest.param("jQuery.globalEval", id="jquery-globalEval"),
    pytest.param("$.globalEval", id="dollar-globalEval"),
    pytest.param("jQuery.getScript", id="jquery-getScript"),
    pytest.param("execScript", id="execScript"),
    pytest.param("setImmediate", id="setImmediate"),
    pytest.param("self.importScripts", id="importScripts"),
    pytest.param("my.eval.cb", id="eval-inside"),
    pytest.param("a.b.Function", id="function-at-the-end"),
    pytest.param("a.constructor.constructor", id="constructor-chain"),
    pytest.param("app.__proto__.cb", id="proto-inside"),
])
def test_callback_tricks_are_refused(client: FlaskClient, upstream: UpstreamServer,
                                     callback: str) -> None:
    response = client.get("/jsonp/api/", query_string={"callback": callback})
    body = assert_refused(response, 400)
    assert body["error"] in ("invalid_callback", "missing_callback", "bad_request")
    assert upstream.count() == 0


@pytest.mark.parametrize("query", [
    pytest.param("callback=a&callback=b", id="two"),
    pytest.param("callback=cb&callback=cb", id="two-identical"),
    pytest.param("&".join(["callback=cb"] * 500), id="five-hundred"),
    pytest.param("callback=cb&envelope=1&envelope=0", id="two-envelopes"),
    pytest.param("callback=cb&envelope=yes", id="bad-envelope"),
    pytest.param("callback=cb&" + "&".join(f"p{i}=1" for i in range(101)), id="too-many-params"),
])
def test_repeated_or_excess_parameters_are_refused(client: FlaskClient, upstream: UpstreamServer,
                                                   query: str) -> None:
    assert_refused(client.get(f"/jsonp/api/?{query}"), 400)
    assert upstream.count() == 0


def test_an_accepted_callback_is_written_back_unchanged(client: FlaskClient) -> None:
    response = client.get("/jsonp/api/?callback=jQuery123_456.done$")
    assert response.status_code == 200
    assert response.data == b'/**/jQuery123_456.done$({"index": true});'


ALLOWLIST = "[jsonp]\nallow_callbacks = jQuery* __jp* angular.callbacks.* my.ns.*\n"


@pytest.mark.parametrize(("callback", "served"), [
    pytest.param("jQuery37101234567_1700000000000", True, id="jquery"),
    pytest.param("__jp0", True, id="webmodules-jsonp"),
    pytest.param("angular.callbacks._0", True, id="angularjs"),
    pytest.param("my.ns.done", True, id="namespace"),
    pytest.param("cb", False, id="unlisted"),
    pytest.param("xjQuery1", False, id="anchored-at-the-start"),
    pytest.param("jQuery1.x", False, id="star-stays-in-its-segment"),
    pytest.param("angular.callbacks._0.x", False, id="no-extra-segment"),
    pytest.param("my.ns", False, id="no-missing-segment"),
    pytest.param("jQuery.globalEval", False, id="allowlist-never-overrides-refusals"),
])
def test_allow_callbacks_narrows_the_grammar(make_app: Callable[..., Flask], upstream: UpstreamServer,
                                             callback: str, served: bool) -> None:
    client = make_app(ALLOWLIST).test_client()
    response = client.get("/jsonp/api/", query_string={"callback": callback})
    if served:
        assert response.status_code == 200
        assert response.data == f'/**/{callback}({{"index": true}});'.encode()
    else:
        body = assert_refused(response, 400, "invalid_callback")
        assert "allowed callback patterns" in body["message"] or "may not use" in body["message"]
        assert upstream.count() == 0


def test_a_bad_callback_pattern_stops_start_up(make_config: Callable[..., object]) -> None:
    from bridge.config import ConfigError
    with pytest.raises(ConfigError, match=r"\[jsonp\] allow_callbacks: 'a\[0\]' is not a callback"):
        make_config("[jsonp]\nallow_callbacks = jQuery* a[0]\n")


# --- input limits ---


def test_url_length_limit_is_a_414(make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    client = make_app("[limits]\nmax_url_length = 200\n").test_client()
    assert client.get("/cors/api/?q=" + "a" * 150).status_code == 200
    assert_refused(client.get("/cors/api/?q=" + "a" * 200), 414, "uri_too_long")
    assert_refused(client.get("/cors/api/" + "a" * 200), 414, "uri_too_long")


@pytest.mark.parametrize("headers", [
    pytest.param({f"X-H{i}": "1" for i in range(70)}, id="too-many"),
    pytest.param({"X-Big": "a" * 20000}, id="too-big"),
    pytest.param({f"X-H{i}": "a" * 600 for i in range(30)}, id="too-big-in-sum"),
])
def test_header_limits_are_a_431(client: FlaskClient, headers: dict[str, str]) -> None:
    assert_refused(client.get("/cors/api/", headers=headers), 431, "headers_too_large")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_request_body_limit_is_a_413(make_app: Callable[..., Flask], upstream: UpstreamServer,
                                     chunked: bool) -> None:
    client = make_app("[limits]\nmax_request_body = 1000\n").test_client()
    import io

    body = b"x" * 1001
    if chunked:
        # gunicorn marks a chunked body as terminated; werkzeug reads nothing from one unmarked
        response = client.post("/cors/api/", input_stream=io.BytesIO(body),
                               headers={"Transfer-Encoding": "chunked",
                                        "Content-Type": "application/json"},
                               environ_overrides={"wsgi.input_terminated": True})
    else:
        response = client.post("/cors/api/", data=body, content_type="application/json")
    assert_refused(response, 413, "payload_too_large")
    assert upstream.count() == 0
    assert client.post("/cors/api/", data=b"x" * 1000, content_type="application/json",
                       ).status_code == 200


@pytest.mark.parametrize(("reply", "path"), [
    pytest.param(Reply(200, b"[" + b"1," * 600 + b"1]"), "cors", id="declared-length"),
    pytest.param(Reply(200, b"[" + b"1," * 600 + b"1]", headers={"Content-Length": "10"},
                       lie_length=10), "none", id="lying-short-length-is-cut"),
    pytest.param(Reply(200, b"[" + b"1," * 600 + b"1]"), "jsonp", id="jsonp"),
])
def test_upstream_body_limit_is_a_502(make_app: Callable[..., Flask], upstream: UpstreamServer,
                                      reply: Reply, path: str) -> None:
    upstream.route("/big", reply)
    client = make_app("[limits]\nmax_upstream_body = 1000\n").test_client()
    if path == "none":
        # Content-Length is what ends the message: the rest is not read, let alone passed on.
        response = client.get("/cors/api/big")
        assert response.status_code == 200 and len(response.data) == 10
        return
    url = "/cors/api/big" if path == "cors" else "/jsonp/api/big?callback=cb"
    assert_refused(client.get(url), 502, "upstream_too_large")


def test_upstream_body_limit_holds_without_a_content_length(make_app: Callable[..., Flask],
                                                            upstream: UpstreamServer) -> None:
    # No Content-Length and Connection: close: the body runs until the upstream hangs up.
    upstream.route("/stream", Reply(200, b"x" * 5000, headers={"Content-Length": "",
                                                               "Connection": "close"}))
    client = make_app("[limits]\nmax_upstream_body = 1000\n").test_client()
    response = client.get("/cors/api/stream")
    assert response.status_code == 502


@pytest.mark.parametrize(("body", "depth_limit"), [
    pytest.param(b"[" * 65 + b"]" * 65, 64, id="arrays-past-limit"),
    pytest.param(b'{"a":' * 65 + b"1" + b"}" * 65, 64, id="objects-past-limit"),
    pytest.param(b"[" * 100000 + b"]" * 100000, 100000, id="recursion-bomb"),
])
def test_json_nesting_limit_for_jsonp_is_a_502(make_app: Callable[..., Flask],
                                               upstream: UpstreamServer, body: bytes,
                                               depth_limit: int) -> None:
    upstream.route("/deep", Reply(200, body))
    client = make_app(f"[limits]\nmax_json_depth = {depth_limit}\n").test_client()
    response = client.get("/jsonp/api/deep?callback=cb")
    assert_refused(response, 502, "upstream_invalid_json")
    envelope = client.get("/jsonp/api/deep?callback=cb&envelope=1")
    assert envelope.status_code == 200 and b'"status":502' in envelope.data


def test_json_at_the_depth_limit_is_served(make_app: Callable[..., Flask],
                                           upstream: UpstreamServer) -> None:
    upstream.route("/deep", Reply(200, b"[" * 64 + b"]" * 64))
    response = make_app().test_client().get("/jsonp/api/deep?callback=cb")
    assert response.status_code == 200
