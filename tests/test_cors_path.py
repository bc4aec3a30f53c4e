"""The CORS path end to end: the factory-built app against a real upstream on loopback."""

from __future__ import annotations

import socket

import pytest
from flask.testing import FlaskClient

from tests.conftest import ALLOWED
from tests.upstream_server import Reply, UpstreamServer

EVIL = "https://evil.example.com"


def cors_headers(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_allowed_origin_gets_exactly_its_origin(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"items": [1, 2]}, headers={"ETag": '"v1"'}))
    response = client.get("/cors/api/items?limit=2", headers={"Origin": ALLOWED})
    assert response.status_code == 200 and response.get_json() == {"items": [1, 2]}
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Access-Control-Allow-Credentials" not in response.headers
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "ETag" in exposed and "Cache-Status" in exposed
    assert "Origin" in response.headers["Vary"]
    assert response.headers["ETag"] == '"v1"'
    seen = upstream.last()
    assert seen.path == "/items" and seen.query == [("limit", "2")]
    assert seen.headers["x-api-key"] == "secret-key"  # server-side credential added
    assert "origin" not in seen.headers


def test_wildcard_label_pattern_is_granted(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.get("/cors/api/", headers={"Origin": "https://deep.sub.example.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://deep.sub.example.org"


@pytest.mark.parametrize("origin", [EVIL, "https://example.org.evil.com", "https://evil-example.org",
                                    "http://a.example.org", "https://app.example.com.evil.com",
                                    "HTTPS://APP.EXAMPLE.COM", "garbage"],
                         ids=["other", "suffix-trick", "label-trick", "scheme", "prefix-trick",
                              "uppercase", "garbage"])
def test_disallowed_origin_is_403_and_never_reaches_upstream(client: FlaskClient, upstream: UpstreamServer,
                                                            origin: str) -> None:
    response = client.get("/cors/api/", headers={"Origin": origin})
    assert response.status_code == 403
    assert response.get_json()["error"] == "origin_not_allowed"
    assert "allow_origins" in response.get_json()["message"]
    assert cors_headers(response) == {}
    assert "Origin" in response.headers["Vary"]
    assert upstream.count() == 0


def test_no_origin_is_served_without_grant(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.get("/cors/api/")
    assert response.status_code == 200 and cors_headers(response) == {}
    assert "Origin" in response.headers["Vary"]


def test_preflight_is_answered_by_the_bridge(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.options("/cors/api/items", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type,x-custom,x-not-configured"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, PUT"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Custom"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert upstream.count() == 0


def test_refused_preflight_grants_nothing(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.options("/cors/api/x", headers={"Origin": EVIL,
                                                      "Access-Control-Request-Method": "GET"})
    assert response.status_code == 403
    assert cors_headers(response) == {}
    assert response.get_json()["error"] == "origin_not_allowed"
    assert upstream.count() == 0


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_a_preflight_for_a_method_not_configured_names_the_method(
        client: FlaskClient, upstream: UpstreamServer, method: str) -> None:
    """Answered with the grant and the configured methods (never the one asked for), so the
    browser refuses it itself with "Method DELETE is not allowed by Access-Control-Allow-Methods",
    not with a missing Access-Control-Allow-Origin that would blame the origin."""
    response = client.options("/cors/api/x", headers={"Origin": ALLOWED,
                                                      "Access-Control-Request-Method": method})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, PUT"
    assert method not in response.headers["Access-Control-Allow-Methods"]
    assert upstream.count() == 0


def test_method_not_configured_is_405_readable_by_the_page(client: FlaskClient,
                                                           upstream: UpstreamServer) -> None:
    response = client.delete("/cors/api/items/1", headers={"Origin": ALLOWED})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST, PUT"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert upstream.count() == 0


def test_an_extension_method_is_granted_and_forwarded_as_written(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    """A method HTTP's core does not define (M-SEARCH) is preflighted, granted and forwarded as the
    config writes it; method names are case-sensitive, so ``m-search`` is another, refused one."""
    upstream.route("/devices", Reply(200, {"found": 1}))
    client = make_app(f"\n[upstream:dav]\nurl = {upstream.url}\nmethods = GET M-SEARCH\n").test_client()
    preflight = client.options("/cors/dav/devices", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "M-SEARCH"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, M-SEARCH"
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    found = client.open("/cors/dav/devices", method="M-SEARCH", headers={"Origin": ALLOWED})
    assert found.status_code == 200 and found.get_json() == {"found": 1}
    assert upstream.last().method == "M-SEARCH" and upstream.count() == 1
    lower = client.open("/cors/dav/devices", method="m-search", headers={"Origin": ALLOWED})
    assert lower.status_code == 405 and lower.headers["Allow"] == "GET, M-SEARCH"
    assert upstream.count() == 1


def test_credentials_are_granted_only_when_configured(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    client = make_app(upstream_extra="allow_credentials = true").test_client()
    response = client.get("/cors/api/", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_wildcard_policy_grants_star(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    client = make_app(upstream_extra="allow_origins = *").test_client()
    response = client.get("/cors/api/", headers={"Origin": "https://anyone.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_credentials_and_hop_by_hop_are_not_forwarded(client: FlaskClient,
                                                      upstream: UpstreamServer) -> None:
    client.get("/cors/api/", headers={"Origin": ALLOWED, "Cookie": "sid=1", "Authorization": "Bearer t",
                                      "Connection": "close, X-Foo", "Accept-Language": "fr",
                                      "Proxy-Authorization": "Basic x", "TE": "trailers"})
    headers = upstream.last().headers
    for name in ("cookie", "authorization", "proxy-authorization", "te", "x-foo", "origin"):
        assert name not in headers
    assert headers["accept-language"] == "fr"


def test_upstream_cookies_and_cors_headers_are_dropped(client: FlaskClient,
                                                       upstream: UpstreamServer) -> None:
    upstream.route("/", Reply(200, {"a": 1}, headers={
        "Set-Cookie": "tracking=1", "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Credentials": "true", "X-Private": "p", "Connection": "X-Private",
        "Accept-Ranges": "bytes"}))
    response = client.get("/cors/api/", headers={"Origin": ALLOWED})
    assert "Set-Cookie" not in response.headers and "X-Private" not in response.headers
    assert "Accept-Ranges" not in response.headers  # the bridge never serves a part of an answer
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Access-Control-Allow-Credentials" not in response.headers
    no_origin = client.get("/cors/api/")
    assert cors_headers(no_origin) == {}  # the upstream's own '*' never leaks through


def test_post_body_and_content_type_are_forwarded(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/items", lambda seen: Reply(201, {"got": seen.body.decode()}))
    response = client.post("/cors/api/items", data=b'{"a":1}', content_type="application/json",
                           headers={"Origin": ALLOWED})
    assert response.status_code == 201 and response.get_json() == {"got": '{"a":1}'}
    assert upstream.last().headers["content-type"] == "application/json"


def test_upstream_status_and_body_pass_through(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/missing", Reply(404, {"error": "nope"}))
    response = client.get("/cors/api/missing", headers={"Origin": ALLOWED})
    assert response.status_code == 404 and response.get_json() == {"error": "nope"}
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_head_is_forwarded_as_head(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.head("/cors/api/")
    assert response.status_code == 200 and response.data == b""
    assert upstream.last().method == "HEAD"


def test_unknown_api_is_404_json_readable_by_allowed_origin(client: FlaskClient) -> None:
    response = client.get("/cors/nope/", headers={"Origin": ALLOWED})
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_api"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_unreachable_upstream_is_502(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app(extra=f"[upstream:down]\nurl = {closed_port_url()}\n").test_client()
    response = client.get("/cors/down/", headers={"Origin": ALLOWED})
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_unreachable"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_slow_upstream_is_504(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    upstream.route("/slow", Reply(200, {"late": True}, delay=1.0))
    client = make_app(upstream_extra="timeout = 0.2").test_client()
    response = client.get("/cors/api/slow")
    assert response.status_code == 504 and response.get_json()["error"] == "upstream_timeout"


def test_slow_drip_hits_the_total_deadline(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    # Each byte arrives well within the read timeout, but the whole answer takes too long.
    upstream.route("/drip", Reply(200, {"x": "y" * 40}, drip=0.02))
    client = make_app(upstream_extra="timeout = 0.3").test_client()
    response = client.get("/cors/api/drip")
    assert response.status_code == 504


def test_upstream_body_over_the_cap_is_502(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    upstream.route("/big", Reply(200, {"x": "y" * 5000}))
    upstream.route("/big-chunked", Reply(200, b"[" + b"1," * 3000 + b"1]",
                                         headers={"Transfer-Encoding": "identity", "Connection": "close",
                                                  "Content-Length": "6002"}))
    client = make_app(extra="[limits]\nmax_upstream_body = 1000\n").test_client()
    for path in ("/cors/api/big", "/cors/api/big-chunked"):
        response = client.get(path)
        assert response.status_code == 502 and response.get_json()["error"] == "upstream_too_large"


def test_request_body_over_the_cap_is_413(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    client = make_app(extra="[limits]\nmax_request_body = 100\n").test_client()
    response = client.post("/cors/api/items", data=b"x" * 101, headers={"Origin": ALLOWED})
    assert response.status_code == 413 and response.get_json()["error"] == "payload_too_large"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert upstream.count() == 0


def test_redirect_within_base_is_followed(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/old", Reply(301, headers={"Location": "/new"}))
    upstream.route("/new", Reply(200, {"moved": True}))
    assert client.get("/cors/api/old").get_json() == {"moved": True}


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/",
                                      "//evil.example.com/x", "http://127.0.0.1:1/"],
                         ids=["metadata", "scheme-relative", "other-port"])
def test_redirect_outside_base_is_refused(client: FlaskClient, upstream: UpstreamServer,
                                          location: str) -> None:
    upstream.route("/jump", Reply(302, headers={"Location": location}))
    response = client.get("/cors/api/jump")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_redirect_refused"
    assert upstream.count() == 1


@pytest.mark.parametrize("path", ["/cors/api/%2e%2e/secret", "/cors/api/a/%2E%2E/%2E%2E/x",
                                  "/cors/api/%252e%252e/x", "/cors/api/a%2Fb", "/cors/api/..%5cx",
                                  "/cors/api//evil.com", "/cors/api/%00"],
                         ids=["encoded-dotdot", "upper-dotdot", "double-encoded", "encoded-slash",
                              "backslash", "double-slash", "nul"])
def test_path_traversal_is_400_without_upstream_contact(client: FlaskClient, upstream: UpstreamServer,
                                                        path: str) -> None:
    response = client.get(path, headers={"Origin": ALLOWED})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_path"
    assert upstream.count() == 0


def test_apis_lists_names_without_secrets(client: FlaskClient, upstream: UpstreamServer) -> None:
    body = client.get("/apis").get_data(as_text=True)
    assert '"name":"api"' in body.replace(" ", "")
    assert "secret-key" not in body and upstream.url not in body and "127.0.0.1" not in body


def test_upstream_connections_are_pooled_and_kept_alive(client: FlaskClient,
                                                        upstream: UpstreamServer) -> None:
    for _ in range(3):
        assert client.get("/cors/api/").status_code == 200
    ports = {seen.client_port for seen in upstream.seen}
    assert len(ports) == 1, ports  # three requests, one TCP connection


def test_proxied_answers_are_never_a_page_on_the_bridge_origin(client: FlaskClient,
                                                                upstream: UpstreamServer) -> None:
    upstream.route("/reflect", Reply(200, "<script>alert(document.domain)</script>",
                                     headers={"Content-Type": "text/html"}))
    upstream.route("/untyped", Reply(200, b"<b>x</b>", headers={"Content-Type": ""}))
    html = client.get("/cors/api/reflect")
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in html.headers["Content-Security-Policy"]
    assert "default-src 'none'" in html.headers["Content-Security-Policy"]
    untyped = client.get("/cors/api/untyped")
    assert not untyped.headers["Content-Type"].startswith("text/html")


def test_an_answer_without_content_type_is_octet_stream_never_html(client: FlaskClient,
                                                                    upstream: UpstreamServer) -> None:
    """Flask's default (text/html) would make an upstream's reflected text a page on the bridge."""
    upstream.route("/typeless", Reply(200, b"<script>alert(1)</script>", {"Content-Type": None}))
    for attempt in ("miss", "hit"):
        response = client.get("/cors/api/typeless", headers={"Origin": ALLOWED})
        assert response.headers["Content-Type"] == "application/octet-stream", attempt
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Security-Policy"].endswith("sandbox")
