"""The cache through the app, against a real upstream, once with the memory store and once with Redis.

Hits are proved by counting the requests the upstream saw; expiry by ticking an injected clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

import bridge.policy.jsonp
from bridge import create_app
from bridge.cache import Cache
from bridge.config import Config
from tests.concurrency import together
from tests.conftest import ALLOWED
from tests.live import LiveServer
from tests.redis_server import RedisServer
from tests.upstream_server import Reply, Seen, UpstreamServer

JSON = {"Accept": "application/json"}


class FakeClock:
    """Wall-clock seconds that move only when a test ticks them."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Bridge:
    app: Flask
    cache: Cache
    clock: FakeClock
    events: list[str] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """The same suite against both stores; Redis is a real redis-server, emptied for each test."""
    if request.param == "memory":
        return "memory"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
def make_bridge(make_config: Callable[..., Config], backend: str) -> Callable[..., Bridge]:
    def make(cache: str = "", upstream_extra: str = "", clock: FakeClock | None = None,
             backend_url: str | None = None) -> Bridge:
        config = make_config(f"[cache]\nbackend = {backend_url or backend}\n{cache}", upstream_extra)
        clock = clock or FakeClock()
        events: list[str] = []
        cache_obj = Cache.from_config(config, clock=clock, on_event=events.append)
        app = create_app(config, cache=cache_obj)
        app.testing = True
        return Bridge(app, cache_obj, clock, events)
    return make


@pytest.fixture
def bridge_(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()


def cache_status(response) -> str:  # type: ignore[no-untyped-def]
    return response.headers["Cache-Status"]


def once_all_wait(cache: Cache, waiters: int, reply: Reply) -> Callable[[Seen], Reply]:
    """An upstream route that answers only once ``waiters`` requests wait in the bridge for it, so
    a herd test does not depend on how the threads happen to be scheduled. Only the first request
    is held; later ones are answered at once."""
    held = threading.Event()

    def route(seen: Seen) -> Reply:
        if not held.is_set():
            held.set()
            for _ in range(10_000):
                if cache.flight.waiting() >= waiters:
                    break
                threading.Event().wait(0.001)
        return reply
    return route


# --- hits, keys, paths ---


def test_second_request_is_a_hit(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    first = bridge_.client.get("/cors/api/items", headers=JSON)
    assert first.status_code == 200
    assert cache_status(first) == "jsonp-cors-bridge; fwd=uri-miss; stored; ttl=60"
    assert first.headers["Age"] == "0"
    bridge_.clock.tick(15)
    second = bridge_.client.get("/cors/api/items", headers=JSON)
    assert second.get_json() == {"n": 1}
    assert cache_status(second) == "jsonp-cors-bridge; hit; ttl=45"
    assert second.headers["Age"] == "15"
    assert upstream.count("/items") == 1
    assert bridge_.events.count("hit") == 1 and bridge_.events.count("stored") == 1


def test_the_upstreams_age_counts_and_the_answer_has_one_age(bridge_: Bridge,
                                                             upstream: UpstreamServer) -> None:
    """RFC 9111 section 5.1: the answer carries the cache's Age, which includes the upstream's."""
    upstream.route("/aged", Reply(200, {"n": 1}, {"Age": "10", "Cache-Control": "max-age=100"}))
    first = bridge_.client.get("/cors/api/aged", headers=JSON)
    assert first.headers.getlist("Age") == ["10"]
    bridge_.clock.tick(5)
    for path in ("/cors/api/aged", "/jsonp/api/aged?callback=cb"):
        answer = bridge_.client.get(path, headers=JSON)
        assert answer.headers.getlist("Age") == ["15"], path
        # The ttl (60) caps the time held here (5 s so far), not the upstream's age: 55 left, within
        # the upstream's own 100 - 15.
        assert cache_status(answer) == "jsonp-cors-bridge; hit; ttl=55"


def test_cors_then_jsonp_is_one_upstream_request(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"html": "</script><b>"}))
    cors = bridge_.client.get("/cors/api/items?q=1", headers={"Accept": "*/*", "Origin": ALLOWED})
    assert cors.status_code == 200
    script = bridge_.client.get("/jsonp/api/items?q=1&callback=cb")
    assert script.status_code == 200
    assert script.get_data(as_text=True) == '/**/cb({"html": "\\u003c/script\\u003e\\u003cb\\u003e"});'
    assert upstream.count("/items") == 1
    assert cache_status(script).startswith("jsonp-cors-bridge; hit")


def test_jsonp_then_cors_is_one_upstream_request(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, [1, 2]))
    assert bridge_.client.get("/jsonp/api/items?callback=cb").status_code == 200
    cors = bridge_.client.get("/cors/api/items", headers={"Origin": ALLOWED})
    assert cors.get_json() == [1, 2]
    assert cors.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert upstream.count("/items") == 1


def test_callbacks_and_cache_busters_share_one_entry(bridge_: Bridge, upstream: UpstreamServer) -> None:
    """The JSONP path's control parameters never reach the upstream, so they never split the
    entry; the CORS path forwards its query as sent, so it shares the entry when it asks the same."""
    upstream.route("/items", Reply(200, {"ok": True}))
    for index in range(20):
        envelope = "&envelope=1" if index % 2 else ""
        response = bridge_.client.get(f"/jsonp/api/items?b=2&a=1&callback=cb{index}&_={1700 + index}"
                                      f"{envelope}")
        assert response.status_code == 200
        assert response.get_data(as_text=True).startswith(f"/**/cb{index}(")
    assert cache_status(bridge_.client.get("/cors/api/items?b=2&a=1")).startswith("jsonp-cors-bridge; hit")
    assert upstream.count("/items") == 1
    assert [s.raw_path for s in upstream.seen] == ["/items?b=2&a=1"]


def test_what_the_cors_path_forwards_is_what_it_keys(bridge_: Bridge, upstream: UpstreamServer) -> None:
    """A query the upstream sees differently is another entry: other order, a cache buster, a
    callback (which an upstream may answer as JSONP itself)."""
    upstream.route("/items", lambda seen: Reply(200, {"query": seen.raw_path}))
    for query in ("a=1&b=2", "b=2&a=1", "a=1&b=2&_=5", "a=1&b=2&callback=x", "a=1&b=2"):
        bridge_.client.get(f"/cors/api/items?{query}")
    assert [s.raw_path for s in upstream.seen] == ["/items?a=1&b=2", "/items?b=2&a=1",
                                                   "/items?a=1&b=2&_=5", "/items?a=1&b=2&callback=x"]


def test_a_different_query_or_accept_is_another_entry(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", lambda seen: Reply(200, {"q": dict(seen.query)}))
    bridge_.client.get("/cors/api/items?q=1")
    bridge_.client.get("/cors/api/items?q=2")
    bridge_.client.get("/cors/api/items?q=1", headers={"Accept": "application/xml"})
    bridge_.client.get("/cors/api/items?q=1", headers={"Accept": "*/*"})
    assert upstream.count("/items") == 3


def test_head_is_served_from_the_get_entry(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    cold_head = bridge_.client.head("/cors/api/items")
    assert cold_head.status_code == 200
    assert upstream.last().method == "HEAD"
    bridge_.client.get("/cors/api/items")
    head = bridge_.client.head("/cors/api/items")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(json.dumps({"n": 1})))
    assert cache_status(head).startswith("jsonp-cors-bridge; hit")
    assert upstream.count("/items") == 2  # the cold HEAD and the GET


def test_other_methods_are_never_cached(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    for _ in range(2):
        response = bridge_.client.post("/cors/api/items", json={"a": 1})
        assert cache_status(response) == "jsonp-cors-bridge; fwd=method"
    assert upstream.count("/items") == 2


def test_ttl_zero_upstream_is_never_cached(make_bridge: Callable[..., Bridge],
                                           upstream: UpstreamServer) -> None:
    bridge = make_bridge(upstream_extra="ttl = 0")
    upstream.route("/items", Reply(200, {"n": 1}))
    for _ in range(2):
        response = bridge.client.get("/jsonp/api/items?callback=cb")
        assert cache_status(response) == "jsonp-cors-bridge; fwd=bypass"
    assert upstream.count("/items") == 2


def test_per_upstream_ttl(make_bridge: Callable[..., Bridge], upstream: UpstreamServer) -> None:
    bridge = make_bridge(upstream_extra="ttl = 5")
    upstream.route("/items", Reply(200, {"n": 1}))
    assert cache_status(bridge.client.get("/cors/api/items")).endswith("stored; ttl=5")


# --- freshness ---


def test_entries_expire_with_the_clock(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(59)
    assert cache_status(bridge_.client.get("/cors/api/items")) == "jsonp-cors-bridge; hit; ttl=1"
    bridge_.clock.tick(1)
    assert cache_status(bridge_.client.get("/cors/api/items")) == \
        "jsonp-cors-bridge; fwd=uri-miss; stored; ttl=60"  # no validator: dropped, fetched anew
    assert upstream.count("/items") == 2


@pytest.mark.parametrize(("cache_control", "fresh_for"), [
    ("max-age=5", 5), ("s-maxage=7, max-age=1", 7), ("public, max-age=600", 60),
], ids=["max-age", "s-maxage", "above-ttl"])
def test_upstream_max_age_below_the_ttl_wins(bridge_: Bridge, upstream: UpstreamServer,
                                             cache_control: str, fresh_for: int) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers={"Cache-Control": cache_control}))
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(fresh_for - 1)
    bridge_.client.get("/cors/api/items")
    assert upstream.count("/items") == 1
    bridge_.clock.tick(1)
    bridge_.client.get("/cors/api/items")
    assert upstream.count("/items") == 2


@pytest.mark.parametrize("cache_control", ["no-store", "private", "private, max-age=60",
                                           "no-cache"])
def test_no_store_and_private_are_never_stored(bridge_: Bridge, upstream: UpstreamServer,
                                               cache_control: str) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers={"Cache-Control": cache_control}))
    for _ in range(3):
        response = bridge_.client.get("/jsonp/api/items?callback=cb")
        assert response.status_code == 200
        assert cache_status(response) == "jsonp-cors-bridge; fwd=uri-miss; fwd-status=200"
    assert upstream.count("/items") == 3
    assert "stored" not in bridge_.events


def test_vary_star_is_never_stored(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers={"Vary": "*"}))
    bridge_.client.get("/cors/api/items")
    bridge_.client.get("/cors/api/items")
    assert upstream.count("/items") == 2


def test_vary_splits_entries_by_the_named_header(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", lambda seen: Reply(200, {"lang": seen.headers.get("accept-language")},
                                                headers={"Vary": "Accept-Language, Origin"}))
    fr = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr",
                                                        "Origin": ALLOWED})
    de = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "de"})
    assert cache_status(de) == "jsonp-cors-bridge; fwd=vary-miss; stored; ttl=60"
    fr2 = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr",
                                                         "Origin": "https://other.example.org"})
    de2 = bridge_.client.get("/jsonp/api/items?callback=cb", headers={"Accept-Language": "de"})
    assert (fr.get_json(), de.get_json(), fr2.get_json()) == ({"lang": "fr"}, {"lang": "de"},
                                                              {"lang": "fr"})
    assert de2.get_data(as_text=True) == '/**/cb({"lang": "de"});'
    assert upstream.count("/items") == 2  # Origin is never forwarded, so it splits nothing


def test_a_hit_on_an_answer_that_varies_on_nothing_reads_the_store_once(
        bridge_: Bridge, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    upstream.route("/lang", lambda seen: Reply(200, {"lang": seen.headers.get("accept-language")},
                                               headers={"Vary": "Accept-Language"}))
    for path in ("/cors/api/items", "/cors/api/lang"):
        bridge_.client.get(path, headers={"Accept-Language": "fr"})
    reads: list[str] = []
    store_get = bridge_.cache.store.get
    monkeypatch.setattr(bridge_.cache.store, "get", lambda key: reads.append(key) or store_get(key))
    plain = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr"})
    assert cache_status(plain).startswith("jsonp-cors-bridge; hit") and len(reads) == 1
    varied = bridge_.client.get("/cors/api/lang", headers={"Accept-Language": "fr"})
    assert cache_status(varied).startswith("jsonp-cors-bridge; hit") and len(reads) == 4
    assert varied.get_json() == {"lang": "fr"}  # the plain key, the Vary record, the variant


def test_an_answer_that_varied_on_nothing_is_not_served_once_the_upstream_varies(
        bridge_: Bridge, upstream: UpstreamServer) -> None:
    """Looked up first, the answer without Vary goes when a newer answer of its url varies."""
    varies = {"now": False}

    def reply(seen: Seen) -> Reply:
        if not varies["now"]:
            return Reply(200, {"lang": "any"}, headers={"Cache-Control": "max-age=1, "
                                                        "stale-while-revalidate=60"})
        return Reply(200, {"lang": seen.headers.get("accept-language")},
                     headers={"Vary": "Accept-Language", "Cache-Control": "max-age=60"})

    upstream.route("/items", reply)
    assert bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr"}).get_json() == \
        {"lang": "any"}
    varies["now"] = True
    bridge_.clock.tick(5)  # stale, within stale-while-revalidate: refreshed in the background
    bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr"})
    deadline = time.monotonic() + 5
    while bridge_.events.count("stored") < 2:  # the refresh stored the varying answer
        assert time.monotonic() < deadline, "the stale answer was never refreshed"
        time.sleep(0.01)
    de = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "de"})
    fr = bridge_.client.get("/cors/api/items", headers={"Accept-Language": "fr"})
    assert (de.get_json(), fr.get_json()) == ({"lang": "de"}, {"lang": "fr"})
    assert cache_status(fr).startswith("jsonp-cors-bridge; hit")


# --- grants are per request, never stored ---


def test_a_cached_entry_grants_nothing_to_a_disallowed_origin(bridge_: Bridge,
                                                             upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"secret": "for allowed origins"}))
    allowed = bridge_.client.get("/cors/api/items", headers={"Origin": ALLOWED})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    other = bridge_.client.get("/cors/api/items", headers={"Origin": "https://a.example.org"})
    assert other.headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    refused = bridge_.client.get("/cors/api/items", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "secret" not in refused.get_data(as_text=True)
    no_origin = bridge_.client.get("/cors/api/items")
    assert cache_status(no_origin).startswith("jsonp-cors-bridge; hit")
    assert "Access-Control-Allow-Origin" not in no_origin.headers
    assert upstream.count("/items") == 1


# --- revalidation and clients' conditionals ---


def etag_route(etag: str = '"v1"', cache_control: str = "max-age=10") -> Callable[[Seen], Reply]:
    def reply(seen: Seen) -> Reply:
        headers = {"ETag": etag, "Cache-Control": cache_control}
        if seen.headers.get("if-none-match") == etag:
            return Reply(304, None, headers={**headers, "Cache-Control": "max-age=20"})
        return Reply(200, {"version": etag}, headers=headers)
    return reply


def test_stale_entry_is_revalidated_and_a_304_renews_it(bridge_: Bridge,
                                                         upstream: UpstreamServer) -> None:
    upstream.route("/items", etag_route())
    bridge_.client.get("/jsonp/api/items?callback=cb")
    bridge_.clock.tick(10)
    renewed = bridge_.client.get("/cors/api/items")
    assert renewed.status_code == 200 and renewed.get_json() == {"version": '"v1"'}
    assert cache_status(renewed) == "jsonp-cors-bridge; fwd=stale; fwd-status=304; stored; ttl=20"
    assert renewed.headers["Cache-Control"] == "max-age=20"  # the 304's fields update the entry
    assert upstream.last().headers["if-none-match"] == '"v1"'
    bridge_.clock.tick(19)
    assert cache_status(bridge_.client.get("/jsonp/api/items?callback=x")).startswith(
        "jsonp-cors-bridge; hit; ttl=1")
    assert upstream.count("/items") == 2
    assert "revalidated" in bridge_.events


def test_revalidation_with_last_modified(bridge_: Bridge, upstream: UpstreamServer) -> None:
    modified = "Wed, 01 Jan 2025 00:00:00 GMT"

    def reply(seen: Seen) -> Reply:
        if seen.headers.get("if-modified-since") == modified:
            return Reply(304, None, headers={"Last-Modified": modified})
        return Reply(200, {"n": 1}, headers={"Last-Modified": modified, "Cache-Control": "max-age=5"})

    upstream.route("/items", reply)
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(6)
    again = bridge_.client.get("/cors/api/items")
    assert again.get_json() == {"n": 1}
    assert "fwd-status=304" in cache_status(again)
    assert upstream.count("/items") == 2


def test_a_changed_answer_replaces_the_stale_entry(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", etag_route('"v1"'))
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(11)
    upstream.route("/items", etag_route('"v2"'))
    changed = bridge_.client.get("/cors/api/items")
    assert changed.get_json() == {"version": '"v2"'}
    assert cache_status(changed) == "jsonp-cors-bridge; fwd=stale; stored; ttl=10"


def test_client_if_none_match_gets_304_with_the_cors_grant(bridge_: Bridge,
                                                           upstream: UpstreamServer) -> None:
    upstream.route("/items", etag_route(cache_control="max-age=60"))
    first = bridge_.client.get("/cors/api/items", headers={"Origin": ALLOWED})
    assert first.headers["ETag"] == '"v1"'
    again = bridge_.client.get("/cors/api/items", headers={"Origin": ALLOWED,
                                                           "If-None-Match": '"v1"'})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == '"v1"'
    assert again.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in again.headers["Vary"]
    other = bridge_.client.get("/cors/api/items", headers={"If-None-Match": '"v0"'})
    assert other.status_code == 200
    assert upstream.count("/items") == 1
    assert "if-none-match" not in upstream.last().headers  # the client's validator stays here


# --- errors ---


def test_stale_if_error_serves_the_stale_entry(make_bridge: Callable[..., Bridge],
                                               upstream: UpstreamServer) -> None:
    bridge = make_bridge("stale_if_error = 30")
    upstream.route("/items", Reply(200, {"n": 1}))
    bridge.client.get("/cors/api/items")
    bridge.clock.tick(70)
    upstream.route("/items", Reply(503, {"error": "down"}))
    stale = bridge.client.get("/cors/api/items")
    assert stale.status_code == 200 and stale.get_json() == {"n": 1}
    assert cache_status(stale) == "jsonp-cors-bridge; hit; ttl=-10; detail=stale-if-error"
    assert stale.headers["Age"] == "70"
    upstream.route("/items", Reply(200, {"n": 1}, reset_after=0, lie_length=100))
    broken = bridge.client.get("/jsonp/api/items?callback=cb")
    assert broken.status_code == 200 and "detail=stale-if-error" in cache_status(broken)
    bridge.clock.tick(21)  # past stale_if_error: the error is the answer
    assert bridge.client.get("/cors/api/items").status_code == 502
    assert "stale" in bridge.events


def test_without_stale_if_error_an_upstream_failure_is_reported(bridge_: Bridge,
                                                                upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"n": 1}))
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(61)
    upstream.route("/items", Reply(503, {"error": "down"}))
    assert bridge_.client.get("/cors/api/items").status_code == 503


@pytest.mark.parametrize(("cache", "headers", "upstream_requests"), [
    pytest.param("", {}, 1, id="heuristic:-fresh-for-the-ttl"),
    pytest.param("heuristic = false", {}, 2, id="no-heuristic:-not-reused"),
    pytest.param("heuristic = false", {"Cache-Control": "max-age=30"}, 1, id="no-heuristic:-explicit"),
    pytest.param("", {"Cache-Control": "max-age=30", "CDN-Cache-Control": "max-age=0"}, 2,
                 id="cdn-cache-control-over-cache-control"),
    pytest.param("", {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=30"}, 1,
                 id="cdn-cache-control-stores-what-cache-control-would-not"),
    pytest.param("", {"CDN-Cache-Control": "max-age=30",
                      "Jsonp-Cors-Bridge-Cache-Control": "no-store"}, 2, id="the-bridges-own-first"),
])
def test_what_decides_reuse_through_the_app(make_bridge: Callable[..., Bridge], upstream: UpstreamServer,
                                            cache: str, headers: dict[str, str],
                                            upstream_requests: int) -> None:
    bridge = make_bridge(cache)
    upstream.route("/items", Reply(200, {"n": 1}, headers=dict(headers)))
    first = bridge.client.get("/cors/api/items")
    for name, value in headers.items():
        assert first.headers[name] == value  # passed on, for caches after the bridge
    bridge.clock.tick(1)
    bridge.client.get("/cors/api/items")
    assert upstream.count("/items") == upstream_requests


# --- stale-while-revalidate (RFC 5861) ---


def until(check: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether ``check()`` holds within ``seconds`` (for what a background thread does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def held_refresh(first: Reply, refreshed: Reply) -> tuple[Callable[[Seen], Reply], threading.Event]:
    """A route answering ``first``, then ``refreshed`` only once the test sets the event: a request
    answered while the refresh is held was not waiting for it."""
    release = threading.Event()
    calls: list[Seen] = []

    def route(seen: Seen) -> Reply:
        calls.append(seen)
        if len(calls) == 1:
            return first
        release.wait(10)
        return refreshed
    return route, release


def test_stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background(
        bridge_: Bridge, upstream: UpstreamServer) -> None:
    swr = "max-age=10, stale-while-revalidate=30"
    route, release = held_refresh(Reply(200, {"v": 1}, headers={"Cache-Control": swr, "ETag": '"v1"'}),
                                  Reply(200, {"v": 2}, headers={"Cache-Control": swr, "ETag": '"v2"'}))
    upstream.route("/items", route)
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(15)
    served = [bridge_.client.get("/cors/api/items"), bridge_.client.get("/jsonp/api/items?callback=cb")]
    assert served[0].get_json() == {"v": 1} and served[1].get_data(as_text=True).endswith('cb({"v": 1});')
    for response in served:
        assert cache_status(response) == "jsonp-cors-bridge; hit; ttl=-5; detail=stale-while-revalidate"
        assert response.headers["Age"] == "15"
    assert until(lambda: upstream.count("/items") == 2)  # one refresh for both requests, under way
    assert upstream.last().headers["if-none-match"] == '"v1"'  # conditional: the entry has an ETag
    release.set()
    assert until(lambda: bridge_.client.get("/cors/api/items").get_json() == {"v": 2})
    renewed = bridge_.client.get("/cors/api/items")
    assert cache_status(renewed) == "jsonp-cors-bridge; hit; ttl=10"
    assert upstream.count("/items") == 2
    assert bridge_.events.count("refresh") == 1 and "refresh_failed" not in bridge_.events


def test_past_the_stale_while_revalidate_window_the_request_waits(bridge_: Bridge,
                                                                  upstream: UpstreamServer) -> None:
    upstream.route("/items", etag_route(cache_control="max-age=10, stale-while-revalidate=30"))
    bridge_.client.get("/cors/api/items")
    bridge_.clock.tick(41)
    late = bridge_.client.get("/cors/api/items")
    assert cache_status(late) == "jsonp-cors-bridge; fwd=stale; fwd-status=304; stored; ttl=20"
    assert "refresh" not in bridge_.events


@pytest.mark.parametrize(("cache_setting", "upstream_setting", "cache_control", "window"), [
    pytest.param("stale_while_revalidate = 20", "", "max-age=10", True, id="bridge-default"),
    pytest.param("stale_while_revalidate = 20", "stale_while_revalidate = 0", "max-age=10", False,
                 id="off-for-this-upstream"),
    pytest.param("", "stale_while_revalidate = 20", "max-age=10", True, id="this-upstream-only"),
    pytest.param("stale_while_revalidate = 20", "", "max-age=10, must-revalidate", False,
                 id="must-revalidate"),
    pytest.param("stale_while_revalidate = 20", "", "s-maxage=10", False, id="s-maxage"),
    pytest.param("", "", "s-maxage=10, stale-while-revalidate=20", True, id="s-maxage-and-its-own"),
    pytest.param("stale_while_revalidate = 20", "", "max-age=10, stale-while-revalidate=1", False,
                 id="the-answer's-own-is-shorter"),
    pytest.param("", "", "max-age=10, stale-while-revalidate=2x", False, id="malformed"),
])
def test_where_stale_while_revalidate_applies(make_bridge: Callable[..., Bridge],
                                              upstream: UpstreamServer, cache_setting: str,
                                              upstream_setting: str, cache_control: str,
                                              window: bool) -> None:
    bridge = make_bridge(cache_setting, upstream_setting)
    upstream.route("/items", Reply(200, {"n": 1}, headers={"Cache-Control": cache_control}))
    bridge.client.get("/cors/api/items")
    bridge.clock.tick(15)
    status = cache_status(bridge.client.get("/cors/api/items"))
    assert (status == "jsonp-cors-bridge; hit; ttl=-5; detail=stale-while-revalidate") is window, status
    assert until(lambda: upstream.count("/items") == 2)


def test_a_failed_refresh_keeps_the_entry_within_stale_if_error(make_bridge: Callable[..., Bridge],
                                                                upstream: UpstreamServer) -> None:
    bridge = make_bridge("stale_if_error = 100")
    swr = {"Cache-Control": "max-age=10, stale-while-revalidate=30"}
    upstream.route("/items", Reply(200, {"n": 1}, headers=swr))
    bridge.client.get("/cors/api/items")
    bridge.clock.tick(15)
    upstream.route("/items", Reply(503, {"error": "down"}))
    assert "detail=stale-while-revalidate" in cache_status(bridge.client.get("/cors/api/items"))
    assert until(lambda: "refresh_failed" in bridge.events)
    again = bridge.client.get("/cors/api/items")  # the entry stayed, and is refreshed again
    assert again.get_json() == {"n": 1} and "detail=stale-while-revalidate" in cache_status(again)
    assert until(lambda: bridge.events.count("refresh_failed") == 2)
    upstream.route("/items", Reply(200, {"n": 2}, headers=swr))
    bridge.client.get("/cors/api/items")
    assert until(lambda: bridge.client.get("/cors/api/items").get_json() == {"n": 2})


@pytest.mark.parametrize(("negative_ttl", "upstream_requests"), [(0, 2), (30, 1)],
                         ids=["off", "on"])
def test_negative_ttl_for_404(make_bridge: Callable[..., Bridge], upstream: UpstreamServer,
                              negative_ttl: int, upstream_requests: int) -> None:
    bridge = make_bridge(f"negative_ttl = {negative_ttl}")
    for _ in range(2):
        response = bridge.client.get("/cors/api/missing")
        assert response.status_code == 404
    assert upstream.count("/missing") == upstream_requests
    if negative_ttl:
        bridge.clock.tick(negative_ttl)
        bridge.client.get("/cors/api/missing")
        assert upstream.count("/missing") == 2


def test_other_errors_are_never_stored(bridge_: Bridge, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(500, {"error": "boom"}, headers={"Cache-Control": "max-age=60"}))
    bridge_.client.get("/cors/api/items")
    bridge_.client.get("/cors/api/items")
    assert upstream.count("/items") == 2


# --- the cost of a hit ---


def test_a_jsonp_hit_parses_no_json(bridge_: Bridge, upstream: UpstreamServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = bridge.policy.jsonp.script_safe_json

    def counted(body: bytes, max_depth: int = 64) -> str:
        calls.append(1)
        return real(body, max_depth)

    monkeypatch.setattr(bridge.policy.jsonp, "script_safe_json", counted)
    upstream.route("/items", Reply(200, {"n": [1, 2, 3]}))
    bridge_.client.get("/cors/api/items")
    for index in range(5):
        response = bridge_.client.get(f"/jsonp/api/items?callback=cb{index}&envelope={index % 2}")
        assert response.status_code == 200
    assert len(calls) == 1
    assert upstream.count("/items") == 1


# --- one fetch per herd ---


def test_fifty_concurrent_cold_requests_are_one_upstream_request(bridge_: Bridge,
                                                                 upstream: UpstreamServer) -> None:
    upstream.route("/slow", once_all_wait(bridge_.cache, 49, Reply(200, {"slow": True})))
    server = LiveServer(bridge_.app).start()
    results: list[tuple[int, str]] = []

    def one(index: int) -> None:
        path = f"/jsonp/api/slow?callback=cb{index}" if index % 2 else "/cors/api/slow"
        response = requests.get(server.url + path, timeout=10)
        results.append((response.status_code, response.headers["Cache-Status"]))

    try:
        together(one, 50)
    finally:
        server.stop()
    assert [status for status, _ in results] == [200] * 50
    assert upstream.count("/slow") == 1
    assert sum(1 for _, status in results if "stored" in status and "collapsed" not in status) == 1


def test_waiters_do_not_share_an_answer_that_may_not_be_stored(bridge_: Bridge,
                                                                upstream: UpstreamServer) -> None:
    upstream.route("/private", once_all_wait(bridge_.cache, 4, Reply(
        200, {"me": 1}, headers={"Cache-Control": "private"})))
    server = LiveServer(bridge_.app).start()
    start = threading.Barrier(5)
    codes: list[int] = []

    def one() -> None:
        start.wait(10)
        codes.append(requests.get(server.url + "/cors/api/private", timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(5)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        server.stop()
    assert codes == [200] * 5
    assert upstream.count("/private") == 5
    assert bridge_.events.count("collapsed") == 4  # they did wait, and then asked for themselves


def test_concurrent_misses_share_an_answer_that_is_not_stored(bridge_: Bridge,
                                                               upstream: UpstreamServer) -> None:
    """A 404 without negative caching is not stored, but a herd asking for it is still one request."""
    upstream.route("/gone", once_all_wait(bridge_.cache, 9, Reply(404, {"error": "gone"})))
    server = LiveServer(bridge_.app).start()
    start = threading.Barrier(10)
    codes: list[int] = []

    def one() -> None:
        start.wait(10)
        codes.append(requests.get(server.url + "/cors/api/gone", timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        server.stop()
    assert codes == [404] * 10
    assert upstream.count("/gone") == 1
    assert bridge_.events.count("collapsed") == 9


# --- health ---


def test_healthz_reports_the_cache(bridge_: Bridge, backend: str) -> None:
    health = bridge_.client.get("/healthz").get_json()
    assert health["status"] == "ok"
    if backend == "memory":
        assert health["cache"]["backend"] == "memory"
        assert health["cache"]["max_bytes"] == 64 * 1024 * 1024
    else:
        assert {k: health["cache"][k] for k in ("backend", "redis")} == {"backend": "redis", "redis": "up"}
    assert (health["cache"]["fetching"], health["cache"]["waiting"]) == (0, 0)  # this process's herd


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


# --- hostile inputs: nothing a client or upstream sends makes a 500 ---


@pytest.mark.parametrize("headers", [
    {"Cache-Control": "max-age=99999999999999999999999"},
    {"Cache-Control": "max-age=, s-maxage=x, =, ,,,"},
    {"Cache-Control": 'no-store="', "Vary": ",,,"},
    {"Expires": "Sun, 99 Foo 20x6 99:99:99 GMT", "Date": "nope"},
    {"Expires": "Fri, 31 Dec 9999 23:59:59 GMT", "Date": "Thu, 01 Jan 1970 00:00:00 GMT"},
    {"Age": "-5"}, {"Age": "99999999999999999999"},
    {"ETag": "unquoted", "Last-Modified": "yesterday"},
    {"Vary": "Accept-Language, \u00e9t\u00e9"},
], ids=["huge-max-age", "garbled-directives", "unterminated", "bad-dates", "far-expires",
        "negative-age", "huge-age", "bad-validators", "non-ascii-vary"])
def test_hostile_upstream_cache_headers(bridge_: Bridge, upstream: UpstreamServer,
                                        headers: dict[str, str]) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers=headers))
    for _ in range(2):
        response = bridge_.client.get("/cors/api/items", headers={"If-None-Match": '"x"'})
        assert response.status_code == 200 and response.get_json() == {"n": 1}
    bridge_.clock.tick(120)
    assert bridge_.client.get("/jsonp/api/items?callback=cb").status_code == 200


@pytest.mark.parametrize("headers", [
    {"If-None-Match": '"' * 500}, {"If-None-Match": "W/"}, {"If-None-Match": ", , *, "},
    {"If-Modified-Since": "Thu, 31 Feb 2026 25:61:61 GMT"}, {"If-Modified-Since": "\u00ff" * 50},
    {"Accept": ";;;q=0,,*/*;q=abc"}, {"Accept": "\u00e9/\u00e9"}, {"Accept-Language": "x" * 4000},
], ids=["quotes", "bare-weak", "star-in-list", "impossible-date", "latin1-date", "garbled-accept",
        "latin1-accept", "long-language"])
def test_hostile_client_headers(bridge_: Bridge, upstream: UpstreamServer,
                                headers: dict[str, str]) -> None:
    upstream.route("/items", Reply(200, {"n": 1}, headers={"ETag": '"v1"',
                                                          "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}))
    for _ in range(2):
        response = bridge_.client.get("/cors/api/items", headers=headers)
        assert response.status_code in (200, 304)
