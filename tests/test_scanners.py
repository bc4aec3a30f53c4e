"""A public CORS scanner, CORScanner from PyPI, run against the bridge under gunicorn on loopback.

CORScanner derives its hostile origins from the URL's DNS name (``evil.com``, ``HOST.evil.com``,
``evilexample.com``, ``null``, the third-party origins in its list, ``HOST_.evil.com`` and so on), so
the URL names ``api.example.com`` and the request reaches the bridge through ``HTTP_PROXY``, in
absolute form, as a forward proxy would send it. The config grants ``http://*.api.example.com`` on
purpose: the one check that must flag is the wildcard subdomain, and every other must find nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_server import ROOT, free_port, start, stop, wait_ready
from tests.upstream_server import Reply, UpstreamServer

HOST = "api.example.com"


@pytest.fixture
def scanned_bridge(tmp_path: Path, upstream: UpstreamServer) -> Iterator[int]:
    upstream.route("/items", Reply(200, {"items": [1, 2]}))
    ini = tmp_path / "bridge.ini"
    ini.write_text(f"[cors]\nallow_origins = https://{HOST} http://*.{HOST}\nallow_credentials = true\n\n"
                   f"[upstream:api]\nurl = {upstream.url}\n")
    port = free_port()
    process = start([sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
                     "--workers", "1"], tmp_path / "bridge.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        yield port
    finally:
        stop(process)


@pytest.mark.slow
def test_corscanner_flags_only_the_wildcard_subdomain_granted_on_purpose(scanned_bridge: int,
                                                                        upstream: UpstreamServer) -> None:
    proxy = f"http://127.0.0.1:{scanned_bridge}"
    env = {key: value for key, value in os.environ.items() if key.lower() not in ("no_proxy", "all_proxy")}
    done = subprocess.run([sys.executable, "-m", "tests.corscanner_scan", f"http://{HOST}/cors/api/items"],
                          cwd=ROOT, env={**env, "HTTP_PROXY": proxy, "http_proxy": proxy},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    findings = {check: found for check, found in report["findings"].items() if found}

    assert set(findings) == {"trust_any_subdomain"}, findings
    assert findings["trust_any_subdomain"]["origin"] == f"http://evil.{HOST}"
    # Every probe reached the bridge and was answered (a probe that failed would find nothing
    # and prove nothing): the granted origin with 200, refused ones with no grant, 403 (not allowed)
    # or 400 (an origin with a comma or a space is a list, not an origin).
    assert len(report["sent"]) >= 30
    for origin, status, grant in report["sent"]:
        if origin == f"http://evil.{HOST}":
            assert (status, grant) == (200, origin)
        else:
            assert status in (400, 403) and grant is None, origin
    assert upstream.count("/items") >= 1 and upstream.count() == upstream.count("/items")
