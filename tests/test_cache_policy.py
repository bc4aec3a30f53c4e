"""The cache's rules as plain functions: key, freshness, Vary, conditionals, Cache-Status, single-flight."""

from __future__ import annotations

import threading

import pytest

from bridge.cache import SingleFlight
from bridge.cache.freshness import (
    cache_control,
    freshness_lifetime,
    not_modified,
    renewed_headers,
    retention,
    storable_lifetime,
)
from bridge.cache.key import primary_key, response_vary, variant_key
from bridge.cache.status import CacheStatus, forwarded_status, hit_status
from bridge.policy.headers import http_date
from bridge.upstream.message import UpstreamResponse


def answer(status: int = 200, **headers: str) -> UpstreamResponse:
    return UpstreamResponse(status, tuple((k.replace("_", "-"), v) for k, v in headers.items()), b"{}")


# --- the key ---


@pytest.mark.parametrize(("one", "other"), [
    (("api", "x", "a=1"), ("api2", "x", "a=1")),
    (("api", "x", "a=1"), ("api", "y", "a=1")),
    (("api", "x", "a=1"), ("api", "x", "a=2")),
    (("api", "x", "a=1&a=2"), ("api", "x", "a=2&a=1")),
    (("api", "x", "a=1&b=2"), ("api", "x", "b=2&a=1")),  # forwarded in another order
    (("api", "x", "flag"), ("api", "x", "flag=")),
    (("api", "x", "q=a+b"), ("api", "x", "q=a%20b")),
    (("api", "x", "callback=cb"), ("api", "x", "")),  # what is forwarded is keyed
    (("ap", "ix", ""), ("api", "x", "")),
    (("api", "x?a=1", ""), ("api", "x", "a=1")),
], ids=["upstream", "path", "value", "repeat-order", "order", "valueless", "plus-vs-percent",
        "callback-forwarded", "name-path-boundary", "path-query-boundary"])
def test_primary_keys_that_must_differ(one: tuple, other: tuple) -> None:  # type: ignore[type-arg]
    assert primary_key(*one) != primary_key(*other)


def test_variant_key_counts_the_forwarded_accept_and_varied_headers_only() -> None:
    primary = primary_key("api", "items", "")
    base = variant_key(primary, (), [("Accept", "application/json")])
    assert variant_key(primary, (), [("Accept", "application/json"), ("Origin", "https://a.example"),
                                     ("Accept-Language", "fr")]) == base
    assert variant_key(primary, (), [("Accept", "application/xml")]) != base
    fr = variant_key(primary, ("accept-language",), [("Accept-Language", "fr")])
    de = variant_key(primary, ("accept-language",), [("Accept-Language", "de")])
    assert fr != de
    assert variant_key(primary, ("accept-language",), [("accept-language", " fr ")]) == fr


def test_vary_accept_keys_on_the_forwarded_accept() -> None:
    primary = primary_key("api", "items", "")
    assert variant_key(primary, ("accept",), [("Accept", "application/json")]) == \
        variant_key(primary, (), [("Accept", "application/json")])
    assert variant_key(primary, ("accept",), [("Accept", "application/xml")]) != \
        variant_key(primary, ("accept",), [("Accept", "application/json")])


@pytest.mark.parametrize(("vary", "expected"), [
    (None, ()),
    ("Accept-Language", ("accept-language",)),
    ("Origin, Accept-Encoding", ()),  # never forwarded, so they cannot have changed the answer
    ("Cookie, Authorization", ()),
    ("accept, ACCEPT-LANGUAGE", ("accept", "accept-language")),
    ("*", None),
    ("Accept, *", None),
    ("X-Tenant", ()),  # not forwarded unless configured
], ids=["none", "language", "origin-encoding", "credentials", "case", "star", "star-in-list",
        "unforwarded"])
def test_response_vary(vary: str | None, expected: tuple[str, ...] | None) -> None:
    response = answer() if vary is None else answer(Vary=vary)
    assert response_vary(response) == expected


def test_response_vary_counts_configured_forward_headers() -> None:
    assert response_vary(answer(Vary="X-Tenant"), ("X-Tenant",)) == ("x-tenant",)


# --- freshness ---


@pytest.mark.parametrize(("headers", "ttl", "expected"), [
    ({}, 60, 60),
    ({"Cache_Control": "max-age=5"}, 60, 5),
    ({"Cache_Control": "max-age=600"}, 60, 60),  # the upstream can only tighten the ttl
    ({"Cache_Control": "s-maxage=7, max-age=600"}, 60, 7),
    ({"Cache_Control": "max-age=3, s-maxage=30"}, 60, 30),  # s-maxage is the shared cache's
    ({"Cache_Control": "no-store"}, 60, None),
    ({"Cache_Control": "NO-STORE"}, 60, None),
    ({"Cache_Control": "private"}, 60, None),
    ({"Cache_Control": 'private="Set-Cookie", max-age=60'}, 60, None),
    ({"Cache_Control": "public, max-age=10"}, 60, 10),
    ({"Cache_Control": 'max-age="12"'}, 60, 12),
    ({"Cache_Control": "max-age=abc"}, 60, None),  # malformed: stale at once, no validator
    ({"Cache_Control": "max-age=-1", "ETag": '"a"'}, 60, 0),
    ({"Cache_Control": "no-cache"}, 60, None),
    ({"Cache_Control": "no-cache", "ETag": '"a"'}, 60, 0),
    ({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT", "Date": "Thu, 01 Jan 1970 00:00:00 GMT"}, 60, None),
    ({"Expires": "Thu, 01 Jan 1970 00:00:30 GMT", "Date": "Thu, 01 Jan 1970 00:00:00 GMT"}, 60, 30),
    ({"Expires": "0", "Last_Modified": "Thu, 01 Jan 1970 00:00:00 GMT"}, 60, 0),
    ({}, 0, None),
], ids=["ttl", "max-age-below", "max-age-above", "s-maxage-wins", "s-maxage-above-max-age",
        "no-store", "no-store-case", "private", "private-field", "public", "quoted", "malformed",
        "negative-with-etag", "no-cache", "no-cache-with-etag", "expired", "expires", "bad-expires",
        "ttl-zero"])
def test_freshness_lifetime(headers: dict[str, str], ttl: int, expected: int | None) -> None:
    assert freshness_lifetime(answer(**headers), ttl) == expected


def lifetime_left(response: UpstreamResponse, ttl: int, heuristic: bool = True) -> int | None:
    """Seconds of freshness the answer has left on arrival (its lifetime less its own Age)."""
    from bridge.cache.freshness import initial_age
    lifetime = freshness_lifetime(response, ttl, heuristic)
    return None if lifetime is None else lifetime - initial_age(response)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"Cache_Control": "max-age=10000", "Age": "3600"}, 60, id="ttl-caps-the-time-held-here"),
    pytest.param({"Cache_Control": "max-age=3630", "Age": "3600"}, 30, id="the-upstream-tightens-it"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "7200"}, None, id="old-on-arrival"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "7200", "ETag": '"a"'}, -3600,
                 id="old-on-arrival-kept-to-revalidate"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "7200, 0"}, None, id="a-list:-its-first"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "0, 7200"}, 60, id="a-list:-its-first-is-0"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "abc"}, 60, id="not-a-number:-ignored"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "-7200"}, 60, id="negative:-ignored"),
    pytest.param({"Cache_Control": "max-age=3600", "Age": "2147483648"}, None, id="huge"),
    pytest.param({"Age": "100"}, 60, id="no-freshness-information"),
])
def test_the_upstreams_age_counts_and_the_ttl_caps_the_time_held(headers: dict[str, str],
                                                                  expected: int | None) -> None:
    assert lifetime_left(answer(**headers), 60) == expected


def test_two_age_lines_take_the_first() -> None:
    def two(first: str, second: str) -> UpstreamResponse:
        return UpstreamResponse(200, (("Cache-Control", "max-age=3600"), ("Age", first), ("Age", second)),
                                b"{}")
    assert lifetime_left(two("7200", "0"), 60) is None
    assert lifetime_left(two("0", "7200"), 60) == 60


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"CDN_Cache_Control": "max-age=0", "Cache_Control": "max-age=3600"}, None, id="cdn-zero"),
    pytest.param({"CDN_Cache_Control": "max-age=5", "Cache_Control": "max-age=3600"}, 5, id="cdn-shorter"),
    pytest.param({"CDN_Cache_Control": "max-age=30", "Cache_Control": "no-store"}, 30,
                 id="cdn-fresh-over-cc-no-store"),
    pytest.param({"CDN_Cache_Control": "private", "Cache_Control": "max-age=30"}, None, id="cdn-private"),
    pytest.param({"CDN_Cache_Control": "no-store", "Cache_Control": "max-age=30"}, None,
                 id="cdn-no-store"),
    pytest.param({"CDN_Cache_Control": "no-cache", "Cache_Control": "max-age=30", "ETag": '"a"'}, 0,
                 id="cdn-no-cache"),
    pytest.param({"CDN_Cache_Control": "max-age=30", "Expires": "0"}, 30, id="cdn-ignores-expires"),
    pytest.param({"CDN_Cache_Control": "max-age=0", "Expires": "Thu, 01 Jan 2099 00:00:00 GMT",
                  "Date": "Thu, 01 Jan 2026 00:00:00 GMT"}, None, id="cdn-zero-over-future-expires"),
    pytest.param({"CDN_Cache_Control": "max-age =100", "Cache_Control": "max-age=1"}, 1,
                 id="cdn-invalid:-cache-control-decides"),
    pytest.param({"CDN_Cache_Control": "", "Cache_Control": "max-age=1"}, 1, id="cdn-empty"),
    pytest.param({"CDN_Cache_Control": 'max-age="100"', "Cache_Control": "max-age=1"}, 1,
                 id="cdn-wrong-type:-cache-control-decides"),
    pytest.param({"CDN_Cache_Control": "foobar, MaX-aGe=20"}, 20, id="cdn-extension-and-case"),
    pytest.param({"Jsonp_Cors_Bridge_Cache_Control": "max-age=7", "CDN_Cache_Control": "max-age=30"}, 7,
                 id="the-bridges-own-first"),
    pytest.param({"Jsonp_Cors_Bridge_Cache_Control": "max-age 7", "CDN_Cache_Control": "max-age=30"}, 30,
                 id="the-bridges-own-invalid:-cdn-next"),
])
def test_targeted_cache_control_fields(headers: dict[str, str], expected: int | None) -> None:
    """RFC 9213: the first valid targeted field replaces Cache-Control and Expires."""
    assert lifetime_left(answer(**headers), 60) == expected


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({}, None, id="nothing-to-revalidate-with"),
    pytest.param({"ETag": '"a"'}, 0, id="kept-to-revalidate"),
    pytest.param({"Cache_Control": "max-age=10"}, 10, id="explicit-freshness-counts"),
    pytest.param({"Expires": "Thu, 01 Jan 2026 00:00:30 GMT", "Date": "Thu, 01 Jan 2026 00:00:00 GMT"},
                 30, id="expires-counts"),
])
def test_without_a_heuristic_only_explicit_freshness_is_reused(headers: dict[str, str],
                                                                expected: int | None) -> None:
    assert lifetime_left(answer(**headers), 60, heuristic=False) == expected


# The Expires values of http-tests/cache-tests' expires-parse.mjs (at b55b8bda): the three forms of
# RFC 9110 section 5.6.7 in any case are dates; anything looser is not, and then already expired.
VALID_DATES = {
    "Tue, 19 Jan 2038 14:14:08 GMT": "2038-01-19 14:14:08",
    "Sun, 21 Nov 2286 04:46:39 GMT": "2286-11-21 04:46:39",
    "Thursday, 18-Aug-50 02:01:18 GMT": "2050-08-18 02:01:18",
    "Thu Aug  8 02:01:18 2050": "2050-08-08 02:01:18",
    "THU, 18 Aug 2050 02:01:18 GMT": "2050-08-18 02:01:18",
    "Thu, 18 AUG 2050 02:01:18 GMT": "2050-08-18 02:01:18",
    "Thu, 18 Aug 2050 02:01:18 gMT": "2050-08-18 02:01:18",
}
INVALID_DATES = ["Thu, 18 Aug 2050 02:01:18 UTC", "Thu, 18 Aug 2050 02:01:18 AEST",
                 "Thu, 18 Aug 50 02:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT",
                 "Thu, 18  Aug  2050 02:01:18 GMT", "Thu, 18-Aug-2050 02:01:18 GMT",
                 "Thu, 18 Aug 2050 02.01.18 GMT", "Thu, 18 Aug 2050 2:01:18 GMT",
                 "Thu, 31 Feb 2050 02:01:18 GMT", "Thu, 18 Aug 2050 24:01:18 GMT", "0", ""]


@pytest.mark.parametrize("value", list(VALID_DATES))
def test_http_date_reads_the_three_forms(value: str) -> None:
    import time
    parsed = http_date(value, now=1_800_000_000)  # 2027: "50" is 2050, not 1950
    assert parsed is not None
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(parsed)) == VALID_DATES[value]


@pytest.mark.parametrize("value", INVALID_DATES)
def test_an_invalid_expires_is_already_expired(value: str) -> None:
    assert http_date(value) is None
    future = answer(Expires=value, Date="Thu, 01 Jan 2026 00:00:00 GMT", ETag='"a"')
    assert freshness_lifetime(future, 60) == 0  # stored for revalidation only, never served fresh


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    in_2027 = 1_800_000_000
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT", now=in_2027) == 784111777.0  # 1994, RFC 9110's own


@pytest.mark.parametrize(("status", "negative_ttl", "expected"), [
    (200, 0, 60), (404, 0, None), (404, 10, 10), (404, 600, 60), (500, 10, None),
    (304, 10, None), (301, 10, None), (206, 10, None),
], ids=["ok", "404-off", "404-on", "404-capped-by-ttl", "500", "304", "301", "206"])
def test_storable_statuses(status: int, negative_ttl: int, expected: int | None) -> None:
    assert storable_lifetime(answer(status), 60, negative_ttl) == expected


def test_retention_keeps_stale_entries_only_while_useful() -> None:
    assert retention(60, False, 60, 0) == 60
    assert retention(60, True, 60, 0) == 120
    assert retention(60, False, 60, 300) == 360
    assert retention(0, False, 60, 0) == 1


def test_renewed_headers_take_the_304s_fields_but_not_its_framing() -> None:
    stored = (("Content-Type", "application/json"), ("ETag", '"1"'), ("Cache-Control", "max-age=5"))
    renewed = renewed_headers(stored, (("Cache-Control", "max-age=9"), ("Content-Type", "text/plain"),
                                       ("Content-Length", "0")))
    assert dict(renewed) == {"Content-Type": "application/json", "ETag": '"1"',
                             "Cache-Control": "max-age=9"}


def test_cache_control_parsing_keeps_the_first_of_repeated_directives() -> None:
    directives = cache_control([("Cache-Control", "max-age=5"), ("cache-control", "max-age=9, public")])
    assert directives == {"max-age": "5", "public": None}


# --- clients' conditional requests ---


@pytest.mark.parametrize(("request_headers", "response_headers", "expected"), [
    ({"If-None-Match": '"v1"'}, {"ETag": '"v1"'}, True),
    ({"If-None-Match": '"v0", "v1"'}, {"ETag": '"v1"'}, True),
    ({"If-None-Match": 'W/"v1"'}, {"ETag": '"v1"'}, True),  # weak comparison (RFC 9110 8.8.3.2)
    ({"If-None-Match": '"v1"'}, {"ETag": 'W/"v1"'}, True),
    ({"If-None-Match": "*"}, {"ETag": '"v1"'}, True),
    ({"If-None-Match": '"v2"'}, {"ETag": '"v1"'}, False),
    ({"If-None-Match": "v1"}, {"ETag": '"v1"'}, False),  # unquoted: not an entity-tag
    ({"If-None-Match": '"v1"'}, {}, False),
    ({"If-None-Match": '"v2"', "If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"},
     {"ETag": '"v1"', "Last-Modified": "Thu, 01 Jan 2025 00:00:00 GMT"}, False),
    ({"If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"},
     {"Last-Modified": "Thu, 01 Jan 2025 00:00:00 GMT"}, True),
    ({"If-Modified-Since": "Thu, 01 Jan 2024 00:00:00 GMT"},
     {"Last-Modified": "Thu, 01 Jan 2025 00:00:00 GMT"}, False),
    ({"If-Modified-Since": "yesterday"}, {"Last-Modified": "Thu, 01 Jan 2025 00:00:00 GMT"}, False),
    ({}, {"ETag": '"v1"'}, False),
], ids=["match", "list", "weak-request", "weak-entry", "star", "other", "unquoted", "no-etag",
        "inm-wins-over-ims", "ims-newer", "ims-older", "ims-garbage", "unconditional"])
def test_not_modified(request_headers: dict[str, str], response_headers: dict[str, str],
                      expected: bool) -> None:
    response = UpstreamResponse(200, tuple(response_headers.items()), b"{}")
    assert not_modified(request_headers.items(), response) is expected


def test_only_a_200_is_answered_not_modified() -> None:
    response = UpstreamResponse(404, (("ETag", '"v1"'),), b"{}")
    assert not not_modified([("If-None-Match", '"v1"')], response)


# --- Cache-Status (RFC 9211) ---


@pytest.mark.parametrize(("status", "text", "outcome"), [
    (hit_status(42.7), "jsonp-cors-bridge; hit; ttl=42", "hit"),
    (hit_status(-3, "stale-if-error"), "jsonp-cors-bridge; hit; ttl=-3; detail=stale-if-error", "stale"),
    (hit_status(9).shared(), "jsonp-cors-bridge; hit; ttl=9; collapsed", "hit"),
    (forwarded_status("uri-miss", stored=True, ttl=60), "jsonp-cors-bridge; fwd=uri-miss; stored; ttl=60",
     "miss"),
    (forwarded_status("stale", fwd_status=304, stored=True, ttl=5),
     "jsonp-cors-bridge; fwd=stale; fwd-status=304; stored; ttl=5", "miss"),
    (forwarded_status("bypass"), "jsonp-cors-bridge; fwd=bypass", "miss"),
], ids=["hit", "served-stale", "collapsed", "stored", "revalidated", "bypass"])
def test_a_cache_status_renders_itself_and_names_its_outcome(status: CacheStatus, text: str,
                                                             outcome: str) -> None:
    """RFC 9211's text for the response, and the outcome the access log and metrics count,
    both read off the one value: nobody parses the text back."""
    assert (str(status), status.outcome) == (text, outcome)


# --- single-flight ---


def test_single_flight_runs_once_for_fifty_waiters() -> None:
    flight, calls, release = SingleFlight(), [], threading.Event()
    started = threading.Barrier(51)
    results: list[tuple[object, bool]] = []

    def call() -> str:
        calls.append(1)
        release.wait(10)
        return "answer"

    def worker() -> None:
        started.wait(10)
        results.append(flight.run("k", call, 10))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    started.wait(10)
    for _ in range(10_000):  # until every other thread waits for the one call
        if flight.waiting("k") == 49:
            break
        threading.Event().wait(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 50
    assert {r for r, _ in results} == {"answer"}
    assert len(calls) == 1
    assert sum(1 for _, leader in results if leader) == 1
    assert flight.under_way() == 0


def test_single_flight_shares_the_error_and_forgets_the_key() -> None:
    flight = SingleFlight()

    def fail() -> str:
        raise ValueError("upstream gone")

    with pytest.raises(ValueError, match="upstream gone"):
        flight.run("k", fail, 1)
    assert flight.run("k", lambda: "again", 1) == ("again", True)
