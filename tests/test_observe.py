"""Request ids (accepted, replaced, forwarded upstream) and one structured access line per request."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient

from bridge import create_app
from bridge.config import Config
from bridge.ops.access import ACCESS_LOGGER, AccessRecord, accepted_request_id, new_request_id
from tests.forking import in_forked_child
from tests.upstream_server import Reply, UpstreamServer

GENERATED = re.compile(r"[0-9a-f]{32}")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def access_lines(client: FlaskClient) -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("value", ["abc", "a" * 128, "Req-1.2_3", "0"],
                         ids=["short", "128", "punct", "digit"])
def test_a_well_formed_id_is_kept_returned_and_sent_upstream(client: FlaskClient, upstream: UpstreamServer,
                                                             value: str) -> None:
    response = client.get("/cors/api/", headers={"X-Request-ID": value})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == value
    assert upstream.last().headers["x-request-id"] == value


@pytest.mark.parametrize("value", [
    "", "a" * 129, "has space", "semi;colon", "quote\"d", "<script>", "caf\u00e9", "a,b", "tab\there",
], ids=["empty", "129-chars", "space", "semicolon", "quote", "markup", "non-ascii", "comma", "tab"])
def test_a_malformed_id_is_replaced_everywhere(client: FlaskClient, upstream: UpstreamServer,
                                               value: str) -> None:
    response = client.get("/cors/api/", headers={"X-Request-ID": value})
    assert response.status_code == 200
    rid = response.headers["X-Request-ID"]
    assert rid != value and GENERATED.fullmatch(rid)
    assert upstream.last().headers["x-request-id"] == rid


def test_ids_are_generated_fresh_and_reach_the_jsonp_upstream(client: FlaskClient,
                                                              upstream: UpstreamServer) -> None:
    first = client.get("/jsonp/api/?callback=cb").headers["X-Request-ID"]
    assert upstream.last().headers["x-request-id"] == first
    second = client.get("/jsonp/api/?callback=cb").headers["X-Request-ID"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_generated_ids_differ_between_forked_workers() -> None:
    """gunicorn forks workers from a master that imported the bridge: each must draw its own ids."""
    parent_ids = {new_request_id() for _ in range(1000)}
    assert len(parent_ids) == 1000
    output = in_forked_child(lambda: " ".join(new_request_id() for _ in range(1000)).encode())
    child_ids = set(output.decode().split())
    assert len(child_ids) == 1000 and all(GENERATED.fullmatch(i) for i in child_ids)
    assert not child_ids & (parent_ids | {new_request_id() for _ in range(1000)})
    assert {i[:16] for i in child_ids} != {i[:16] for i in parent_ids}


def test_refusals_carry_an_id_too(client: FlaskClient) -> None:
    response = client.get("/cors/nope/", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "trace-me"


def test_one_access_line_per_request_with_every_field(client: FlaskClient, upstream: UpstreamServer,
                                                      access_lines: Lines) -> None:
    client.get("/cors/api/", headers={"X-Request-ID": "line-1"})
    client.options("/cors/api/", headers={"Origin": "https://app.example.com",
                                          "Access-Control-Request-Method": "PUT"})
    client.get("/jsonp/api/?callback=cb")
    client.get("/cors/nope/")
    client.get("/healthz")
    lines = access_lines.records
    assert [(line["kind"], line["upstream"], line["status"]) for line in lines] == [
        ("cors", "api", 200), ("preflight", "api", 204), ("jsonp", "api", 200),
        ("cors", "", 404), ("other", "", 200),
    ]
    first = lines[0]
    assert set(first) == {"method", "kind", "upstream", "status", "cache", "duration", "request_id", "error"}
    assert first["method"] == "GET" and first["request_id"] == "line-1"
    assert first["cache"] in ("hit", "miss")
    assert isinstance(first["duration"], float) and first["duration"] >= 0
    assert lines[3]["error"] == "unknown_api"  # an unknown name never reaches a label or a log field


@pytest.mark.parametrize("value, expected", [
    (None, None), ("x", "x"), ("a" * 129, None), ("a b", None), ("a\r\nSet-Cookie: x", None),
], ids=["missing", "ok", "too-long", "space", "header-injection"])
def test_accepted_request_id(value: str | None, expected: str | None) -> None:
    assert accepted_request_id(value) == expected


def test_an_upstream_caches_hit_is_not_the_bridges(make_config: Callable[..., Config],
                                                   upstream: UpstreamServer) -> None:
    """The access record (and the metrics made from it) says what the bridge did: an upstream that
    answers from a cache of its own is still a trip upstream, a miss, on an upstream never cached."""
    upstream.route("/c", Reply(200, {"c": 1}, {"Content-Type": "application/json",
                                               "Cache-Status": "upstream-cache; hit"}))
    app = create_app(make_config(upstream_extra="ttl = 0"))
    records: list[AccessRecord] = []
    app.extensions["bridge.access_recorder"].listeners.append(records.append)
    for url in ("/cors/api/c", "/jsonp/api/c?callback=cb"):
        answer = app.test_client().get(url)
        assert answer.headers.getlist("Cache-Status") == ["upstream-cache; hit",
                                                          "jsonp-cors-bridge; fwd=bypass"]
    assert [r.cache for r in records] == ["miss", "miss"]
