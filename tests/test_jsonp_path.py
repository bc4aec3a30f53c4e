"""The JSONP path end to end against a real upstream: methods, callbacks, output, status, envelope."""

from __future__ import annotations

import json
import re

import pytest
from flask.testing import FlaskClient

from tests.conftest import ALLOWED
from tests.upstream_server import Reply, UpstreamServer

SCRIPT = re.compile(rb"^/\*\*/([A-Za-z_$][\w$.]*)\((.*)\);$", re.DOTALL)


def unwrap(body: bytes) -> tuple[str, object]:
    match = SCRIPT.match(body)
    assert match, body
    return match.group(1).decode(), json.loads(match.group(2))


def test_script_output(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"items": [1, 2]}, headers={"Cache-Control": "max-age=30"}))
    response = client.get("/jsonp/api/items?callback=jQuery123_456&page=2&_=1700000000000")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.data == b'/**/jQuery123_456({"items": [1, 2]});'
    assert response.headers["Cache-Control"] == "max-age=30"
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]
    seen = upstream.last()
    assert seen.query == [("page", "2")]  # callback and _ stay at the bridge
    assert seen.headers["accept"] == "application/json"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_only_get_and_head(client: FlaskClient, upstream: UpstreamServer, method: str) -> None:
    response = client.open("/jsonp/api/items?callback=cb", method=method,
                           headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.get_json()["error"] == "method_not_allowed"
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]
    assert upstream.count() == 0


def test_head_has_headers_and_no_body(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/x", Reply(200, [1]))
    response = client.head("/jsonp/api/x?callback=cb")
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(b"/**/cb([1]);"))


@pytest.mark.parametrize("query", ["", "callback=", "callback=alert(1)", "callback=a%5B0%5D",
                                   "callback=window.alert", "callback=cb&callback=cb2",
                                   "callback=" + "x" * 129, "callback=%E2%80%A8cb",
                                   "callback=cb%0A", "callback=constructor"],
                         ids=["missing", "empty", "call", "brackets", "window", "twice", "too-long",
                              "u2028", "newline", "constructor"])
def test_bad_callback_is_400_json_without_upstream_contact(client: FlaskClient, upstream: UpstreamServer,
                                                           query: str) -> None:
    response = client.get(f"/jsonp/api/items?{query}&envelope=1")
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] in {"invalid_callback", "missing_callback"}
    assert "alert" not in response.get_data(as_text=True)
    assert upstream.count() == 0


def test_callback_param_is_configurable(make_app, upstream: UpstreamServer) -> None:  # type: ignore[no-untyped-def]
    client = make_app(extra="[jsonp]\ncallback_param = jsonp\n").test_client()
    response = client.get("/jsonp/api/?jsonp=handle&callback=kept")
    assert response.data.startswith(b"/**/handle(")
    assert upstream.last().query == [("callback", "kept")]


def test_status_mirrors_the_upstream(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/missing", Reply(404, {"error": "not here"}))
    response = client.get("/jsonp/api/missing?callback=cb")
    assert response.status_code == 404
    assert unwrap(response.data) == ("cb", {"error": "not here"})


def test_envelope_is_always_200_with_status_inside(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/missing", Reply(404, {"error": "not here"},
                                     headers={"ETag": '"e1"', "X-Internal": "i"}))
    response = client.get("/jsonp/api/missing?callback=cb&envelope=1")
    assert response.status_code == 200
    name, arg = unwrap(response.data)
    assert name == "cb"
    assert isinstance(arg, dict)
    assert arg["status"] == 404 and arg["ok"] is False and arg["data"] == {"error": "not here"}
    assert arg["headers"]["content-type"] == "application/json"
    assert arg["headers"]["etag"] == '"e1"'  # exposed by the policy, so a CORS page could read it
    assert "x-internal" not in arg["headers"]  # neither safelisted nor exposed


@pytest.mark.parametrize(("route", "config", "status", "code"), [
    ("/broken", "", 502, "upstream_invalid_json"),
    ("/slow", "timeout = 0.2", 504, "upstream_timeout"),
], ids=["broken-json", "timeout"])
def test_bridge_errors_in_envelope_mode(make_app, upstream: UpstreamServer, route: str, config: str,  # type: ignore[no-untyped-def]
                                        status: int, code: str) -> None:
    upstream.route("/broken", Reply(200, b'{"a": ', headers={"Content-Type": "application/json"}))
    upstream.route("/slow", Reply(200, {"late": True}, delay=1.0))
    client = make_app(upstream_extra=config).test_client()
    plain = client.get(f"/jsonp/api{route}?callback=cb")
    assert plain.status_code == status and plain.get_json()["error"] == code
    wrapped = client.get(f"/jsonp/api{route}?callback=cb&envelope=1")
    assert wrapped.status_code == 200
    _, arg = unwrap(wrapped.data)
    assert isinstance(arg, dict)
    assert arg["status"] == status and arg["ok"] is False and arg["data"]["error"] == code


def test_unknown_api_in_envelope_mode(client: FlaskClient) -> None:
    _, arg = unwrap(client.get("/jsonp/nope/?callback=cb&envelope=1").data)
    assert isinstance(arg, dict) and arg["status"] == 404 and arg["data"]["error"] == "unknown_api"


def test_non_json_answer_is_502_never_wrapped(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/html", Reply(200, "<html>alert(1)</html>", headers={"Content-Type": "text/html"}))
    response = client.get("/jsonp/api/html?callback=cb")
    assert response.status_code == 502
    assert b"<html>" not in response.data and b"cb(" not in response.data


def test_never_forwards_credentials(client: FlaskClient, upstream: UpstreamServer) -> None:
    client.get("/jsonp/api/?callback=cb", headers={"Cookie": "sid=1", "Authorization": "Bearer x"})
    assert "cookie" not in upstream.last().headers and "authorization" not in upstream.last().headers


def test_jsonp_can_be_turned_off(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.get("/jsonp/closed/?callback=cb")
    assert response.status_code == 403 and response.get_json()["error"] == "jsonp_disabled"
    assert upstream.count() == 0


def test_script_safe_output_end_to_end(client: FlaskClient, upstream: UpstreamServer) -> None:
    raw = '{"t":"</script><script>alert(1)</script>","n":1.50,"u":"\u2028"}'
    upstream.route("/t", Reply(200, raw.encode()))
    body = client.get("/jsonp/api/t?callback=cb").data
    assert body == (b'/**/cb({"t":"\\u003c/script\\u003e\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",'
                    b'"n":1.50,"u":"\\u2028"});')
