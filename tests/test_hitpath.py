"""The hit path in front of Flask answers exactly what the views answer, or leaves the request to them.

Two bridges from one config, one with ``hitpath`` (the default) and one without, each with its own
cache on a frozen clock, ask the same real upstream. Every request is sent to both twice (the first
fills the cache); the second answers must be the same status, body and headers (the request id and the
upstream's Date aside), the same access record and the same cache events, and the hit path must have
served exactly the plain fresh hits. Hostile and odd requests must reach the views, which refuse them
as before. The rest of the suite runs through the hit path too, since every app has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from bridge import create_app
from bridge.cache import Cache
from bridge.config import Config
from bridge.hitpath import HitPath
from bridge.observe import AccessRecord
from tests.conftest import ALLOWED
from tests.upstream_server import Reply, UpstreamServer

CACHE = "[cache]\nnegative_ttl = 30\n"
# Each pair of bridges is built twice: without a rate limit, and with one never reached.
LIMITS = ["", "[limits]\nper_client = 1000000/minute\n"]


@dataclass
class Bridge:
    app: Flask
    records: list[AccessRecord] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def hit_path(self) -> HitPath | None:
        return self.app.extensions.get("bridge.hit_path")


def build(config: Config, hit_path: bool) -> Bridge:
    bridge = Bridge(app=Flask(__name__))
    cache = Cache.from_config(config, clock=lambda: 1_800_000_000.0, on_event=bridge.events.append)
    bridge.app = create_app(config, cache=cache, hit_path=hit_path)
    bridge.app.extensions["bridge.access_listeners"].append(bridge.records.append)
    return bridge


def route_answers(upstream: UpstreamServer) -> None:
    """The answers both pairs of bridges ask for: JSON that varies, typeless, a JSON 404."""
    upstream.route("/d", Reply(200, {"a": "<b>", "n": 1.10}, {"Content-Type": "application/json",
                                                             "ETag": '"v1"', "Vary": "Accept-Language"}))
    upstream.route("/plain", Reply(200, b'{"typeless": true}', {"Content-Type": None}))
    upstream.route("/gone", Reply(404, {"error": "no_such_item", "message": "gone"},
                                  {"Content-Type": "application/json"}))


@pytest.fixture(params=LIMITS, ids=["no-limit", "limit"])
def pair(request: pytest.FixtureRequest, make_config: Callable[..., Config],
         upstream: UpstreamServer) -> tuple[Bridge, Bridge]:
    route_answers(upstream)
    upstream.route("/short", Reply(200, {"short": True}, {"Content-Type": "application/json",
                                                          "Cache-Control": "max-age=5"}))
    upstream.route("/private", Reply(200, {"mine": True}, {"Content-Type": "application/json",
                                                           "Cache-Control": "private"}))
    upstream.route("/echo", Reply(200, {"echo": True}, {
        "Content-Type": "Application/JSON; charset=UTF-8", "X-Request-ID": "the-filling-request",
        "Age": "7", "Cache-Status": "upstream-cache; hit", "Cache-Control": "max-age=100",
        "Vary": "Origin", "X-Content-Type-Options": "sniff-please", "Content-Security-Policy": "none"}))
    config = make_config(CACHE + request.param)
    return build(config, True), build(config, False)


def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers if k not in ("X-Request-ID", "Date"))


def both(pair: tuple[Bridge, Bridge], method: str, url: str, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> bool:
    """Ask both bridges twice; assert the second answers agree; say whether the hit path served it."""
    fast, views = pair
    assert fast.hit_path is not None and views.hit_path is None
    for _attempt in range(2):
        served_before = fast.hit_path.served
        answers = [b.app.test_client().open(url, method=method, headers=headers or {}, data=data)
                   for b in (fast, views)]
        served = fast.hit_path.served - served_before
    ours, theirs = answers
    assert ours.status == theirs.status, (url, ours.get_data(), theirs.get_data())
    assert ours.get_data() == theirs.get_data()
    assert comparable(list(ours.headers)) == comparable(list(theirs.headers))
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", ours.headers["X-Request-ID"])
    last = [(r.method, r.kind, r.upstream, r.status, r.cache, r.error) for r in (fast.records[-1],
                                                                                  views.records[-1])]
    assert last[0] == last[1]
    assert fast.events == views.events
    assert served in (0, 1)
    return served == 1


SERVED = [
    pytest.param("/cors/api/d?b=2&a=1", {"Origin": ALLOWED}, id="cors-allowed-origin"),
    pytest.param("/cors/api/d?a=1&b=2", {}, id="cors-no-origin"),
    pytest.param("/cors/api/d", {"Origin": "https://deep.sub.example.org"}, id="cors-pattern-origin"),
    pytest.param("/cors/api/d", {"Origin": "null"}, id="cors-null-origin-configured"),
    pytest.param("/cors/api/d", {"Origin": ALLOWED, "Accept-Language": "de"}, id="cors-vary-variant"),
    pytest.param("/cors/api/d", {"Origin": ALLOWED, "X-Request-ID": "abc.DEF-123_x"}, id="client-id"),
    pytest.param("/cors/api/d", {"X-Forwarded-Host": "evil.example", "Host": "evil.example"},
                 id="spoofed-host-changes-nothing"),
    pytest.param("/cors/api/plain", {"Origin": ALLOWED}, id="cors-no-content-type"),
    pytest.param("/cors/api/gone", {"Origin": ALLOWED}, id="cors-negative-cached-404"),
    pytest.param("/cors/api/short", {}, id="cors-upstream-max-age"),
    pytest.param("/cors/api/echo", {"Origin": ALLOWED}, id="cors-upstream-age-id-cache-status-vary"),
    pytest.param("/jsonp/api/echo?callback=cb", {}, id="jsonp-upstream-age-id-cache-status"),
    pytest.param("/jsonp/api/echo?callback=cb&envelope=1", {}, id="jsonp-envelope-upstream-headers"),
    pytest.param("/jsonp/api/d?callback=cb", {}, id="jsonp"),
    pytest.param("/jsonp/api/d?callback=jQuery37100123_1700000000000&_=1700000000001", {},
                 id="jsonp-jquery-cache-buster"),
    pytest.param("/jsonp/api/d?a=1&callback=YUI.Env.JSONP.yui_3_18_1_1_17&envelope=1",
                 {"Origin": "https://evil.example"}, id="jsonp-envelope-any-origin"),
    pytest.param("/jsonp/api/gone?callback=cb", {}, id="jsonp-negative-cached-404"),
    pytest.param("/jsonp/api/gone?callback=cb&envelope=1", {}, id="jsonp-envelope-404"),
]


@pytest.mark.parametrize(("url", "headers"), SERVED)
def test_a_fresh_hit_is_served_before_flask_with_the_views_answer(
        pair: tuple[Bridge, Bridge], url: str, headers: dict[str, str]) -> None:
    assert both(pair, "GET", url, headers)
    assert pair[0].records[-1].cache == "hit"


DELEGATED = [
    pytest.param("GET", "/cors/api/d", {"Origin": "https://evil.example"}, id="origin-not-allowed"),
    pytest.param("GET", "/cors/api/d", {"Origin": "https://app.example.com.evil.example"},
                 id="origin-suffix-trick"),
    pytest.param("GET", "/cors/api/d", {"Origin": f"{ALLOWED}, https://evil.example"}, id="two-origins"),
    pytest.param("GET", "/cors/api/d", {"Origin": ALLOWED, "If-None-Match": '"v1"'}, id="conditional"),
    pytest.param("HEAD", "/cors/api/d", {"Origin": ALLOWED}, id="head"),
    pytest.param("POST", "/cors/api/d", {"Origin": ALLOWED}, id="post"),
    pytest.param("OPTIONS", "/cors/api/d", {"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
                 id="preflight"),
    pytest.param("GET", "/cors/api/private", {}, id="private-never-stored"),
    pytest.param("GET", "/cors/api/%2e%2e/etc/passwd", {}, id="encoded-traversal"),
    pytest.param("GET", "/cors/api/a%2Fb", {}, id="encoded-slash"),
    pytest.param("GET", "/cors/api//d", {}, id="empty-segment"),
    pytest.param("GET", "/cors/api/d?x=%0d%0aSet-Cookie:1", {}, id="crlf-in-query"),
    pytest.param("GET", "/cors/api/d", {"X-Note": "a\x00b"}, id="nul-in-header"),
    pytest.param("GET", "/cors/api/d?" + "&".join(f"p{i}=1" for i in range(200)), {},
                 id="too-many-parameters"),
    pytest.param("GET", "/cors/api/d?q=" + "x" * 9000, {}, id="url-too-long"),
    pytest.param("GET", "/cors/nope/d", {}, id="unknown-api"),
    pytest.param("GET", "/cors/api", {}, id="no-trailing-slash"),
    pytest.param("GET", "/jsonp/api/d?callback=alert(1)", {}, id="callback-call"),
    pytest.param("GET", "/jsonp/api/d?callback=constructor.constructor", {}, id="callback-constructor"),
    pytest.param("GET", "/jsonp/api/d?callback=a&callback=b", {}, id="two-callbacks"),
    pytest.param("GET", "/jsonp/api/d", {}, id="no-callback"),
    pytest.param("GET", "/jsonp/api/d?callback=cb%0a", {}, id="callback-newline"),
    pytest.param("GET", "/jsonp/api/d?callback=cb&envelope=yes", {}, id="bad-envelope"),
    pytest.param("GET", "/jsonp/closed/d?callback=cb", {}, id="jsonp-turned-off"),
    pytest.param("HEAD", "/jsonp/api/d?callback=cb", {}, id="jsonp-head"),
]


@pytest.mark.parametrize(("method", "url", "headers"), DELEGATED)
def test_odd_or_hostile_requests_are_left_to_the_views(
        pair: tuple[Bridge, Bridge], method: str, url: str, headers: dict[str, str]) -> None:
    both(pair, "GET", "/cors/api/d", {"Origin": ALLOWED})  # whatever could be a hit is one
    both(pair, "GET", "/jsonp/api/d?callback=cb")
    assert not both(pair, method, url, headers)


def test_a_get_with_a_body_is_left_to_the_views(pair: tuple[Bridge, Bridge]) -> None:
    both(pair, "GET", "/cors/api/d")
    assert not both(pair, "GET", "/cors/api/d", {"Content-Type": "text/plain"}, data=b"hello")


def test_a_miss_and_an_expired_entry_are_left_to_the_views(
        make_config: Callable[..., Config], upstream: UpstreamServer) -> None:
    now = [1_800_000_000.0]
    upstream.route("/t", Reply(200, {"t": 1}, {"Content-Type": "application/json"}))
    config = make_config()
    cache = Cache.from_config(config, clock=lambda: now[0])
    app = create_app(config, cache=cache)
    hit_path = app.extensions["bridge.hit_path"]
    client = app.test_client()
    assert client.get("/cors/api/t").headers["Cache-Status"].endswith("stored; ttl=60")
    assert client.get("/cors/api/t").headers["Cache-Status"] == "jsonp-cors-bridge; hit; ttl=60"
    assert hit_path.served == 1
    now[0] += 61
    stale = client.get("/cors/api/t")
    assert "fwd=" in stale.headers["Cache-Status"]  # expired: asked upstream again, by the views
    assert hit_path.served == 1
    assert len([s for s in upstream.seen if s.path == "/t"]) == 2


def test_a_rate_limit_is_one_budget_for_the_hit_path_and_the_views(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    """flask-limiter's own check counts every hit served here; the refusal is the views' 429."""
    upstream.route("/r", Reply(200, {"r": 1}, {"Content-Type": "application/json"}))
    app = make_app("[limits]\nper_client = 3/minute\n")
    hit_path = app.extensions["bridge.hit_path"]
    client = app.test_client()
    answers = [client.get("/cors/api/r", headers={"Origin": ALLOWED}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # a miss, two hits, a refusal
    assert hit_path.served == 2
    refusal = answers[3]
    assert refusal.get_json()["error"] == "rate_limited" and int(refusal.headers["Retry-After"]) >= 1
    assert refusal.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert client.get("/jsonp/api/r?callback=cb").status_code == 429  # one budget for both paths


def test_an_upstreams_own_budget_is_counted_on_hits_too(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    upstream.route("/u", Reply(200, {"u": 1}, {"Content-Type": "application/json"}))
    app = make_app(upstream_extra="per_client = 2/minute")
    client = app.test_client()
    assert [client.get("/cors/api/u").status_code for _ in range(3)] == [200, 200, 429]
    assert app.extensions["bridge.hit_path"].served == 1
    assert client.get("/cors/closed/u").status_code == 200  # another upstream: its own (no) budget


def test_budgets_on_the_hit_path_follow_the_trusted_proxys_client_address(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    upstream.route("/x", Reply(200, {"x": 1}, {"Content-Type": "application/json"}))
    app = make_app("[server]\ntrusted_proxies = 1\n[limits]\nper_client = 2/minute\n")
    client = app.test_client()

    def ask(address: str) -> int:
        return client.get("/cors/api/x", headers={"X-Forwarded-For": address}).status_code

    assert [ask("198.51.100.7") for _ in range(3)] == [200, 200, 429]
    assert [ask("203.0.113.9") for _ in range(2)] == [200, 200]  # another client, its own budget
    assert app.extensions["bridge.hit_path"].served == 3  # one hit of the first client, two of this


def test_an_upstream_with_ttl_0_is_never_answered_here(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    upstream.route("/n", Reply(200, {"n": 1}, {"Content-Type": "application/json"}))
    app = make_app(upstream_extra="ttl = 0")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/cors/api/n").status_code == 200
    assert app.extensions["bridge.hit_path"].served == 0
    assert len([s for s in upstream.seen if s.path == "/n"]) == 3


def test_a_failure_inside_the_hit_path_costs_speed_not_the_answer(
        pair: tuple[Bridge, Bridge], monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.hitpath

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the hit path")

    both(pair, "GET", "/cors/api/d", {"Origin": ALLOWED})
    monkeypatch.setattr(bridge.hitpath, "cors_hit_headers", broken)
    assert not both(pair, "GET", "/cors/api/d", {"Origin": ALLOWED})  # the views answered, the same


def test_kept_headers_count_against_the_memory_bound(
        make_config: Callable[..., Config], upstream: UpstreamServer) -> None:
    upstream.route("/m", Reply(200, {"m": 1}, {"Content-Type": "application/json", "ETag": '"m"'}))
    app = create_app(make_config())
    lru = app.extensions["bridge.cache"].store._lru
    client = app.test_client()
    client.get("/cors/api/m", headers={"Origin": ALLOWED})  # the miss stores the entry
    before = lru.currsize
    client.get("/cors/api/m", headers={"Origin": ALLOWED})  # the first hit keeps its headers
    after_cors = lru.currsize
    client.get("/jsonp/api/m?callback=cb")  # and the JSONP path's, and the script JSON
    after_jsonp = lru.currsize
    client.get("/cors/api/m", headers={"Origin": ALLOWED})
    assert app.extensions["bridge.hit_path"].served == 3
    assert before < after_cors < after_jsonp == lru.currsize
    entry = next(v[1] for v in lru.values() if hasattr(v[1], "cors_headers"))
    assert entry.cors_headers is not None and entry.jsonp_headers is not None
    assert after_cors - before >= sum(len(k) + len(v) for k, v in entry.cors_headers)


@pytest.mark.redis
def test_with_redis_hits_are_served_here_and_nothing_is_kept_on_entries(
        make_config: Callable[..., Config], upstream: UpstreamServer, redis_server) -> None:  # type: ignore[no-untyped-def]
    redis_server.flush()
    upstream.route("/r", Reply(200, {"r": 1}, {"Content-Type": "application/json", "ETag": '"r"'}))
    config = make_config(f"[cache]\nbackend = {redis_server.url}\n")
    fast = create_app(config)
    views = create_app(config, hit_path=False)
    hit_path = fast.extensions["bridge.hit_path"]
    assert not hit_path.remembers
    first = fast.test_client().get("/cors/api/r", headers={"Origin": ALLOWED})
    assert "stored" in first.headers["Cache-Status"]
    ours = fast.test_client().get("/cors/api/r", headers={"Origin": ALLOWED})
    theirs = views.test_client().get("/cors/api/r", headers={"Origin": ALLOWED})
    assert hit_path.served == 1
    assert ours.headers["Cache-Status"].startswith("jsonp-cors-bridge; hit")
    assert comparable(list(ours.headers)) == comparable(list(theirs.headers))
    assert ours.get_data() == theirs.get_data()
    assert len([s for s in upstream.seen if s.path == "/r"]) == 1


def test_requests_that_differ_in_one_byte_are_checked_on_their_own(pair: tuple[Bridge, Bridge]) -> None:
    """The shape memo keys on every header, the raw url and the query: a request one header or one
    character away from a remembered one is never answered with the remembered one's checks."""
    def fast_answer(url: str, headers: dict[str, str] | None = None) -> TestResponse:
        """The hit path's bridge's answer; the other is asked too, to keep their events alike."""
        pair[1].app.test_client().get(url, headers=headers or {})
        return pair[0].app.test_client().get(url, headers=headers or {})

    assert both(pair, "GET", "/cors/api/d", {"Origin": ALLOWED})
    assert both(pair, "GET", "/cors/api/d", {"Origin": ALLOWED})  # from the memo, the same answer
    other = "https://deep.sub.example.org"
    assert both(pair, "GET", "/cors/api/d", {"Origin": other})
    answer = fast_answer("/cors/api/d", {"Origin": other})
    assert answer.headers["Access-Control-Allow-Origin"] == other
    for hostile in ("https://app.example.com.evil.example", "https://evil.example", f"{ALLOWED}/"):
        assert not both(pair, "GET", "/cors/api/d", {"Origin": hostile})
        refused = fast_answer("/cors/api/d", {"Origin": hostile})
        assert "Access-Control-Allow-Origin" not in refused.headers
    assert both(pair, "GET", "/jsonp/api/d?callback=cb")
    assert both(pair, "GET", "/jsonp/api/d?callback=cc")
    script = fast_answer("/jsonp/api/d?callback=cc").get_data()
    assert script.startswith(b"/**/cc(")
    assert not both(pair, "GET", "/jsonp/api/d?callback=cb", {"X-Note": "a\x00b"})
    assert not both(pair, "GET", "/jsonp/api/d?callback=cb&callback=cb")


def test_the_shape_memo_is_bounded(make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    from bridge.hitpath import SHAPE_MEMO_CHARS, SHAPE_MEMO_SIZE

    upstream.route("/b", Reply(200, {"b": 1}, {"Content-Type": "application/json"}))
    app = make_app()
    hit_path = app.extensions["bridge.hit_path"]
    client = app.test_client()
    client.get("/jsonp/api/b?callback=cb")  # fills the cache; the callback is not part of its key
    for i in range(SHAPE_MEMO_SIZE + 50):
        assert client.get(f"/jsonp/api/b?callback=cb{i}").get_data().startswith(f"/**/cb{i}(".encode())
        assert 0 < len(hit_path._shapes) <= SHAPE_MEMO_SIZE
    long_header = {"X-Note": "n" * SHAPE_MEMO_CHARS}
    kept = len(hit_path._shapes)
    served = hit_path.served
    assert client.get("/jsonp/api/b?callback=cb", headers=long_header).status_code == 200
    assert hit_path.served == served + 1 and len(hit_path._shapes) == kept  # served, not kept


# --- plain GETs that are not fresh hits: fetched here, rendered by the views' functions ---


@pytest.fixture(params=LIMITS, ids=["no-limit", "limit"])
def miss_pair(request: pytest.FixtureRequest, make_config: Callable[..., Config],
              upstream: UpstreamServer) -> tuple[Bridge, Bridge]:
    """Two bridges whose ``api`` is never cached (ttl = 0): every request asks the upstream."""
    route_answers(upstream)
    upstream.route("/broken", Reply(500, b"<h1>oops</h1>", {"Content-Type": "text/html"}))
    upstream.route("/notjson", Reply(200, b"<html>", {"Content-Type": "application/json"}))
    upstream.route("/empty", Reply(204, None, {}))
    upstream.route("/elsewhere", Reply(302, None, {"Location": "https://evil.example/d"}))
    upstream.route("/moved", Reply(302, None, {"Location": "/d"}))
    upstream.route("/slow", Reply(200, {"late": True}, {"Content-Type": "application/json"}, delay=3))
    upstream.route("/echo", Reply(200, {"echo": True}, {
        "Content-Type": "Application/JSON; charset=UTF-8", "X-Request-ID": "not-this-request",
        "Age": "7", "Cache-Status": "upstream-cache; hit",
        "Vary": "Origin", "X-Content-Type-Options": "sniff-please", "Content-Security-Policy": "none"}))
    config = make_config(CACHE + request.param, upstream_extra="ttl = 0\ntimeout = 0.5")
    return build(config, True), build(config, False)


MISSES = [
    pytest.param("/cors/api/d?b=2&a=1", {"Origin": ALLOWED}, True, id="cors-allowed-origin"),
    pytest.param("/cors/api/d", {}, True, id="cors-no-origin"),
    pytest.param("/cors/api/d", {"Origin": ALLOWED, "Accept-Language": "de"}, True, id="cors-vary"),
    pytest.param("/cors/api/d", {"Origin": ALLOWED, "X-Request-ID": "abc.DEF-123_x"}, True,
                 id="client-id"),
    pytest.param("/cors/api/plain", {"Origin": ALLOWED}, True, id="cors-no-content-type"),
    pytest.param("/cors/api/gone", {"Origin": ALLOWED}, True, id="cors-404"),
    pytest.param("/cors/api/broken", {"Origin": ALLOWED}, True, id="cors-500-html"),
    pytest.param("/cors/api/echo", {"Origin": ALLOWED}, True, id="cors-upstream-id-age-length"),
    pytest.param("/cors/api/moved", {"Origin": ALLOWED}, True, id="cors-redirect-followed"),
    pytest.param("/jsonp/api/d?callback=cb", {}, True, id="jsonp"),
    pytest.param("/jsonp/api/echo?callback=cb&envelope=1", {}, True, id="jsonp-envelope"),
    pytest.param("/jsonp/api/gone?callback=cb", {}, True, id="jsonp-404"),
    pytest.param("/jsonp/api/broken?callback=cb&envelope=1", {}, False, id="jsonp-500-not-json"),
    pytest.param("/jsonp/api/notjson?callback=cb", {}, False, id="jsonp-invalid-json"),
    pytest.param("/cors/api/empty", {"Origin": ALLOWED}, False, id="cors-204"),
    pytest.param("/cors/api/elsewhere", {"Origin": ALLOWED}, False, id="cors-redirect-outside"),
    pytest.param("/jsonp/api/elsewhere?callback=cb&envelope=1", {}, False, id="jsonp-redirect-outside"),
    pytest.param("/cors/api/slow", {"Origin": ALLOWED}, False, id="cors-timeout"),
    pytest.param("/jsonp/api/slow?callback=cb&envelope=1", {}, False, id="jsonp-timeout-envelope"),
]


@pytest.mark.parametrize(("url", "headers", "here"), MISSES)
def test_a_miss_is_fetched_once_and_answered_as_the_views_answer_it(
        miss_pair: tuple[Bridge, Bridge], upstream: UpstreamServer, url: str, headers: dict[str, str],
        here: bool) -> None:
    """Answered here or (refusals, bodiless answers) by the views from what was fetched here: the
    same answer as the views' own either way, one upstream request per client request, and the id
    the upstream saw is the one the client got."""
    fast, views = miss_pair
    assert fast.hit_path is not None
    before = fast.hit_path.fetched
    asked = len(upstream.seen)
    answer = fast.app.test_client().get(url, headers=headers)
    views.app.test_client().get(url, headers=headers)  # keeps the two bridges' events alike
    assert fast.hit_path.fetched - before == (1 if here else 0)
    fast_asked = upstream.seen[asked:len(upstream.seen) - (len(upstream.seen) - asked) // 2]
    assert len(upstream.seen) - asked == 2 * len(fast_asked)  # as many upstream requests as the views
    assert fast_asked and all(s.headers.get("x-request-id") == answer.headers["X-Request-ID"]
                              for s in fast_asked)
    assert fast.records[-1].request_id == answer.headers["X-Request-ID"]
    both(miss_pair, "GET", url, headers)
