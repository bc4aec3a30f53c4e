"""``python app.py explain|probe``: table tests, the probe against real loopback servers, and Chromium
as the judge of the probe's verdict on a deliberately misconfigured CORS server."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.site.cli import main
from tests.browser_fetch import browser_fetch
from tests.conftest import ALLOWED, config_text
from tests.live import LiveServer
from tests.upstream_server import Reply, Seen, UpstreamServer

BLOCKED_LINE = "has been blocked by CORS policy: "


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ini(tmp_path: Path, upstream: UpstreamServer) -> str:
    path = tmp_path / "bridge.ini"
    path.write_text(config_text(upstream.url) + "\n[server]\nbind = 127.0.0.1:8123\n")
    return str(path)


@pytest.mark.parametrize("args,code,expected", [
    (["api", "--origin", ALLOWED], 0, "ALLOWED"),
    (["api", "items", "--origin", "https://evil.example"], 1,
     "Access to fetch at 'http://127.0.0.1:8123/cors/api/items' from origin 'https://evil.example' "
     "has been blocked by CORS policy: No 'Access-Control-Allow-Origin' header is present on the "
     "requested resource."),
    (["api", "--origin", ALLOWED, "--method", "PUT", "--header", "X-Other: 1"], 1,
     "Request header field x-other is not allowed by Access-Control-Allow-Headers in preflight "
     "response."),
    (["api", "--origin", ALLOWED, "--method", "PUT", "--header", "X-Custom: 1"], 0, "preflight: yes"),
    (["api", "--origin", ALLOWED, "--credentials"], 1,
     "The value of the 'Access-Control-Allow-Credentials' header in the response is ''"),
    (["api", "--origin", ALLOWED, "--method", "POST", "--content-type", "application/json"], 0,
     "Content-Type application/json is not one of"),
    (["api", "--origin", ALLOWED, "--method", "DELETE"], 1, "DELETE is not in methods"),
    (["closed", "--origin", ALLOWED], 0, "JSONP (refused): JSONP is turned off"),
    (["api", "--origin", ALLOWED, "--bridge", "https://bridge.example/"], 0,
     "GET https://bridge.example/cors/api/"),
], ids=["allowed", "disallowed-origin", "header-not-configured", "preflight-allowed",
        "credentials", "json-post", "method-not-configured", "jsonp-off", "bridge-url"])
def test_explain_command(ini: str, args: list[str], code: int, expected: str) -> None:
    status, out, err = run("explain", *args, "--config", ini)
    assert (status, err) == (code, "")
    assert expected in out


@pytest.mark.parametrize("args,message", [
    (["nope", "--origin", ALLOWED], "no api named 'nope'"),
    (["api", "--origin", "https://A.example/"], "is not an origin"),
    (["api", "--origin", ALLOWED, "--header", "bad name: 1"], "give NAME or 'NAME: value'"),
    (["api", "--origin", ALLOWED, "--method", "G T"], "is not an HTTP method name"),
    (["api"], "--origin"),
], ids=["unknown-api", "bad-origin", "bad-header", "bad-method", "no-origin"])
def test_explain_usage_mistakes(ini: str, args: list[str], message: str) -> None:
    status, out, err = run("explain", *args, "--config", ini)
    assert status == 2 and message in err


def test_explain_with_a_bad_config_names_file_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[cors]\nmax_age = soon\n")
    status, _, err = run("explain", "api", "--origin", ALLOWED, "--config", str(path))
    assert status == 2 and "bad.ini: [cors] max_age" in err


def test_unknown_command() -> None:
    assert run("explode")[0] == 2


def test_app_py_dispatches_to_the_cli(ini: str) -> None:
    result = subprocess.run([sys.executable, "app.py", "explain", "api", "--origin",
                             "https://evil.example", "--config", ini],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 1, result.stderr
    assert "No 'Access-Control-Allow-Origin' header is present" in result.stdout


# --- probe: real requests to real servers ---


def test_probe_the_live_bridge(live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    upstream.route("/items", Reply(200, {"items": []}))
    status, out, _ = run("probe", f"{live_bridge.url}/cors/api/items", "--origin", ALLOWED,
                         "--method", "PUT", "--header", "X-Custom: 1")
    assert status == 0, out
    assert "server   preflight OPTIONS -> 204" in out and "server   request PUT -> 200" in out
    assert [s.method for s in upstream.seen] == ["PUT"]  # the bridge answered the preflight itself
    status, out, _ = run("probe", f"{live_bridge.url}/cors/api/items", "--origin", ALLOWED,
                         "--method", "PUT", "--header", "X-Other: 1")
    assert status == 1
    assert ("Request header field x-other is not allowed by Access-Control-Allow-Headers in "
            "preflight response.") in out
    assert "request not sent" in out and [s.method for s in upstream.seen] == ["PUT"]


def test_probe_agrees_with_explain_on_the_bridge(live_bridge: LiveServer, upstream: UpstreamServer,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "same.ini"
    path.write_text(config_text(upstream.url, page_origin=""))
    for extra in ([], ["--method", "DELETE"], ["--credentials"], ["--header", "X-Nope"]):
        argv = ["--origin", ALLOWED, *extra]
        probe = run("probe", f"{live_bridge.url}/cors/api/", *argv)
        explained = run("explain", "api", "--config", str(path), "--bridge", live_bridge.url, *argv)
        assert probe[0] == explained[0]
        last = [line for line in probe[1].splitlines() if BLOCKED_LINE in line]
        assert last == [line for line in explained[1].splitlines() if BLOCKED_LINE in line]


def test_probe_unreachable_and_timeout(upstream: UpstreamServer) -> None:
    upstream.route("/slow", Reply(200, {}, delay=3))
    status, _, err = run("probe", f"{upstream.url}slow", "--origin", ALLOWED, "--timeout", "0.3")
    assert status == 3 and "ReadTimeout" in err


@pytest.mark.parametrize("args,message", [
    (["ftp://x/", "--origin", ALLOWED], "http:// or https://"),
    (["http://x/", "--origin", "nope"], "is not an origin"),
    (["http://x/", "--origin", ALLOWED, "--timeout", "0"], "--timeout"),
], ids=["scheme", "origin", "timeout"])
def test_probe_usage_mistakes(args: list[str], message: str) -> None:
    status, _, err = run("probe", *args)
    assert status == 2 and message in err


# A deliberately misconfigured CORS server: each path gets one thing wrong.
def misconfigured(seen: Seen) -> Reply:
    origin = seen.headers.get("origin", "")
    preflight = seen.method == "OPTIONS"
    grant = {"Access-Control-Allow-Origin": origin}
    routes = {
        "/fine": {**grant, "Access-Control-Allow-Methods": "PUT, DELETE",
                  "Access-Control-Allow-Headers": "X-Custom"},
        "/methods": {**grant, "Access-Control-Allow-Methods": "GET, PUT"},
        "/headers": {**grant, "Access-Control-Allow-Methods": "PUT",
                     "Access-Control-Allow-Headers": "X-Other"},
        "/mismatch": {"Access-Control-Allow-Origin": "https://someone-else.example"},
        "/two": {"Access-Control-Allow-Origin": f"{origin}, https://b.example"},
        "/star": {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
                  "Access-Control-Allow-Methods": "*"},
        "/nocreds": grant,
        "/bad-methods": {**grant, "Access-Control-Allow-Methods": "PUT DELETE"},
    }
    if seen.path == "/preflight-404":
        return Reply(404 if preflight else 200, {}, headers=grant)
    if seen.path == "/preflight-redirect":
        return Reply(307, {}, headers={**grant, "Location": "/fine"})
    return Reply(204 if preflight else 200, None if preflight else {"ok": True},
                 headers=routes.get(seen.path, {}))


@pytest.mark.browser
@pytest.mark.parametrize("path,args", [
    ("/fine", ["--method", "DELETE", "--header", "X-Custom: 1"]),
    ("/methods", ["--method", "DELETE"]),
    ("/headers", ["--method", "PUT", "--header", "X-Custom: 1"]),
    ("/mismatch", []),
    ("/two", []),
    ("/star", ["--credentials"]),
    ("/star", ["--method", "PUT", "--credentials"]),
    ("/nocreds", ["--credentials"]),
    ("/nothing", []),
    ("/bad-methods", ["--method", "PUT"]),
    ("/preflight-404", ["--method", "PUT"]),
    ("/preflight-redirect", ["--method", "PUT"]),
], ids=["fine", "method-not-allowed", "header-not-allowed", "origin-mismatch", "two-origins",
        "wildcard-credentials", "wildcard-credentials-preflight", "credentials-not-allowed",
        "no-cors-at-all", "unparsable-methods", "preflight-404", "preflight-redirect"])
def test_probe_matches_chromium(page, page_origin: str, upstream: UpstreamServer,  # type: ignore[no-untyped-def]
                                path: str, args: list[str]) -> None:
    upstream.route("*", misconfigured)
    status, out, err = run("probe", upstream.url.rstrip("/") + path, "--origin", page_origin, *args)
    method = args[args.index("--method") + 1] if "--method" in args else "GET"
    headers = dict([args[args.index("--header") + 1].split(": ")]) if "--header" in args else {}
    outcome = browser_fetch(page, page_origin + "/", upstream.url.rstrip("/") + path, method,
                            headers, "include" if "--credentials" in args else "same-origin")
    assert status == (0 if outcome.ok else 1), out + err
    console = [line.strip() for line in out.splitlines() if BLOCKED_LINE in line]
    assert console == ([] if outcome.console is None else [outcome.console])


def test_probe_a_closed_port() -> None:
    server = LiveServer(lambda environ, start_response: [])
    port = server.port
    server.server.server_close()  # bound, never served, now closed: nothing listens there
    status, _, err = run("probe", f"http://127.0.0.1:{port}/", "--origin", ALLOWED)
    assert status == 3 and "Failed to fetch" in err
