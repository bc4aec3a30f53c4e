"""REST can never leave the upstream's base, in any encoding; headers cross through allowlists."""

from __future__ import annotations

import time

import pytest

from bridge.config import parse_config
from bridge.errors import InvalidPath, UpstreamRedirect
from bridge.policy.headers import filter_response_headers
from bridge.policy.paths import encode_rest, split_rest, upstream_url, within_base
from bridge.proxy.forward import HeaderRule, forwarded_headers
from bridge.proxy.request import header_key
from bridge.upstream.client import USER_AGENT, UpstreamClient, request_headers
from tests.upstream_server import Reply

BASE = "http://127.0.0.1:9/api/v1/"

HOSTILE = [
    ("..", "dotdot"),
    ("a/../../b", "dotdot-inside"),
    (".", "dot"),
    ("%2e%2e", "encoded-dotdot"),
    ("%2E%2E/x", "encoded-dotdot-upper"),
    (".%2e", "half-encoded"),
    ("%252e%252e", "double-encoded"),
    ("%25252e%25252e", "triple-encoded"),
    ("a%2f..%2fb", "encoded-slash"),
    ("a%2Fb", "encoded-slash-upper"),
    ("..%5cb", "encoded-backslash"),
    ("a\\..\\b", "raw-backslash"),
    ("%5c%5cevil.com", "encoded-backslashes"),
    ("/evil.com/x", "leading-slash"),
    ("a//b", "empty-segment"),
    ("%00", "nul"),
    ("a%0d%0aX-Injected:1", "crlf"),
    ("%c0%ae%c0%ae", "overlong-utf8"),
    ("%ff", "not-utf8"),
]


@pytest.mark.parametrize("rest", [h[0] for h in HOSTILE], ids=[h[1] for h in HOSTILE])
def test_hostile_paths_are_refused(rest: str) -> None:
    with pytest.raises(InvalidPath):
        split_rest(rest)


@pytest.mark.parametrize(("rest", "url"), [
    ("", BASE),
    ("items", BASE + "items"),
    ("items/", BASE + "items/"),
    ("items/42", BASE + "items/42"),
    ("a%20b", BASE + "a%20b"),
    ("caf%C3%A9", BASE + "caf%C3%A9"),
    ("http:%2F%2Fevil.com", None),
    ("http:", BASE + "http:"),  # a segment, not a scheme: the base stays in front
    ("...", BASE + "..."),
    ("a..b", BASE + "a..b"),
])
def test_paths_join_below_the_base(rest: str, url: str | None) -> None:
    if url is None:
        with pytest.raises(InvalidPath):
            split_rest(rest)
        return
    assert upstream_url(BASE, encode_rest(split_rest(rest))) == url


def test_the_query_is_joined_as_it_is() -> None:
    assert upstream_url(BASE, "x", "q=a+b%26c&n=1&flag") == BASE + "x?q=a+b%26c&n=1&flag"
    assert upstream_url(BASE, "x", "") == BASE + "x"


@pytest.mark.parametrize(("target", "inside"), [
    (BASE + "other", True),
    ("http://127.0.0.1:9/api/v2/", False),
    ("http://127.0.0.1:9/api/v1/../v2", False),
    ("http://127.0.0.1:9/api/v1/%2e%2e/v2", False),
    ("http://127.0.0.2:9/api/v1/x", False),
    ("https://127.0.0.1:9/api/v1/x", False),
    ("http://127.0.0.1:10/api/v1/x", False),
])
def test_redirect_targets_must_stay_within_base(target: str, inside: bool) -> None:
    assert within_base(BASE, target) is inside


UPSTREAM = parse_config("[upstream:a]\nurl = http://h/\nheaders = X-Api-Key: k\n"
                        "forward_headers = X-Trace\n", "t.ini", env={}).upstreams["a"]


def test_request_headers_are_an_allowlist() -> None:
    incoming = [("Accept", "application/json"), ("Cookie", "session=1"), ("Authorization", "Bearer x"),
                ("Connection", "keep-alive, Accept-Language"), ("Accept-Language", "fr"),
                ("Keep-Alive", "5"), ("X-Trace", "t1"), ("X-Other", "o"), ("X-Api-Key", "forged"),
                ("Origin", "https://a.com"), ("Host", "evil.com"), ("X-Forwarded-Host", "evil.com")]
    environ = {header_key(name): value for name, value in incoming}
    for jsonp in (False, True):
        forwarded = forwarded_headers(environ, HeaderRule.of(UPSTREAM), jsonp)
        assert forwarded == (("Accept", "application/json"), ("X-Trace", "t1"), ("X-Api-Key", "k"))


def test_response_headers_drop_hop_by_hop_cookies_and_cors() -> None:
    headers = [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Connection", "X-Secret"),
               ("X-Secret", "s"), ("Transfer-Encoding", "chunked"), ("Access-Control-Allow-Origin", "*"),
               ("ETag", '"v1"'), ("Content-Length", "5"), ("Content-Encoding", "gzip")]
    assert filter_response_headers(headers) == (("Content-Type", "application/json"), ("ETag", '"v1"'))


def test_headers_sent_upstream_replace_defaults_whatever_their_case() -> None:
    sent = request_headers([("user-agent", "theirs/2"), ("Accept", "a"), ("ACCEPT", "b"),
                            ("X-Api-Key", "k"), ("host", "evil.example"), ("Content-Length", "9"),
                            ("Transfer-Encoding", "chunked"), ("connection", "close")], "h:81")
    assert sent == {"Host": "h:81", "Accept-Encoding": "gzip, deflate", "ACCEPT": "b",
                    "user-agent": "theirs/2", "X-Api-Key": "k"}  # the transport's own fields are its
    assert request_headers([], "h") == {"Host": "h", "User-Agent": USER_AGENT,
                                        "Accept-Encoding": "gzip, deflate"}


def test_the_client_never_sends_a_request_outside_the_upstreams_origin(upstream_server) -> None:  # type: ignore[no-untyped-def]
    """The url is always built below the base (upstream_url, within_base); the client checks it once
    more against the origin its pool connects to, and refuses before any byte is sent."""
    upstream_server.reset()
    upstream_server.route("/x", Reply(200, {"x": 1}))
    config = parse_config(f"[upstream:a]\nurl = {upstream_server.url}\nallow_private = true\n", "t.ini",
                          env={})
    client = UpstreamClient(config.limits)
    api = config.upstreams["a"]
    origin = upstream_server.url.rstrip("/")
    deadline = time.monotonic() + 5
    assert client._exchange(api, "GET", origin.upper() + "/x", (), None, deadline)[0] == 200
    port = origin.rsplit(":", 1)[1]
    for elsewhere in (f"http://evil.example:{port}/x", f"{origin}0/x", f"{origin}@evil.example/x",
                      f"https://127.0.0.1:{port}/x", f"{origin}x"):
        with pytest.raises(UpstreamRedirect):
            client._exchange(api, "GET", elsewhere, (), None, deadline)
    assert [s.path for s in upstream_server.seen] == ["/x"]
