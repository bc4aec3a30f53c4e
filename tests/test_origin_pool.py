"""The upstream connections (origin_pool.py): bounded decoding, reuse, and what is never reused."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from bridge.upstream.coding import DecodeError, decoder_for
from bridge.upstream.http1 import Overflow
from bridge.upstream.netguard import AddressGuard
from bridge.upstream.pool import OriginPool
from tests.upstream_server import Reply, UpstreamServer

TEXT = b'{"items": [' + b",".join(b'{"n": %d}' % i for i in range(400)) + b"]}"


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def decode_all(encoding: str, data: bytes, limit: int, piece: int = 7) -> bytes:
    decode = decoder_for(encoding)
    assert decode is not None
    out = b""
    for chunk in [*pieces(data, piece), b""]:  # the empty piece is the end of the body
        out += decode(chunk, limit - len(out))
    return out


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(("encoding", "encoded"), [
    pytest.param("gzip", gzip.compress(TEXT), id="gzip"),
    pytest.param("x-gzip", gzip.compress(TEXT), id="x-gzip"),
    pytest.param("GZip", gzip.compress(TEXT[:100]) + gzip.compress(TEXT[100:]), id="two-gzip-members"),
    pytest.param("deflate", zlib.compress(TEXT), id="deflate-zlib"),
    pytest.param("deflate", raw_deflate(TEXT), id="deflate-raw"),
])
def test_bodies_decode_piece_by_piece(encoding: str, encoded: bytes) -> None:
    assert decode_all(encoding, encoded, len(TEXT)) == TEXT
    assert decode_all(encoding, encoded, len(TEXT), piece=len(encoded)) == TEXT


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_one_byte_over_the_limit_is_an_overflow(encoding: str) -> None:
    encoded = gzip.compress(TEXT) if encoding == "gzip" else zlib.compress(TEXT)
    with pytest.raises(Overflow):
        decode_all(encoding, encoded, len(TEXT) - 1)


def test_a_bomb_is_stopped_without_inflating_it() -> None:
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)  # 50 MB once decoded, ~50 KB sent
    decode = decoder_for("gzip")
    assert decode is not None
    with pytest.raises(Overflow):
        for chunk in pieces(bomb, 65536):
            decode(chunk, 1_000_000)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip", "gzip, br"])
def test_encodings_never_asked_for_are_refused(encoding: str) -> None:
    with pytest.raises(DecodeError):
        decoder_for(encoding)


def test_identity_needs_no_decoder() -> None:
    assert decoder_for(None) is None and decoder_for("") is None and decoder_for(" Identity ") is None


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(TEXT)[:10] + b"\x00" * 40])
def test_corrupt_bodies_are_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_all("gzip", body, 10_000)


def test_an_encoding_never_asked_for_is_a_502_not_garbage(make_app: Callable[..., Flask],
                                                         upstream: UpstreamServer) -> None:
    """The bridge asks for gzip or deflate only; a body in another encoding would reach the browser
    undecoded, with the Content-Encoding that says so dropped."""
    upstream.route("/br", Reply(200, b"\x1b\x03\x00\xf8", {"Content-Type": "application/json",
                                                           "Content-Encoding": "br"}))
    client = make_app(upstream_extra="ttl = 0").test_client()
    for url in ("/cors/api/br", "/jsonp/api/br?callback=cb"):
        response = client.get(url)
        assert response.status_code == 502
        assert response.get_json()["error"] == "upstream_error"
        assert "'br'" in response.get_json()["message"]


@pytest.fixture
def closing_upstream() -> Iterator[tuple[int, list[int]]]:
    """Answers one request per connection with keep-alive promised, then closes it 50 ms later,
    as a server whose idle timeout is short does. Yields the port and the count of connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    accepted = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted[0] += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 8\r\n\r\n{\"k\": 1}")
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), accepted
    stop.set()
    thread.join(5)
    listener.close()


def test_a_connection_the_server_closed_while_idle_is_not_reused(
        make_app: Callable[..., Flask], closing_upstream: tuple[int, list[int]]) -> None:
    port, accepted = closing_upstream
    app = make_app(f"[upstream:short]\nurl = http://127.0.0.1:{port}/\nttl = 0\n")
    client = app.test_client()
    for _ in range(3):
        response = client.get("/cors/short/x")
        assert response.status_code == 200, response.get_data()
        time.sleep(0.2)  # the server has hung up on the kept connection by now
    assert accepted[0] == 3


def test_the_pool_keeps_at_most_its_size_idle() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pool = OriginPool(AddressGuard("p", True), "http", "127.0.0.1", port, size=1)
    with listener:
        (first, reused), (second, _) = pool.connection(1.0), pool.connection(1.0)
        assert first is not second and not reused  # both new, both connected
        first_peer, _ = listener.accept()
        second_peer, _ = listener.accept()
        with first_peer, second_peer:  # stand-ins for two connected, quiet servers
            pool.release(first)
            pool.release(second)
            assert second.sock.fileno() == -1  # over the size: closed, not kept
            again, reused = pool.connection(1.0)
            assert again is first and reused  # kept alive
            pool.release(again)
            first_peer.close()  # the server hangs up while the connection idles
            time.sleep(0.05)
            fresh, reused = pool.connection(1.0)
            assert fresh is not first and not reused and first.sock.fileno() == -1
            fresh.close()
    pool.close()
