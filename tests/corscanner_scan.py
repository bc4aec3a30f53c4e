"""Run CORScanner's checks against one URL and print what each flagged, as JSON on stdout.

Run as a subprocess (``python -m tests.corscanner_scan URL``): CORScanner monkey-patches the whole
process with gevent when it is imported, which must not happen inside the test run. The URL names a
DNS host, as CORScanner's checks derive their hostile origins from it; the caller routes the request
to the bridge on loopback with ``HTTP_PROXY``. tldextract is given no suffix-list URLs, so it reads
its bundled public-suffix snapshot and never reaches the network.

Every check runs (the CLI's ``check_one_by_one`` stops at the first finding). The https-to-http check
returns early for an http URL, so its one request is sent directly: the http origin of the URL's host.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile

import CORScanner  # noqa: F401  (puts CORScanner's own modules on sys.path, as its CLI does)
import tldextract
from common.corscheck import CORSCheck  # type: ignore[import-not-found]

CHECKS = (
    "test_reflect_origin",
    "test_prefix_match",
    "test_suffix_match",
    "test_trust_null",
    "test_include_match",
    "test_not_escape_dot",
    "test_custom_third_parties",
    "test_special_characters_bypass",
    "test_trust_any_subdomain",
)


def scan(url: str) -> dict[str, object]:
    """``{"findings": {check: finding or None}, "sent": [[origin, status or None, grant], ...]}``."""
    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=tempfile.mkdtemp())
    tldextract.extract = offline
    sys.modules["common.corscheck"].tldextract.extract = offline
    logger = logging.getLogger("corscanner")
    sent: list[list[object]] = []
    send_req = CORSCheck.send_req

    def recorded(self, url, origin):  # type: ignore[no-untyped-def]
        response = send_req(self, url, origin)
        sent.append([origin, None if response is None else response.status_code,
                     None if response is None else response.headers.get("Access-Control-Allow-Origin")])
        return response

    CORSCheck.send_req = recorded
    findings: dict[str, dict[str, object] | None] = {}
    for name in CHECKS:
        check = CORSCheck(url, {"logger": logger, "headers": None})
        getattr(check, name)()
        findings[name.removeprefix("test_")] = check.all_results[0] if check.all_results else None
    host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    check = CORSCheck(url, {"logger": logger, "headers": None})
    check.is_cors_permissive("https_trust_http", f"http://{host}", url)
    findings["https_trust_http"] = check.all_results[0] if check.all_results else None
    return {"findings": findings, "sent": sent}


if __name__ == "__main__":
    print(json.dumps(scan(sys.argv[1])))
