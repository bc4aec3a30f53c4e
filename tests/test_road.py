"""The one road for /cors/ and /jsonp/: what was wrong while two roads answered, and stays right now.

Each defect found while the bridge had a second road in front of Flask has a test here that failed
then, through real loopback upstreams (one of them speaks JSONP itself) and, for the budgets, a real
gunicorn with two workers. Then what the road promises of itself: one upstream request per request
whatever happens after it, an entry's kept headers counted against the memory bound, and a bug that
still answers in the bridge's JSON shape.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import create_app
from bridge.cache.entry import new_entry, pairs_size
from bridge.cache.memory import _value_size
from bridge.config import Config
from tests.conftest import ALLOWED, config_text
from tests.test_server import free_port, start, stop, wait_ready
from tests.upstream_server import Reply, Seen, UpstreamServer


def speaks_jsonp(seen: Seen) -> Reply:
    """An upstream that answers JSONP itself when asked with ?callback=, as many public APIs do."""
    callback = dict(seen.query).get("callback")
    if callback:
        return Reply(200, f"{callback}({{\"items\": [1]}})",
                     {"Content-Type": "text/javascript", "Cache-Control": "max-age=300"})
    return Reply(200, {"items": [1]}, {"Cache-Control": "max-age=300"})


# --- 1. cache poisoning: what is forwarded is what is keyed ---


def test_a_callback_on_the_cors_path_cannot_poison_what_others_are_served(
        client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/items", speaks_jsonp)
    hostile = client.get("/cors/api/items?callback=alert")
    assert hostile.get_data(as_text=True) == 'alert({"items": [1]})'  # the upstream's own answer
    plain = client.get("/cors/api/items", headers={"Origin": ALLOWED})
    assert plain.status_code == 200 and plain.get_json() == {"items": [1]}
    assert "fwd=uri-miss" in plain.headers["Cache-Status"]  # not the hostile request's entry
    script = client.get("/jsonp/api/items?callback=cb")
    assert script.status_code == 200
    assert script.get_data(as_text=True) == '/**/cb({"items": [1]});'
    assert script.headers["Cache-Status"].startswith("jsonp-cors-bridge; hit")  # the plain one's
    assert [s.raw_path for s in upstream.seen if s.path == "/items"] == ["/items?callback=alert",
                                                                         "/items"]


# --- 2. the query reaches the upstream as it was sent ---


@pytest.mark.parametrize("query", [
    "a=1&b=2&a=3", "flag", "flag&x=", "%zz", "q=a+b", "q=a%20b", "x=%2B%26%3D", "a=1;b=2",
    "empty&&twice", "k=%E2%82%AC", "%41=%42",
], ids=["repeats", "valueless", "valueless-and-empty", "bad-percent", "plus", "percent-space",
        "encoded-delimiters", "semicolon", "empty-pieces", "utf8", "encoded-name"])
def test_the_query_is_forwarded_byte_for_byte(client: FlaskClient, upstream: UpstreamServer,
                                              query: str) -> None:
    upstream.route("/q", Reply(200, {"ok": True}))
    assert client.get(f"/cors/api/q?{query}").status_code == 200
    assert upstream.last().raw_path == f"/q?{query}"
    # The JSONP path takes out its own control parameters and nothing else, wherever they stand.
    assert client.get(f"/jsonp/api/q?_=1&{query}&callback=cb&envelope=1").status_code == 200
    assert upstream.last().raw_path == f"/q?{query}"


# --- 3. a malformed redirect is a clean 502, asked once ---


@pytest.mark.parametrize("location", ["http://[foo]/", "gopher://[host]:[port]/x", "http://h:99999/",
                                      "http://127.0.0.1:notaport/x"],
                         ids=["bad-ipv6", "gopher-brackets", "port-out-of-range", "port-not-a-number"])
def test_an_unparseable_redirect_is_a_502_asked_once(client: FlaskClient, upstream: UpstreamServer,
                                                     location: str) -> None:
    upstream.route("/r", Reply(302, b"", {"Location": location}))
    cors = client.get("/cors/api/r", headers={"Origin": ALLOWED})
    assert cors.status_code == 502
    assert cors.get_json()["error"] == "upstream_redirect_refused"
    assert cors.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert upstream.count("/r") == 1
    envelope = client.get("/jsonp/api/r?callback=cb&envelope=1")
    assert envelope.status_code == 200 and envelope.mimetype == "text/javascript"
    text = envelope.get_data(as_text=True)
    assert text.startswith("/**/cb(") and '"status":502' in text and "upstream_redirect_refused" in text
    assert upstream.count("/r") == 2


# --- 4. every JSONP refusal is nosniff, so no script tag ever runs a JSON error ---


@pytest.mark.parametrize(("method", "url", "status"), [
    ("GET", "/jsonp/api/x?callback=1bad", 400),
    ("GET", "/jsonp/api/x", 400),
    ("GET", "/jsonp/closed/x?callback=cb", 403),
    ("GET", "/jsonp/nope/x?callback=cb", 404),
    ("GET", "/jsonp/nope/x", 404),
    ("POST", "/jsonp/api/x?callback=cb", 405),
    ("GET", "/jsonp/api/html?callback=cb", 502),
    ("GET", "/jsonp/api/html", 400),
], ids=["bad-callback", "no-callback", "disabled", "unknown", "unknown-without-callback", "post",
        "not-json", "not-json-without-callback"])
def test_every_jsonp_error_is_nosniff(client: FlaskClient, upstream: UpstreamServer, method: str,
                                      url: str, status: int) -> None:
    upstream.route("/html", Reply(200, "<b>hi</b>", {"Content-Type": "text/html"}))
    response = client.open(url, method=method)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.mimetype == "application/json" and response.get_json()["error"]


def test_a_jsonp_429_is_nosniff(make_app: Callable[..., Flask]) -> None:
    client = make_app("[limits]\nper_client = 1/minute\n").test_client()
    client.get("/jsonp/api/?callback=cb")
    for url in ("/jsonp/api/?callback=cb", "/jsonp/api/"):
        refused = client.get(url)
        assert refused.status_code == 429 and refused.headers["X-Content-Type-Options"] == "nosniff"


# --- 5. one budget per client for all the workers of an instance ---


@pytest.mark.slow
def test_per_client_is_one_budget_across_gunicorn_workers(tmp_path: Path,
                                                          upstream: UpstreamServer) -> None:
    """Two workers, the memory store, ``per_client = 5/minute``: requests on fresh connections,
    30 and then more until both workers have answered (which worker accepts a connection is the
    kernel's choice), get exactly 5 answers of 200."""
    upstream.route("/b", Reply(200, {"b": 1}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(config_text(upstream.url, extra="[limits]\nper_client = 5/minute\n"))
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "2"], tmp_path / "out.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        answers: list[requests.Response] = []
        while len(answers) < 30 or (len(answers) < 300 and len(
                {a.headers["X-Request-ID"][:16] for a in answers}) < 2):
            with requests.Session() as fresh:  # a new connection each time
                answers.append(fresh.get(f"http://127.0.0.1:{port}/cors/api/b", timeout=10))
    finally:
        stop(process)
    assert [a.status_code for a in answers].count(200) == 5
    assert [a.status_code for a in answers].count(429) == len(answers) - 5
    workers = {a.headers["X-Request-ID"][:16] for a in answers}  # each worker's own id prefix
    assert len(workers) == 2, "both workers answered, so the budget was shared, not split"


# --- 6. a preflight for a method not configured names the method (tests/test_explain.py runs it
# --- in Chromium; tests/test_cors_path.py checks the headers)


# --- one road: asked once, whatever follows ---


@pytest.mark.parametrize(("reply", "url", "status"), [
    pytest.param(Reply(200, "<html>", {"Content-Type": "text/html"}), "/jsonp/api/o?callback=cb", 502,
                 id="jsonp-not-json"),
    pytest.param(Reply(204), "/cors/api/o", 204, id="no-content"),
    pytest.param(Reply(500, {"e": 1}), "/cors/api/o", 500, id="upstream-500"),
    pytest.param(Reply(200, {"o": 1}, delay=1.5), "/cors/api/o", 504, id="timeout"),
    pytest.param(Reply(302, b"", {"Location": "http://evil.example/"}), "/jsonp/api/o?callback=cb", 502,
                 id="redirect-outside"),
    pytest.param(Reply(200, {"o": 1}, {"ETag": '"o"'}), "/cors/api/o", 200, id="stored"),
])
def test_every_request_asks_its_upstream_once(make_app: Callable[..., Flask], upstream: UpstreamServer,
                                              reply: Reply, url: str, status: int) -> None:
    upstream.route("/o", reply)
    client = make_app(upstream_extra="timeout = 1").test_client()
    response = client.get(url, headers={"X-Request-ID": "once-1"})
    assert response.status_code == status
    assert upstream.count("/o") == 1
    assert upstream.last().headers["x-request-id"] == "once-1"  # the id the client gets back
    assert response.headers["X-Request-ID"] == "once-1"


def test_a_bug_on_the_road_is_a_json_500_and_a_logged_traceback(
        client: FlaskClient, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from bridge.proxy import render

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the renderer")

    monkeypatch.setattr(render, "cors_answer", broken)
    response = client.get("/cors/api/", headers={"Origin": ALLOWED})
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert "a bug in the renderer" not in response.get_data(as_text=True)
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED  # the page can read why
    assert "RuntimeError: a bug in the renderer" in caplog.text


def test_kept_headers_count_against_the_memory_bound(make_config: Callable[..., Config],
                                                     upstream: UpstreamServer) -> None:
    upstream.route("/m", Reply(200, {"m": 1}, {"Content-Type": "application/json", "ETag": '"m"'}))
    app = create_app(make_config())
    lru = app.extensions["bridge.cache"].store._lru
    client = app.test_client()
    client.get("/cors/api/m", headers={"Origin": ALLOWED})  # stores the entry, which keeps its headers
    entry = next(v[1] for v in lru.values() if hasattr(v[1], "cors_headers"))
    assert entry.cors_headers is not None and entry.jsonp_headers is None
    after_cors = lru.currsize
    client.get("/jsonp/api/m?callback=cb")  # and the JSONP path's, and the script JSON
    after_jsonp = lru.currsize
    assert entry.jsonp_headers is not None and entry.script_json is not None
    client.get("/cors/api/m", headers={"Origin": ALLOWED})
    client.get("/jsonp/api/m?callback=other")
    assert after_cors < after_jsonp == lru.currsize  # hits keep nothing more
    assert lru.currsize == sum(_value_size(value) for value in lru.values())
    unkept = new_entry("k", entry.response, 0.0, 60, entry.vary, entry.script_json).size
    assert entry.size >= unkept + pairs_size(entry.cors_headers) + pairs_size(entry.jsonp_headers)


def test_a_hit_states_its_own_request_id_age_and_grant(make_app: Callable[..., Flask],
                                                       upstream: UpstreamServer) -> None:
    """What an entry keeps is what every hit shares; what a hit states is its own, even when the
    upstream sent the same fields when the entry was filled."""
    upstream.route("/h", Reply(200, {"h": 1}, {"X-Request-ID": "upstreams-own", "Age": "7",
                                               "Cache-Status": "upstream-cache; hit"}))
    client = make_app().test_client()
    client.get("/cors/api/h", headers={"Origin": ALLOWED})
    for origin, request_id in ((ALLOWED, "mine-1"), ("https://a.example.org", "mine-2"), (None, "m3")):
        headers = {"X-Request-ID": request_id} | ({"Origin": origin} if origin else {})
        hit = client.get("/cors/api/h", headers=headers)
        assert hit.headers.getlist("X-Request-ID") == [request_id]
        assert hit.headers.getlist("Age") == ["7"]
        upstreams, ours = hit.headers.getlist("Cache-Status")
        assert upstreams == "upstream-cache; hit" and ours.startswith("jsonp-cors-bridge; hit; ttl=")
        assert hit.headers.get("Access-Control-Allow-Origin") == origin
        assert hit.headers["Vary"] == "Origin"


@pytest.mark.redis
def test_with_redis_nothing_is_kept_on_entries(make_config: Callable[..., Config],
                                               upstream: UpstreamServer, redis_server) -> None:  # type: ignore[no-untyped-def]
    redis_server.flush()
    upstream.route("/r", Reply(200, {"r": 1}, {"Content-Type": "application/json", "ETag": '"r"'}))
    app = create_app(make_config(f"[cache]\nbackend = {redis_server.url}\n"))
    assert not app.extensions["bridge.road"].keep_headers
    client = app.test_client()
    assert "stored" in client.get("/cors/api/r", headers={"Origin": ALLOWED}).headers["Cache-Status"]
    hit = client.get("/cors/api/r", headers={"Origin": ALLOWED})
    assert hit.headers["Cache-Status"].startswith("jsonp-cors-bridge; hit")
    assert hit.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_a_missing_slash_after_the_name_is_a_relative_308(client: FlaskClient) -> None:
    for path in ("/cors/api", "/jsonp/api"):
        response = client.get(path + "?q=1", headers={"Host": "evil.example"})
        assert response.status_code == 308
        assert response.headers["Location"] == path + "/?q=1"


def test_the_access_record_is_the_roads_own(app: Flask, upstream: UpstreamServer) -> None:
    """The record's error is the bridge's own refusal code, never read from an upstream's body."""
    upstream.route("/e", Reply(404, {"error": "made_up_by_the_upstream"}))
    records: list[object] = []
    app.extensions["bridge.access_recorder"].listeners.append(records.append)
    client = app.test_client()
    client.get("/cors/api/e")
    client.get("/cors/nope/")
    client.options("/cors/api/", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "PUT"})
    assert [(r.kind, r.upstream, r.status, r.error) for r in records] == [  # type: ignore[attr-defined]
        ("cors", "api", 404, ""), ("cors", "", 404, "unknown_api"), ("preflight", "api", 204, "")]
    assert re.fullmatch(r"[0-9a-f]{32}", records[0].request_id)  # type: ignore[attr-defined]
    json.dumps([asdict(r) for r in records])  # type: ignore[call-overload]  # plain values only


# --- what the road remembers of a request's shape ---


def test_requests_one_byte_apart_are_judged_on_their_own(client: FlaskClient,
                                                         upstream: UpstreamServer) -> None:
    """The road remembers what its pure steps made of a request's shape (path, query and every
    header, byte for byte): a request one header or character away is never judged by another's."""
    upstream.route("/d", Reply(200, {"d": 1}))
    for _ in range(2):  # the second time from what the road remembers: the same answer
        answer = client.get("/cors/api/d", headers={"Origin": ALLOWED})
        assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    other = "https://deep.sub.example.org"
    assert client.get("/cors/api/d", headers={"Origin": other}).headers[
        "Access-Control-Allow-Origin"] == other
    for hostile in ("https://app.example.com.evil.example", "https://evil.example", f"{ALLOWED}/"):
        refused = client.get("/cors/api/d", headers={"Origin": hostile})
        assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    assert client.get("/jsonp/api/d?callback=cb").get_data().startswith(b"/**/cb(")
    assert client.get("/jsonp/api/d?callback=cc").get_data().startswith(b"/**/cc(")
    assert client.get("/jsonp/api/d?callback=cb", headers={"X-Note": "a\x00b"}).status_code == 400
    assert client.get("/jsonp/api/d?callback=cb&callback=cb").status_code == 400
    assert client.get("/jsonp/api/d?callback=cb", headers={"Origin": "x"}).status_code == 200


_ENVIRON_CHOICES = {
    "RAW_URI": (None, "", "/cors/api/d", "/cors/api/d?q=1", "/b/cors/api/d", "/cors/a%70i/d",
                "http://h/cors/api/d", "/cors/api"),
    "REQUEST_URI": (None, "/cors/api/d", "/cors/api/e"),
    "SCRIPT_NAME": (None, "", "/b"),
    "PATH_INFO": (None, "/cors/api/d", "/cors/api/e", "/cors/api"),
    "QUERY_STRING": (None, "", "q=1"),
    "REQUEST_METHOD": (None, "GET", "HEAD"),
    "HTTP_ORIGIN": (None, "https://a.example", "https://b.example"),
    "CONTENT_TYPE": (None, "text/plain"),
    "REMOTE_ADDR": (None, "127.0.0.1", "10.0.0.1"),  # the budget's: read on every request
    "SERVER_NAME": (None, "h", "i"),
}
_environs = st.fixed_dictionaries({key: st.sampled_from(choices)
                                   for key, choices in _ENVIRON_CHOICES.items()})


@settings(max_examples=1000)
@given(_environs, st.data())
def test_requests_of_one_shape_read_alike(first: dict[str, str | None], data: st.DataObject) -> None:
    """The shape is everything a policy reads: two requests of one shape have every field alike
    (so what the road made of one is right for the other), whatever else their environs hold."""
    from bridge.proxy.request import ProxyRequest

    changed = data.draw(st.lists(st.sampled_from(sorted(_ENVIRON_CHOICES)), max_size=2, unique=True))
    second = {**first, **{key: data.draw(st.sampled_from(_ENVIRON_CHOICES[key])) for key in changed}}

    def read(environ: dict[str, str | None]) -> ProxyRequest:
        return ProxyRequest.read({k: v for k, v in environ.items() if v is not None}, "cors")

    one, other = read(first), read(second)
    if one.shape != other.shape:
        return
    fields = ("method", "path", "query", "decoded_path", "target_length", "headers", "name", "rest",
              "is_preflight", "has_body", "pairs")
    assert [getattr(one, f) for f in fields] == [getattr(other, f) for f in fields]


_environ_keys = st.one_of(
    st.sampled_from(["HTTP_ORIGIN", "HTTP_HOST", "HTTP_X_REQUEST_ID", "CONTENT_TYPE", "CONTENT_LENGTH",
                     "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REMOTE_ADDR",
                     "SERVER_NAME", "wsgi.url_scheme", "gunicorn.socket", "werkzeug.request"]),
    st.text(st.sampled_from("HTPCONE_Tx.ab"), max_size=16))


@settings(max_examples=500)
@given(st.dictionaries(_environ_keys, st.text(max_size=8), max_size=24))
def test_the_headers_read_are_every_header_key_of_the_environ(environ: dict[str, str]) -> None:
    """Whatever else a server or a middleware puts in the environ, the request's headers are
    exactly its HTTP_ keys and CONTENT_TYPE / CONTENT_LENGTH, each with its value."""
    from bridge.proxy.request import ProxyRequest

    headers = ProxyRequest.read(environ, "cors").headers
    assert headers == {k: v for k, v in environ.items()
                       if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}


def test_what_the_road_remembers_is_bounded(app: Flask, upstream: UpstreamServer) -> None:
    from bridge.proxy.road import SHAPE_MEMO_CHARS, SHAPE_MEMO_SIZE

    upstream.route("/b", Reply(200, {"b": 1}))
    road = app.extensions["bridge.road"]
    client = app.test_client()
    for i in range(SHAPE_MEMO_SIZE + 50):
        assert client.get(f"/jsonp/api/b?callback=cb{i}").get_data().startswith(f"/**/cb{i}(".encode())
        assert 0 < len(road.plans) <= SHAPE_MEMO_SIZE
    kept = len(road.plans)
    long_header = {"X-Note": "n" * SHAPE_MEMO_CHARS}
    assert client.get("/jsonp/api/b?callback=cb", headers=long_header).status_code == 200
    assert client.get("/jsonp/api/b?callback=1nope").status_code == 400  # a refusal
    assert len(road.plans) == kept  # served, and neither kept


def test_a_request_with_a_body_is_judged_and_forwarded_on_its_own(client: FlaskClient,
                                                                  upstream: UpstreamServer) -> None:
    upstream.route("/p", lambda seen: Reply(200, {"got": seen.body.decode()}))
    for body in ("one", "two"):
        answer = client.post("/cors/api/p", data=body, content_type="text/plain")
        assert answer.get_json() == {"got": body}


@pytest.mark.parametrize("target", ["http://[foo/cors/api/d", "http://[::1/jsonp/api/d?callback=cb",
                                    "http://[foo/apis"])
def test_an_unparseable_absolute_form_target_is_refused_not_raised(app: Flask, target: str) -> None:
    """gunicorn refuses these request lines itself; another server may pass them on as REQUEST_URI."""
    from werkzeug.test import EnvironBuilder

    path, _, query = target.partition("?")
    environ = EnvironBuilder(path="/" + path.split("/", 3)[3], query_string=query).get_environ()
    environ["RAW_URI"] = environ["REQUEST_URI"] = target
    seen: list[str] = []
    body = b"".join(app.wsgi_app(environ, lambda status, headers: seen.append(status)))
    assert seen and seen[0].startswith("400 ")
    assert json.loads(body)["error"] == "invalid_path"
