"""``python app.py explain|probe|purge``: the CORS verdict for a person, from the config or from the
wire; and an operator's purge of a running bridge's cache.

``explain`` reads the bridge's config and prints what ``/explain`` returns, step by step. ``probe`` sends
a real preflight and a real request to any server (the bridge or another) and runs the browser's checks
from ``explain.py`` over its real answers: the diagnosis otherwise done by hand with curl and an Origin
header. Both print the console message a browser prints when it would block the request, in
Chromium's words or, with ``--browser firefox|webkit``, that engine's. Exit status: 0
when a browser lets the page read the answer, 1 when it blocks it, 2 for a usage or config mistake, 3
when the server cannot be reached. The probe sends no cookies (it has none) and follows no redirects.
``purge`` posts to a bridge's ``/purge`` with the token from ``BRIDGE_ADMIN_TOKEN`` (or ``--token``)
and prints its answer: 0 when the bridge purged, 1 when it refused, 2 and 3 as above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import requests

from ..config import load_or_exit
from ..policy.browser import BrowserRequest, Outgoing, Send, Verdict, simulate_fetch
from ..policy.cors import parse_origin
from ..policy.engines import ENGINE_TITLES, ENGINES, PAGE_ERRORS, console_lines
from ..policy.fetch import CREDENTIALS_MODES, Observed, Step
from .explain import explain_bridge, jsonp_verdict

ALLOWED, BLOCKED, USAGE, UNREACHABLE = 0, 1, 2, 3
PROBE_TIMEOUT = 10.0
SHOWN_RESPONSE_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials",
                          "access-control-allow-methods", "access-control-allow-headers",
                          "access-control-expose-headers", "access-control-max-age", "vary",
                          "location", "allow")


class UsageError(Exception):
    pass


class Unreachable(Exception):
    pass


def parse_header_arg(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    name = name.strip()
    if not name or any(c in name for c in " \t()<>@,;\\\"/[]?={}"):
        raise UsageError(f"--header {text!r}: give NAME or 'NAME: value'")
    return name, value.strip()


def check_origin(origin: str) -> str:
    if origin != "null" and parse_origin(origin) is None:
        raise UsageError(f"--origin {origin!r} is not an origin as a browser sends it: "
                         "scheme://host[:port], lowercase, no path, no default port")
    return origin


def add_request_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--origin", required=True, help="the page's origin, e.g. https://app.example.com")
    parser.add_argument("--browser", choices=ENGINES, default="chromium",
                        help="whose words: chromium (default), firefox or webkit")
    parser.add_argument("--method", default="GET", help="the fetch() method (default GET)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: value'",
                        help="a header the page sets; repeat for more")
    parser.add_argument("--content-type", help="the Content-Type the page sends")
    parser.add_argument("--credentials", action="store_true",
                        help="fetch(..., {credentials: 'include'}): cookies go along")


def browser_request(url: str, args: argparse.Namespace) -> BrowserRequest:
    headers = [parse_header_arg(h) for h in args.header]
    if args.content_type is not None:
        headers = [h for h in headers if h[0].lower() != "content-type"]
        headers.append(("Content-Type", args.content_type))
    method = args.method
    if not method or any(not (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in method):
        raise UsageError(f"--method {method!r} is not an HTTP method name")
    credentials = "include" if args.credentials else "same-origin"
    assert credentials in CREDENTIALS_MODES
    return BrowserRequest(url=url, origin=check_origin(args.origin), method=method,
                          headers=tuple(headers), credentials=credentials)


# --- printing ---


def render(verdict: Verdict, request: BrowserRequest, out: TextIO, browser: str = "chromium") -> None:
    print(f"{request.method} {request.url}", file=out)
    print(f"  from a page at {request.origin}, credentials: {request.credentials}", file=out)
    print(f"  preflight: {'yes' if verdict.preflight else 'no'}", file=out)
    print("", file=out)
    for step in verdict.steps:
        mark = {True: "ok  ", False: "FAIL", None: "->  "}[step.ok]
        print(f"  {mark}  {step.actor:<8} {step.check}", file=out)
        if step.detail:
            print(f"        {'':<8} {step.detail}", file=out)
    print("", file=out)
    if verdict.allowed:
        readable = ", ".join(verdict.readable_headers) or "only the safelisted ones"
        status = "the upstream's status" if verdict.status is None else str(verdict.status)
        print(f"ALLOWED: the page reads the body, {status}, and headers: {readable}", file=out)
    elif verdict.failure is not None:
        lines = console_lines(browser, request.url, request.origin, verdict.failure,
                              verdict.failed_status, tuple(name for name, _ in request.headers))
        print(f"BLOCKED: the page gets {PAGE_ERRORS[browser]}, and {ENGINE_TITLES[browser]} prints:",
              file=out)
        for line in lines:
            print(f"  {line}", file=out)


# --- explain: from the config ---


def run_explain(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python app.py explain",
        description="What a browser does with a request to the bridge's /cors/API/ path, and why, "
                    "from the config alone (the upstream is not contacted).")
    parser.add_argument("api", help="the upstream's name, as in [upstream:NAME]")
    parser.add_argument("path", nargs="?", default="", help="the path below /cors/API/")
    parser.add_argument("--config", default="wsgi.ini", help="the INI file (default wsgi.ini)")
    parser.add_argument("--bridge", help="the bridge's base url (default: http://[server] bind)")
    add_request_options(parser)
    args = parser.parse_args(argv)
    config = load_or_exit(args.config)
    upstream = config.upstreams.get(args.api)
    if upstream is None:
        known = ", ".join(sorted(config.upstreams)) or "none"
        raise UsageError(f"no api named {args.api!r} in {args.config}; known: {known}")
    base = (args.bridge or f"http://{config.server.bind}").rstrip("/")
    request = browser_request(f"{base}/cors/{args.api}/{args.path.lstrip('/')}", args)
    verdict = explain_bridge(upstream, request)
    render(verdict, request, out, args.browser)
    jsonp = jsonp_verdict(upstream, request.method, bool(request.headers))
    print(f"JSONP ({'works' if jsonp.allowed else 'refused'}): {jsonp.reason}", file=out)
    return ALLOWED if verdict.allowed else BLOCKED


# --- probe: from the wire ---


def http_send(session: requests.Session, url: str, timeout: float) -> Send:
    """The network for ``simulate_fetch``: real requests, no redirects followed, no cookies."""

    def send(outgoing: Outgoing) -> Observed:
        try:
            response = session.request(outgoing.method, url, headers=dict(outgoing.headers),
                                       allow_redirects=False, timeout=timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"{outgoing.method} {url}: {exc.__class__.__name__}: {exc}") from None
        headers = tuple(response.raw.headers.items()) if response.raw is not None else tuple(
            response.headers.items())
        shown = [f"{k}: {v}" for k, v in headers if k.lower() in SHOWN_RESPONSE_HEADERS]
        kind = "preflight" if outgoing.preflight else "request"
        sent = ", ".join(f"{k}: {v}" for k, v in outgoing.headers)
        steps = [Step("server", f"{kind} {outgoing.method} -> {response.status_code}", True,
                      f"sent {sent}; answered " + ("; ".join(shown) or "no CORS headers"))]
        location = response.headers.get("Location") if response.is_redirect else None
        if location and not outgoing.preflight:
            steps.append(Step("server", "redirect", True,
                              f"to {location}: a browser follows it and checks CORS again on each "
                              "answer; the probe checks only this first one"))
        return Observed(response.status_code, headers, tuple(steps), redirect=location)

    return send


def run_probe(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python app.py probe",
        description="Send the real preflight and request a browser would send to URL, and report "
                    "step by step what the browser would do with the answers, and why.")
    parser.add_argument("url", help="the url the page fetches (any CORS server)")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT,
                        help=f"seconds per request (default {PROBE_TIMEOUT:g})")
    add_request_options(parser)
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"{args.url!r}: give an http:// or https:// url")
    if not 0 < args.timeout <= 300:
        raise UsageError("--timeout must be more than 0 and at most 300 seconds")
    request = browser_request(args.url, args)
    with requests.Session() as session:
        session.trust_env = False  # no proxy variables or .netrc between the probe and the server
        verdict = simulate_fetch(request, http_send(session, args.url, args.timeout))
    render(verdict, request, out, args.browser)
    return ALLOWED if verdict.allowed else BLOCKED


# --- purge: an operator's ---


def run_purge(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python app.py purge",
        description="Drop cached answers in a running bridge (every worker, and every instance "
                    "sharing its Redis) through its POST /purge.")
    parser.add_argument("--api", help="the upstream's name (required unless --tag is given)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--path", help="one path below the upstream's url: every query and variant")
    scope.add_argument("--prefix", help="every path starting with this")
    scope.add_argument("--tag", help="every answer the upstream tagged so (Surrogate-Key, Cache-Tag)")
    parser.add_argument("--bridge", default="http://127.0.0.1:8000",
                        help="the bridge's base url (default http://127.0.0.1:8000)")
    parser.add_argument("--token", help="the [admin] token (default: $BRIDGE_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT)
    args = parser.parse_args(argv)
    if args.api is None and args.tag is None:
        raise UsageError("name what to purge: --api NAME [--path P | --prefix P], or --tag T")
    token = args.token or os.environ.get("BRIDGE_ADMIN_TOKEN")
    if not token:
        raise UsageError("no token: set BRIDGE_ADMIN_TOKEN (or give --token) to the [admin] token")
    body = {name: value for name, value in (("api", args.api), ("path", args.path),
                                            ("prefix", args.prefix), ("tag", args.tag)) if value}
    url = args.bridge.rstrip("/") + "/purge"
    with requests.Session() as session:
        session.trust_env = False
        try:
            response = session.post(url, json=body, timeout=args.timeout,
                                    headers={"Authorization": f"Bearer {token}"})
        except requests.RequestException as exc:
            raise Unreachable(f"POST {url}: {exc.__class__.__name__}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": "not_json", "message": response.text[:200]}
    print(json.dumps(answer), file=out)
    return ALLOWED if response.status_code == 200 else BLOCKED


def main(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``argv`` starts with the command: ``explain ...``, ``probe ...`` or ``purge ...``."""
    out = out or sys.stdout
    err = err or sys.stderr
    commands = {"explain": run_explain, "probe": run_probe, "purge": run_purge}
    if not argv or argv[0] not in commands:
        print("usage: python app.py explain API [PATH] --origin O ... | probe URL --origin O ... | "
              "purge --api NAME [--path P | --prefix P | --tag T] [--bridge URL]", file=err)
        return USAGE
    try:
        # argparse writes its usage and --help to sys.stderr/sys.stdout: send them where asked.
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            return commands[argv[0]](argv[1:], out)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return USAGE
    except Unreachable as exc:
        print(f"error: cannot reach the server: {exc}", file=err)
        print("  a browser shows TypeError: Failed to fetch, with no CORS message", file=err)
        return UNREACHABLE
    except SystemExit as exc:  # argparse: --help exits 0, a usage mistake 2
        return exc.code if isinstance(exc.code, int) else USAGE
