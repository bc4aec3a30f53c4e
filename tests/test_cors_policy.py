"""CORS policy as pure functions: whole-string origin matching and preflight verdicts."""

from __future__ import annotations

import pytest

from bridge.policy.cors import (
    CorsPolicy,
    build_grant,
    origin_allowed,
    parse_origin_pattern,
    preflight_verdict,
)


def policy(*origins: str, credentials: bool = False) -> CorsPolicy:
    if origins == ("*",):
        return CorsPolicy(allows_any_origin=True, allow_headers=("Content-Type", "X-Custom"),
                          expose_headers=("ETag",), max_age=600)
    return CorsPolicy(origins=tuple(parse_origin_pattern(o) for o in origins),
                      allow_credentials=credentials, allow_headers=("Content-Type", "X-Custom"),
                      expose_headers=("ETag", "Cache-Status"), max_age=600)


CONFIGURED = policy("https://app.example.com", "https://*.example.org", "http://localhost:3000")

MATCHES = [
    ("https://app.example.com", True, "exact"),
    ("https://a.example.org", True, "one-label"),
    ("https://a.b.example.org", True, "two-labels"),
    ("http://localhost:3000", True, "exact-with-port"),
    ("https://example.org", False, "bare-suffix-is-not-a-subdomain"),
    ("https://example.org.evil.com", False, "suffix-then-evil"),
    ("https://evil-example.org", False, "label-prefix-trick"),
    ("https://evilexample.org", False, "glued-label"),
    ("http://a.example.org", False, "scheme-differs"),
    ("https://a.example.org:8443", False, "port-differs"),
    ("https://app.example.com.evil.com", False, "exact-as-prefix"),
    ("https://app.example.co", False, "exact-truncated"),
    ("https://xapp.example.com", False, "exact-with-prefix"),
    ("https://APP.EXAMPLE.COM", False, "uppercase-not-serialised"),
    ("https://app.example.com:443", False, "default-port-not-serialised"),
    ("https://app.example.com/", False, "trailing-slash"),
    ("https://app.example.com ", False, "trailing-space"),
    (" https://app.example.com", False, "leading-space"),
    ("https://app.example.com\r\n", False, "crlf"),
    ("https://app.example.com%00", False, "encoded-nul"),
    ("https://a.example.org\x00.evil.com", False, "nul-inside"),
    ("https://a..example.org", False, "empty-label"),
    ("https://-a.example.org", False, "label-starts-with-hyphen"),
    ("https://a_b.example.org", False, "underscore-label"),
    ("https://user@a.example.org", False, "userinfo"),
    ("null", False, "null-not-listed"),
    ("", False, "empty"),
    ("*", False, "star"),
    ("http://localhost:30000", False, "port-prefix"),
    ("http://localhost:300", False, "port-truncated"),
    ("https://a.example.org.", False, "trailing-dot"),
]


@pytest.mark.parametrize(("origin", "allowed", "case"), MATCHES, ids=[m[2] for m in MATCHES])
def test_origin_matching_is_whole_string(origin: str, allowed: bool, case: str) -> None:
    assert origin_allowed(CONFIGURED, origin) is allowed


def test_null_only_when_listed_literally() -> None:
    assert origin_allowed(policy("null"), "null")
    assert not origin_allowed(policy("https://a.com"), "null")


def test_configured_origins_are_normalised() -> None:
    normalised = policy("HTTPS://App.Example.com:443")
    assert origin_allowed(normalised, "https://app.example.com")


def test_wildcard_policy_allows_well_formed_origins_only() -> None:
    anyone = policy("*")
    assert origin_allowed(anyone, "https://whoever.example")
    assert not origin_allowed(anyone, "not an origin")
    assert not origin_allowed(anyone, None)
    assert build_grant(anyone, "https://whoever.example")[0] == ("Access-Control-Allow-Origin", "*")


def test_grant_is_exactly_the_origin_with_credentials_only_when_configured() -> None:
    with_credentials = policy("https://app.example.com", credentials=True)
    headers = dict(build_grant(with_credentials, "https://app.example.com"))
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Expose-Headers"] == "ETag, Cache-Status"
    assert "Access-Control-Allow-Credentials" not in dict(build_grant(CONFIGURED,
                                                                         "https://app.example.com"))


METHODS = frozenset({"GET", "HEAD", "PUT"})


def test_preflight_granted() -> None:
    verdict = preflight_verdict(CONFIGURED, METHODS, "https://a.example.org", "PUT", "x-custom")
    headers = dict(verdict.headers)
    assert verdict.status == 204 and verdict.granted
    assert headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD, PUT"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Custom"
    assert headers["Access-Control-Max-Age"] == "600"


def test_a_method_not_configured_is_answered_with_the_configured_methods() -> None:
    verdict = preflight_verdict(CONFIGURED, METHODS, "https://a.example.org", "DELETE", None)
    assert (verdict.status, verdict.granted, verdict.method_allowed) == (204, True, False)
    headers = dict(verdict.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    assert "DELETE" not in headers["Access-Control-Allow-Methods"]


def test_preflight_never_echoes_unconfigured_headers() -> None:
    verdict = preflight_verdict(CONFIGURED, METHODS, "https://a.example.org", "GET",
                                "x-custom, x-evil")
    assert "x-evil" not in dict(verdict.headers)["Access-Control-Allow-Headers"].lower()
    assert verdict.headers_not_allowed == ("x-evil",)


@pytest.mark.parametrize(("origin", "method", "request_headers", "status"), [
    pytest.param("https://evil.com", "GET", None, 403, id="origin"),
    pytest.param(None, "GET", None, 403, id="no-origin"),
    pytest.param("https://a.example.org", "GET", "x," * 100, 400, id="absurd-header-list"),
    pytest.param("https://a.example.org", "GET", "x-a\r\nx-b", 400, id="crlf-in-header-list"),
])
def test_refused_preflight_grants_nothing(origin: str | None, method: str,
                                          request_headers: str | None, status: int) -> None:
    verdict = preflight_verdict(CONFIGURED, METHODS, origin, method, request_headers)
    assert verdict.status == status and not verdict.granted
    assert not [h for h, _ in verdict.headers if h.lower().startswith("access-control-")]
