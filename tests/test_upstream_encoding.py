"""Compressed upstream answers: decoded once at the bridge, capped after decoding, never passed on raw.

The bridge asks upstreams for ``gzip, deflate`` and drops their Content-Encoding (it computes its own
headers), so it must hand the browser the decoded bytes: compressed bytes under an identity encoding
are garbage to the browser and invalid JSON to the JSONP path. A small compressed body that inflates
past ``max_upstream_body`` is refused like any other oversized answer (no decompression bomb).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import pytest
from flask import Flask

from tests.upstream_server import Reply, UpstreamServer

DATA = {"greeting": "h\u00e9llo", "items": list(range(50)), "html": "</script>"}
TEXT = json.dumps(DATA).encode()


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # RFC 9110 "deflate": the zlib format


@pytest.mark.parametrize(("encoding", "encode"), [("gzip", gzip.compress), ("deflate", deflate)])
def test_a_compressed_answer_reaches_both_paths_decoded(
        make_app: Callable[..., Flask], upstream: UpstreamServer, encoding: str,
        encode: Callable[[bytes], bytes]) -> None:
    upstream.route("/z", Reply(200, encode(TEXT), {"Content-Type": "application/json",
                                                   "Content-Encoding": encoding}))
    client = make_app().test_client()
    cors = client.get("/cors/api/z")
    assert cors.status_code == 200
    assert "Content-Encoding" not in cors.headers
    assert cors.get_json() == DATA
    assert int(cors.headers["Content-Length"]) == len(cors.get_data())
    script = client.get("/jsonp/api/z?callback=cb")
    assert script.status_code == 200, script.get_data(as_text=True)
    assert script.get_data(as_text=True).startswith("/**/cb({")
    assert upstream.seen[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_decompression_bomb_is_refused_after_decoding(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    inflated = b'{"a": "' + b"0" * 4_000_000 + b'"}'
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 10_000  # small on the wire, 4 MB once decoded
    upstream.route("/bomb", Reply(200, bomb, {"Content-Type": "application/json",
                                              "Content-Encoding": "gzip"}))
    client = make_app("[limits]\nmax_upstream_body = 1 MiB\n").test_client()
    response = client.get("/cors/api/bomb")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_too_large"


def test_a_corrupt_compressed_answer_is_a_clear_502(
        make_app: Callable[..., Flask], upstream: UpstreamServer) -> None:
    upstream.route("/bad", Reply(200, b"\x1f\x8b not really gzip",
                                 {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    response = make_app().test_client().get("/cors/api/bad")
    assert response.status_code == 502
    assert response.get_json()["error"] == "upstream_error"

