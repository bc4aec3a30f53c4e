"""Every setting of the bridge, declared once: its section, key, parser, default and documentation.

As gunicorn's ``config.py`` declares each ``Setting``, ``SETTINGS`` is the one list the reader takes
its keys, parsers and defaults from; the typed dataclasses (``config/__init__.py``) are checked against
it by ``tests/test_config.py``, and the README's configuration table is ``settings_table()``'s text,
also checked there (``python -m bridge.config`` prints it). A key of ``[cors]`` may be given per
upstream too (``overridable``). Declarations only: nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import values

DEFAULT_EXPOSE_HEADERS = ("ETag", "Cache-Status", "Age", "X-Request-ID", "Retry-After")
UPSTREAM = "upstream:NAME"


@dataclass(frozen=True)
class Setting:
    section: str  # "server", "cors", ... or UPSTREAM
    key: str
    parse: Callable[..., Any]
    default: str | None  # the INI text of the default; None: required, or taken from elsewhere
    doc: str
    shown_default: str = ""  # how the README shows the default when it is not the text itself
    overridable: bool = False  # a [cors] key an [upstream:NAME] section may set for itself


SETTINGS: tuple[Setting, ...] = (
    Setting("server", "bind", values.bind, "127.0.0.1:8000", "where gunicorn listens"),
    Setting("server", "workers", values.positive_int, "2", "gunicorn processes"),
    Setting("server", "threads", values.positive_int, "8", "threads per process (gthread)"),
    Setting("server", "worker_class", values.text, "gthread",
            "gunicorn worker type: `gthread` (the bridge's own, see fair_accept), `sync` (the bridge's "
            "own: one request at a time per worker), or any gunicorn worker by its name"),
    Setting("server", "trusted_proxies", values.non_negative_int, "0",
            "reverse proxies in front that set X-Forwarded-For (0: trust none)"),
    Setting("server", "reuse_port", values.boolean, "false",
            "`true`: each worker listens on its own `SO_REUSEPORT` socket and the kernel spreads "
            "connections (never for `sync`). Off by default: connections still queued on a worker's "
            "own socket when it exits (a crash, a kill, a HUP reload) are reset instead of being "
            "taken by another worker"),
    Setting("server", "fair_accept", values.boolean, "true",
            "`gthread` workers share a burst of connections: a worker defers an accept for up to "
            "2 ms while it holds more connections than the least loaded live worker. `false`: "
            "gunicorn's own accept, where one worker can take a whole burst. Not used with "
            "`reuse_port`"),
    Setting("cors", "allow_origins", values.origins, "", "space-separated exact origins, "
            "`https://*.example.org` patterns, `null`, or `*`", "(none)", overridable=True),
    Setting("cors", "allow_credentials", values.boolean, "false",
            "send `Access-Control-Allow-Credentials: true`; refused together with `*`",
            overridable=True),
    Setting("cors", "allow_headers", values.header_names, "Content-Type",
            "request headers a preflight grants (never an echo of what was asked)", overridable=True),
    Setting("cors", "expose_headers", values.header_names, " ".join(DEFAULT_EXPOSE_HEADERS),
            "response headers a page may read", overridable=True),
    Setting("cors", "max_age", values.max_age, "600",
            "seconds a browser may keep a preflight's answer, capped at 7200 as Chromium caps it",
            overridable=True),
    Setting("jsonp", "callback_param", values.callback_param, "callback",
            "the query parameter naming the callback"),
    Setting("jsonp", "max_callback_length", values.positive_int, "128",
            "longest accepted callback name"),
    Setting("jsonp", "allow_callbacks", values.callback_patterns, "",
            "space-separated callback patterns (`jQuery* angular.callbacks.*`; `*` stays within one "
            "dot-separated segment); when set, every other name is refused with 400. Empty: any name "
            "the grammar accepts"),
    Setting("cache", "backend", values.cache_backend, "memory",
            "`memory`; `redis://host:port/db` (`rediss://`, `unix://` too); "
            "`redis+sentinel://host:port[,host:port...]/master[/db]`; or "
            "`redis+cluster://host:port[,host:port...]` (a password as `//:password@host:port`). "
            "The rate budgets use the same servers"),
    Setting("cache", "ttl", values.non_negative_int, "60",
            "seconds an answer without freshness information stays fresh, and the ceiling of any "
            "answer's; 0 turns caching off"),
    Setting("cache", "heuristic", values.boolean, "true",
            "`false`: an answer with no freshness information (no `max-age`, `s-maxage` or `Expires`) "
            "is not reused, only revalidated when it has a validator, as RFC 9111 asks of a cache "
            "without a heuristic; `true`: it is fresh for the ttl"),
    Setting("cache", "max_bytes", values.size, "64 MiB", "the memory store's bound"),
    Setting("cache", "stale_if_error", values.non_negative_int, "0",
            "seconds a stale answer may stand in for a failing upstream"),
    Setting("cache", "negative_ttl", values.non_negative_int, "0", "seconds a 404 is kept"),
    Setting("cache", "stale_while_revalidate", values.non_negative_int, "0",
            "seconds after an answer goes stale that it is still served at once while one background "
            "refresh renews it (RFC 5861), for upstreams that send no `stale-while-revalidate` of "
            "their own; never for an answer marked `no-cache`, `must-revalidate`, `proxy-revalidate` "
            "or `s-maxage`"),
    Setting("limits", "per_client", values.rate_limit, "",
            "rate limit per client address over the whole bridge, in the `limits` package's syntax "
            "(`600/minute`, `10/second;600/minute`)", "(none)"),
    Setting("limits", "max_request_body", values.size, "10 MiB", "larger request bodies get 413"),
    Setting("limits", "max_upstream_body", values.size, "10 MiB", "larger upstream answers get 502"),
    Setting("limits", "max_url_length", values.positive_int, "8192", "longer urls get 414"),
    Setting("limits", "max_query_params", values.positive_int, "100",
            "more query parameters get 400"),
    Setting("limits", "max_json_depth", values.positive_int, "64",
            "deeper JSON gets 502 on the JSONP path"),
    Setting("admin", "token", values.admin_token, "",
            "a bearer token (at least 16 characters; write `${BRIDGE_ADMIN_TOKEN}` to take it from the "
            "environment) that turns on `POST /purge`; unset, the route does not exist (404)",
            "(none)"),
    Setting(UPSTREAM, "url", values.upstream_url, None,
            "http(s) base url; paths are joined below it", "(required)"),
    Setting(UPSTREAM, "methods", values.methods, "GET HEAD",
            "methods allowed on the CORS path: GET HEAD POST PUT PATCH DELETE in any case, or an "
            "extension method as written (`M-SEARCH`, `PROPFIND`); never CONNECT, TRACE, TRACK or "
            "OPTIONS"),
    Setting(UPSTREAM, "timeout", values.positive_float, "10",
            "seconds for the whole upstream request (connect, answer and body)"),
    Setting(UPSTREAM, "headers", values.upstream_headers, "",
            "`Name: value` pairs (one a line, or `;`-separated) sent server-side; `${VAR}` in a "
            "value is expanded after the split, so a secret may hold `;`", "(none)"),
    Setting(UPSTREAM, "forward_headers", values.header_names, "",
            "extra request headers passed from the browser (never Cookie or Authorization)", "(none)"),
    Setting(UPSTREAM, "jsonp", values.boolean, "true",
            "`false` turns the JSONP path off for this upstream (403)"),
    Setting(UPSTREAM, "ttl", values.non_negative_int, None,
            "this upstream's ttl; 0: never cached", "[cache] ttl"),
    Setting(UPSTREAM, "stale_while_revalidate", values.non_negative_int, None,
            "this upstream's stale_while_revalidate; 0: off for it (its answers' own directive "
            "still counts)", "[cache] stale_while_revalidate"),
    Setting(UPSTREAM, "allow_private", values.boolean, "false",
            "allow a host name that resolves to a private address"),
    Setting(UPSTREAM, "per_client", values.rate_limit, "",
            "a rate limit for this upstream alone, shared by its CORS and JSONP paths", "(none)"),
)
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS if s.section != UPSTREAM))


def in_section(section: str) -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.section == section)


def upstream_settings() -> tuple[Setting, ...]:
    """What an ``[upstream:NAME]`` section may hold: its own keys and the ``[cors]`` keys."""
    return in_section(UPSTREAM) + tuple(s for s in SETTINGS if s.overridable)


def settings_table() -> str:
    """The README's configuration table, from the declarations."""
    rows = ["| section | key | default | meaning |", "|---|---|---|---|"]
    previous = None
    for setting in SETTINGS:
        default = setting.shown_default or (setting.default if setting.default else "(none)")
        section = setting.section if setting.section != previous else ""
        previous = setting.section
        rows.append(f"| {section} | {setting.key} | {default} | {setting.doc} |")
    rows.append(f"| {UPSTREAM} | {', '.join(s.key for s in SETTINGS if s.overridable)} | [cors] | "
                "this upstream's own CORS policy |")
    return "\n".join(rows) + "\n"
