"""SSRF: hostile DNS answers are refused before any connection, and connections go where was checked.

The resolver is injected (create_app's ``resolver``), so each test plays the DNS server; the upstream is
the real loopback server of conftest, reached by a name only when the test allows it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
from flask import Flask

from bridge import create_app
from bridge.config import parse_config
from bridge.upstream.netguard import address_problem
from tests.upstream_server import Reply, UpstreamServer


class PlayedDns:
    """A resolver whose answers the test scripts: answer ``i`` for the ``i``-th question, then the last."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = answers
        self.questions: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        with self.lock:
            self.questions.append((host, port))
            index = min(len(self.questions), len(self.answers)) - 1
        return self.answers[index]


def named_app(upstream: UpstreamServer, dns: Callable[[str, int], Sequence[str]],
              extra: str = "", host: str = "api.test") -> Flask:
    text = f"[upstream:named]\nurl = http://{host}:{upstream.port}/\ntimeout = 2\n{extra}\n"
    app = create_app(parse_config(text, source="test.ini", env={}), resolver=dns)
    app.testing = True
    return app


INTERNAL_ANSWERS = [
    pytest.param(["127.0.0.1"], "loopback", id="loopback-v4"),
    pytest.param(["127.8.9.10"], "loopback", id="loopback-v4-not-dot-1"),
    pytest.param(["::1"], "loopback", id="loopback-v6"),
    pytest.param(["10.0.0.1"], "private", id="rfc1918-10"),
    pytest.param(["172.16.5.4"], "private", id="rfc1918-172"),
    pytest.param(["192.168.1.1"], "private", id="rfc1918-192"),
    pytest.param(["169.254.169.254"], "link-local", id="cloud-metadata"),
    pytest.param(["100.64.0.1"], "CGNAT", id="cgnat"),
    pytest.param(["0.0.0.0"], "private", id="this-network"),
    pytest.param(["::"], "unspecified", id="unspecified-v6"),
    pytest.param(["224.0.0.1"], "multicast", id="multicast-v4"),
    pytest.param(["ff02::1"], "multicast", id="multicast-v6"),
    pytest.param(["240.0.0.1"], "private", id="reserved-class-e"),
    pytest.param(["fe80::1"], "link-local", id="link-local-v6"),
    pytest.param(["fd00::1"], "private", id="unique-local-v6"),
    pytest.param(["fec0::1"], "site-local", id="site-local-v6"),
    pytest.param(["::ffff:127.0.0.1"], "loopback (as ::ffff:7f00:1)", id="ipv4-mapped-loopback"),
    pytest.param(["::ffff:10.0.0.1"], "private", id="ipv4-mapped-private"),
    pytest.param(["::7f00:1"], "loopback", id="ipv4-compatible-loopback"),
    pytest.param(["64:ff9b::7f00:1"], "loopback (as 64:ff9b::7f00:1)", id="nat64-loopback"),
    pytest.param(["64:ff9b::a9fe:a9fe"], "link-local", id="nat64-metadata"),
    pytest.param(["64:ff9b:1::1"], "local-use NAT64", id="nat64-local-use"),
    pytest.param(["2002:7f00:1::"], "loopback (as 2002:7f00:1::)", id="6to4-loopback"),
    pytest.param(["2002:a00:1::1"], "private", id="6to4-private"),
    pytest.param(["198.51.100.7"], "private", id="documentation-range"),
    pytest.param(["93.184.216.34", "127.0.0.1"], "loopback", id="public-then-internal"),
    pytest.param(["127.0.0.1%lo"], "loopback", id="scoped"),
]


@pytest.mark.parametrize(("answers", "reason"), INTERNAL_ANSWERS)
def test_internal_answers_are_refused_before_connecting(upstream: UpstreamServer, answers: list[str],
                                                        reason: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    dns = PlayedDns(answers)
    with caplog.at_level(logging.WARNING, logger="bridge.upstream"):
        response = named_app(upstream, dns).test_client().get("/cors/named/x")
    assert response.status_code == 502
    body = response.get_json()
    assert body["error"] == "upstream_address_refused"
    assert "allow_private = true" in body["message"]
    # The client is not told what the name resolves to, nor what kind of address it is; the log is.
    assert f"a {reason} address" not in body["message"]
    assert not any(answer.split("%")[0] in body["message"] for answer in answers)
    logged = [r.getMessage() for r in caplog.records if r.name == "bridge.upstream"]
    assert any(reason in line and answers[-1].split("%")[0] in line for line in logged), logged
    assert upstream.count() == 0  # nothing reached any server
    assert dns.questions == [("api.test", upstream.port)]


@pytest.mark.parametrize(("address", "allowed"), [
    pytest.param("93.184.216.34", True, id="public-v4"),
    pytest.param("2606:2800:220:1:248:1893:25c8:1946", True, id="public-v6"),
    pytest.param("64:ff9b::5db8:d822", True, id="nat64-of-public"),
    pytest.param("2002:5db8:d822::1", True, id="6to4-of-public"),
    pytest.param("::ffff:93.184.216.34", True, id="mapped-public"),
    pytest.param("not-an-ip", False, id="garbage"),
])
def test_address_problem_lets_public_addresses_through(address: str, allowed: bool) -> None:
    assert (address_problem(address) is None) is allowed


def test_allow_private_connects_to_the_checked_answer_not_a_second_lookup(
        upstream: UpstreamServer) -> None:
    """DNS rebinding: the first answer is what the connection uses; later answers are never asked."""
    upstream.route("/x", Reply(200, {"reached": True}))
    dns = PlayedDns(["127.0.0.1"], ["127.0.0.2"])  # the rebind target: nothing listens there
    client = named_app(upstream, dns, "allow_private = true").test_client()
    response = client.get("/cors/named/x")
    assert response.status_code == 200 and response.get_json() == {"reached": True}
    assert len(dns.questions) == 1
    # The name, not the address, is what the upstream is told it is called.
    assert upstream.last().headers["host"] == f"api.test:{upstream.port}"


def test_rebinding_to_internal_after_a_public_answer_never_connects_inside(
        upstream: UpstreamServer) -> None:
    """The first answer is public (unroutable here); the second would be the loopback upstream."""
    dns = PlayedDns(["192.0.2.1"], ["127.0.0.1"])  # 192.0.2.0/24 is documentation: refused as well
    client = named_app(upstream, dns).test_client()
    for _ in range(3):
        assert client.get("/cors/named/x").get_json()["error"] == "upstream_address_refused"
    assert upstream.count() == 0


def test_every_new_connection_is_checked_including_redirect_hops(upstream: UpstreamServer) -> None:
    """A redirect answered with Connection: close forces a new connection, which asks again."""
    upstream.route("/a", Reply(302, b"", headers={"Location": "/b", "Connection": "close"}))
    upstream.route("/b", Reply(200, {"hop": 2}))
    dns = PlayedDns(["127.0.0.1"])
    response = named_app(upstream, dns, "allow_private = true").test_client().get("/cors/named/a")
    assert response.status_code == 200 and response.get_json() == {"hop": 2}
    assert len(dns.questions) == 2  # one question, one check, per connection: hop 2 asked again
    # ... and a second answer that is not the checked one is never used: hop 2 goes where DNS now
    # says (10.0.0.1, allowed here but unroutable), so the request fails instead of reusing hop 1's.
    rebound = PlayedDns(["127.0.0.1"], ["10.255.255.1"])
    response = named_app(upstream, rebound, "allow_private = true").test_client().get("/cors/named/a")
    assert response.status_code in (502, 504)
    assert upstream.count("/b") == 1  # only the first run's hop 2 reached the upstream


@pytest.mark.parametrize("location", [
    pytest.param("http://10.0.0.1/", id="private-literal"),
    pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata"),
    pytest.param("http://[::1]:{port}/", id="loopback-v6"),
    pytest.param("http://localhost:{port}/", id="localhost"),
    pytest.param("http://127.0.0.1:1/", id="other-port"),
    pytest.param("//10.0.0.1/", id="scheme-relative"),
    pytest.param("/%2e%2e/admin", id="encoded-dotdot"),
])
def test_a_literal_address_upstream_cannot_be_redirected_elsewhere(
        client, upstream: UpstreamServer, location: str) -> None:  # type: ignore[no-untyped-def]
    upstream.route("/go", Reply(302, b"", headers={"Location": location.format(port=upstream.port)}))
    response = client.get("/cors/api/go")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_redirect_refused"
    assert upstream.count() == 1


def test_literal_and_localhost_urls_mean_what_they_say(upstream: UpstreamServer) -> None:
    def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError(f"asked DNS about {host}")

    upstream.route("/x", Reply(200, {"ok": 1}))
    for host in ("127.0.0.1", "localhost"):
        assert named_app(upstream, no_dns, host=host).test_client().get("/cors/named/x").status_code == 200


def test_a_name_that_does_not_resolve_is_a_clear_502(upstream: UpstreamServer) -> None:
    def nxdomain(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    response = named_app(upstream, nxdomain).test_client().get("/cors/named/x")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_unreachable"


def test_jsonp_path_is_guarded_too(upstream: UpstreamServer) -> None:
    response = named_app(upstream, PlayedDns(["169.254.169.254"])).test_client().get(
        "/jsonp/named/x?callback=cb&envelope=1")
    assert response.status_code == 200
    assert b'"status":502' in response.data and b"upstream_address_refused" in response.data
    assert upstream.count() == 0


def test_an_ipv6_literal_upstream_is_not_asked_of_dns(upstream: UpstreamServer) -> None:
    def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError(f"asked DNS about {host}")

    response = named_app(upstream, no_dns, host="[::1]").test_client().get("/cors/named/x")
    # Nothing listens on [::1] at that port: unreachable, but never refused as internal.
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_unreachable"


# --- TLS: the pinned connection still verifies the certificate against the name, and sends it as SNI


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for api.test; records SNI."""
    import os
    import shutil
    import ssl
    import subprocess
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is missing: it makes the test certificate")
        pytest.skip("openssl is missing: it makes the test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=api.test",
                    "-addext", "subjectAltName=DNS:api.test"], check=True, capture_output=True,
                   timeout=60)
    names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b'{"tls": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), str(cert), names
    server.shutdown()
    server.server_close()


def test_tls_is_verified_against_the_name_not_the_pinned_address(
        tls_upstream: tuple[int, str, list[str]]) -> None:
    """The bridge's own upstream client: connected to the checked address, TLS verified against the
    name, which SNI carries too; another name on the same address fails the handshake."""
    from bridge.config import parse_config
    from bridge.errors import UpstreamUnreachable
    from bridge.upstream.client import UpstreamClient
    from bridge.upstream.message import UpstreamRequest

    port, cert, names = tls_upstream
    dns = PlayedDns(["127.0.0.1"])
    config = parse_config(f"[upstream:tls]\nurl = https://api.test:{port}/\nallow_private = true\n"
                          f"[upstream:other]\nurl = https://other.test:{port}/\nallow_private = true\n",
                          "t.ini", env={})
    client = UpstreamClient(config.limits, dns, ca_certs=cert)
    response = client.send(UpstreamRequest(config.upstreams["tls"], "GET", ""))
    assert response.status == 200 and response.body == b'{"tls": true}'
    assert "api.test" in names  # SNI carried the name
    assert dns.questions == [("api.test", port)]
    # Same address, another name: the certificate does not match it, so the handshake fails.
    with pytest.raises(UpstreamUnreachable, match="TLS with upstream"):
        client.send(UpstreamRequest(config.upstreams["other"], "GET", ""))
