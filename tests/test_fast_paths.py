"""The road's shortcuts say exactly what the long way says.

Each memo or hand-built piece that makes a cache hit cheaper is checked here against the code it
stands in for: the access line against ``json.dumps``, the remembered CORS grant against
``origin_allowed`` + ``build_grant``, the remembered Vary against werkzeug's ``response.vary.add``,
the pre-bound metric children against the counters they count into.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import pytest
from flask import Response
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cache.key import primary_key, request_keys, variant_key
from bridge.config import parse_config
from bridge.errors import InvalidPath
from bridge.ops.access import ACCESS_LOGGER, AccessRecord, _BareLines, access_line
from bridge.ops.metrics import BridgeMetrics
from bridge.policy.cors import (
    GRANT_MEMO_SIZE,
    CorsPolicy,
    build_grant,
    origin_allowed,
    parse_origin_pattern,
    response_grant,
)
from bridge.policy.paths import PATH_MEMO_CHARS, checked_path, encode_rest, split_rest
from bridge.proxy.render import add_vary
from bridge.upstream.message import UpstreamRequest


@settings(max_examples=300)
@given(st.text(), st.text(), st.text(), st.integers(100, 599), st.text(),
       st.floats(min_value=0, max_value=1e5), st.text(), st.text())
def test_the_access_line_is_what_json_dumps_writes(method: str, kind: str, upstream: str, status: int,
                                                    cache: str, duration: float, request_id: str,
                                                    error: str) -> None:
    record = AccessRecord(method, kind, upstream, status, cache, duration, request_id, error)
    expected = json.dumps({"method": method, "kind": kind, "upstream": upstream, "status": status,
                           "cache": cache, "duration": round(duration, 6), "request_id": request_id,
                           "error": error}, separators=(",", ":"))
    assert access_line(record) == expected


POLICIES = {
    "exact": CorsPolicy(origins=(parse_origin_pattern("https://app.example"),)),
    "wildcard-credentials": CorsPolicy(origins=(parse_origin_pattern("https://*.example.org"),),
                                       allow_credentials=True, expose_headers=("ETag", "X-Total")),
    "any": CorsPolicy(allows_any_origin=True, expose_headers=("ETag",)),
    "any-credentials": CorsPolicy(allows_any_origin=True, allow_credentials=True),
}
ORIGINS = ["https://app.example", "https://evil.example", "https://a.example.org",
           "https://example.org", "https://a.example.org.evil.com", "null", "HTTPS://APP.EXAMPLE",
           "https://app.example:443", "not an origin", ""]


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("origin", ORIGINS, ids=[o or "empty" for o in ORIGINS])
def test_a_remembered_grant_is_the_grant(policy_name: str, origin: str) -> None:
    policy = POLICIES[policy_name]
    expected = tuple(build_grant(policy, origin)) if origin_allowed(policy, origin) else ()
    assert response_grant(policy, origin) == expected
    assert response_grant(policy, origin) == expected  # asked again: from the memo


def test_the_grant_memo_stays_bounded_and_right() -> None:
    policy = CorsPolicy(origins=(parse_origin_pattern("https://*.example.org"),))
    for n in range(GRANT_MEMO_SIZE * 2 + 5):
        origin = f"https://h{n}.example.org"
        assert response_grant(policy, origin) == (("Access-Control-Allow-Origin", origin),)
        assert len(policy.response_grant_memo) <= GRANT_MEMO_SIZE
    assert response_grant(policy, "https://h1.evil.org") == ()


VARY_LISTS = [[], ["Accept"], ["origin"], ["Origin"], ["accept,  Accept-Language"], ["*"],
              ["Accept", "Accept-Language"], ["Accept-Language", "origin"], ["ORIGIN, Accept"], [""],
              ['"quoted", Accept']]


@pytest.mark.parametrize("vary", VARY_LISTS, ids=[repr(v) for v in VARY_LISTS])
def test_vary_gains_origin_as_werkzeug_adds_it(vary: list[str]) -> None:
    """The road reads every Vary line as one list (werkzeug reads the first line only): Origin is
    added once, as ``vary.add`` writes it, and nothing else the lines named is lost."""
    headers = [("Content-Type", "application/json"), *[("Vary", v) for v in vary], ("ETag", '"1"')]
    expected = Response(b"", headers=[("Vary", ", ".join(vary))] if vary else [])
    expected.vary.add("Origin")
    got = list(headers)
    add_vary(got, "Origin")
    once = list(got)
    add_vary(got, "Origin")  # a second time changes nothing, as vary.add would not
    assert got == once
    assert [h for h in got if h[0] != "Vary"] == [h for h in headers if h[0] != "Vary"]
    named = [name.strip().lower() for k, v in got if k == "Vary" for name in v.split(",")]
    assert set(named) == {name.lower() for name in expected.vary}
    assert named.count("origin") == 1


def test_prebound_children_count_into_the_registry() -> None:
    metrics = BridgeMetrics()
    record = AccessRecord("GET", "cors", "api", 200, "hit", 0.001, "id")
    for _ in range(3):
        metrics.record_access(record)
    metrics.cache_event("hit")
    metrics.cache_event("hit")
    metrics.cache_event("not-an-event")
    sample = metrics.registry.get_sample_value
    assert sample("bridge_requests_total", {"kind": "cors", "upstream": "api", "status": "200"}) == 3
    assert sample("bridge_cache_events_total", {"event": "hit"}) == 2
    assert sample("bridge_cache_events_total", {"event": "miss"}) == 0


def test_the_default_handler_writes_the_line_the_long_way_would(client: FlaskClient) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = next(h for h in logger.handlers if isinstance(h, _BareLines))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    # pytest's log capture hangs its own handlers here too; alone, ours writes lines itself.
    others = logger.handlers[:]
    logger.handlers = [handler]
    try:
        assert handler.writes_bare(logger)
        client.get("/cors/api/", headers={"X-Request-ID": "short-way"})
        any_filter = logging.Filter()  # passes everything, but a filter sends lines the long way
        handler.addFilter(any_filter)
        assert not handler.writes_bare(logger)
        client.get("/cors/api/", headers={"X-Request-ID": "long-way"})
        handler.removeFilter(any_filter)
    finally:
        logger.handlers = others
        handler.setStream(previous)  # type: ignore[arg-type]
    short, long = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (short["request_id"], long["request_id"]) == ("short-way", "long-way")
    assert {k: v for k, v in short.items() if k not in ("request_id", "duration", "cache")} == \
        {k: v for k, v in long.items() if k not in ("request_id", "duration", "cache")}


KEY_CASES = {
    "plain": ("items", "", ()),
    "query": ("items/1", "b=2&callback=cb&a=1", ()),
    "vary": ("items", "q=1", ("accept-language",)),
    "long": ("x" * 600, "q=" + "y" * 10, ("accept", "x-trace")),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_the_keys_kept_on_a_request_are_its_keys(case: str) -> None:
    path, query, vary = KEY_CASES[case]
    upstream = parse_config("[upstream:api]\nurl = http://h/\n", "t.ini", env={}).upstreams["api"]
    request = UpstreamRequest(upstream, "GET", path, query,
                              (("Accept", "application/json"), ("Accept-Language", "fr")))
    primary = primary_key("api", path, query)
    for _ in range(2):  # the second time from what the request keeps
        assert request_keys(request, vary) == (primary, variant_key(primary, vary, request.headers))


PATHS = {"plain": "data.json", "nested": "a/b/c.json", "trailing": "items/", "encoded": "caf%C3%A9/x%20y",
         "long": "a/" * (PATH_MEMO_CHARS // 2 + 1) + "b"}
BAD_PATHS = {"dotdot": "a/../b", "encoded-dotdot": "a/%2e%2e/b", "encoded-slash": "a%2Fb",
             "empty-segment": "a//b", "double-encoded": "%252e%252e/x", "bad-utf8": "%ff"}


@pytest.mark.parametrize("raw", list(PATHS.values()), ids=list(PATHS))
def test_a_remembered_path_is_the_checked_path(raw: str) -> None:
    for _ in range(2):
        assert checked_path(raw) == encode_rest(split_rest(raw))


@pytest.mark.parametrize("raw", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_refused_path_is_refused_every_time(raw: str) -> None:
    for _ in range(2):
        with pytest.raises(InvalidPath):
            checked_path(raw)


def test_the_default_handler_writes_whole_lines_to_a_real_file_from_many_threads(
        client: FlaskClient, tmp_path: Path) -> None:
    """One write(2) per line and no lock: lines from 8 threads at once still arrive whole."""
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = next(h for h in logger.handlers if isinstance(h, _BareLines))
    others = logger.handlers[:]
    logger.handlers = [handler]
    with (tmp_path / "access.log").open("w") as stream:
        previous = handler.setStream(stream)
        try:
            def burst(n: int) -> None:
                for i in range(50):
                    client.application.test_client().get("/cors/api/", headers={"X-Request-ID": f"t{n}-{i}"})

            threads = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            logger.handlers = others
            handler.setStream(previous)  # type: ignore[arg-type]
    lines = (tmp_path / "access.log").read_text().splitlines()
    ids = sorted(json.loads(line)["request_id"] for line in lines)
    assert ids == sorted(f"t{n}-{i}" for n in range(8) for i in range(50))
