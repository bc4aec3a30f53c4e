"""The side-by-side comparison page, served by its own small app on an origin other than the bridge's.

The page must not share the bridge's origin, or the browser would enforce nothing: ``make run`` serves
it on 127.0.0.1:8002 (``python -m bridge.page``), an origin the shipped ``wsgi.ini`` allows. The app
only renders one template with the bridge's url, the configured apis and the ready-made scenarios
(passed to JavaScript through ``|tojson``, never built as script text) and serves the plain JS and CSS
beside it. The page itself talks to the bridge: ``fetch()`` for CORS, ``legacy-client.js`` (served by
the bridge) for JSONP, and ``/explain`` for the verdict. No build step and nothing fetched from the
internet, so it works offline. This module makes no CORS decision and never calls an upstream.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from flask import Flask, render_template

from ..config import Config, load_or_exit


@dataclass(frozen=True)
class Scenario:
    """A ready-made request and what it shows; ``api`` must name a configured upstream."""

    id: str
    title: str
    api: str
    path: str
    lesson: str
    method: str = "GET"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    credentials: str = "same-origin"
    body: str = ""


SCENARIOS = (
    Scenario("simple-get", "Simple GET", "demo", "items",
             "No preflight. Both work; CORS reads the status and the exposed headers, JSONP gets the "
             "same data wrapped in the bridge's envelope."),
    Scenario("preflight-put", "Preflighted PUT with a custom header", "demo", "items/2",
             "PUT and X-Requested-With are not CORS-safelisted, so the browser asks first (OPTIONS). "
             "The bridge grants it; a script tag cannot send a PUT at all.",
             method="PUT", headers=(("X-Requested-With", "compare-page"),
                                    ("Content-Type", "application/json")),
             body='{"name": "Grace Hopper", "born": 1906}'),
    Scenario("disallowed-origin", "Disallowed origin", "partner", "items",
             "This api lists only https://partner.example.com. CORS is blocked, and the page cannot "
             "even see the status; JSONP is not subject to CORS and still gets the data."),
    Scenario("upstream-404", "Upstream 404", "demo", "items/99",
             "CORS hands the page a readable 404 and its JSON body; JSONP sees the same 404 only "
             "because the bridge's envelope carries it (a bare script tag would just fire onerror)."),
    Scenario("slow-timeout", "Slow upstream (timeout)", "slow", "slow", query="seconds=10",
             lesson="The upstream takes 10 s; the bridge gives up after its configured timeout and "
                    "answers 504 on both paths, readable over CORS and inside the JSONP envelope."),
    Scenario("put-over-jsonp", "PUT over JSONP (refused)", "demo", "items/1",
             "CORS sends the PUT after a preflight. JSONP can only GET: the client refuses before "
             "any request, and the bridge would answer 405 on /jsonp/.",
             method="PUT", headers=(("Content-Type", "application/json"),),
             body='{"name": "Ada Lovelace"}'),
    Scenario("credentials-wildcard", "credentials: 'include' against '*'", "public", "items",
             "This api allows any origin with '*'. With credentials the browser refuses a wildcard; "
             "the script tag sends cookies anyway, and the bridge never forwards them.",
             credentials="include"),
)


def page_data(config: Config, bridge_url: str) -> dict[str, object]:
    """Everything the page's script needs, as plain JSON-able values."""
    apis = [u.public_view() | {"timeout": u.timeout}
            for u in sorted(config.upstreams.values(), key=lambda u: u.name)]
    names = {u.name for u in config.upstreams.values()}
    return {
        "bridge": bridge_url.rstrip("/"),
        "apis": apis,
        "scenarios": [asdict(s) for s in SCENARIOS if s.api in names],
        "missing": [s.id for s in SCENARIOS if s.api not in names],
    }


def create_page_app(config: Config, bridge_url: str) -> Flask:
    app = Flask(__name__)
    data = page_data(config, bridge_url)

    @app.get("/")
    def compare() -> str:
        return render_template("compare.html", data=data, bridge=data["bridge"])

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve the CORS-vs-JSONP comparison page")
    parser.add_argument("--config", default="wsgi.ini")
    parser.add_argument("--bind", default="127.0.0.1:8002")
    parser.add_argument("--bridge", default=None,
                        help="the bridge's base url (default: http://[server] bind)")
    args = parser.parse_args(argv)
    config = load_or_exit(args.config)
    host, _, port = args.bind.rpartition(":")
    from werkzeug.serving import run_simple

    app = create_page_app(config, args.bridge or f"http://{config.server.bind}")
    run_simple(host, int(port), app, threaded=True)


if __name__ == "__main__":
    main()
