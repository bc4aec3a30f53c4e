"""A request to ``/cors/`` or ``/jsonp/`` as the road reads it, once, from the WSGI environ.

``ProxyRequest`` takes the path and query as the client sent them (the raw request target, still
percent-encoded: werkzeug's ``PATH_INFO`` is decoded, which would turn ``%2F`` into a separator), the
method, the client's address (after ``ProxyFix``, when the bridge trusts proxies) and the headers
straight from the environ, each read once (the path when first asked for). ``shape_problem`` is the
check that runs before anything else, on every route of the bridge: a request too long or too odd
to be a browser's. This module reads and checks; it decides nothing about CORS, JSONP, budgets or
upstreams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import BadRequest, BridgeError, HeadersTooLarge, InvalidPath, UriTooLong

# Browsers send a few dozen headers of a few KiB at most; gunicorn's own limits (app.py) sit above
# these, so that what reaches the app is refused in the bridge's JSON shape.
MAX_HEADER_COUNT = 64
MAX_HEADER_BYTES = 16 * 1024
# C0 controls and DEL: CR/LF split headers and logs, NUL truncates strings in C code downstream.
_CONTROL = frozenset(chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F))
_CONTROL_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_KEYS = ("HTTP_", "CONTENT_TYPE", "CONTENT_LENGTH")  # the environ keys of request headers
# The environ keys gunicorn and werkzeug set that are never a request header: set aside in one
# set difference, in C, so that only the rest is looked at key by key (any other key a server or
# a middleware adds is still looked at, so what is a header does not depend on this list).
_NOT_HEADER_KEYS = frozenset({
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REMOTE_ADDR", "REMOTE_PORT",
    "wsgi.version", "wsgi.url_scheme", "wsgi.input", "wsgi.errors", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "wsgi.file_wrapper", "wsgi.input_terminated",
    "wsgi.early_hints", "gunicorn.socket", "werkzeug.request", "werkzeug.proxy_fix.orig",
})


def has_control(text: str) -> bool:
    return not _CONTROL.isdisjoint(text)


def raw_target(environ: dict[str, Any]) -> tuple[str, int]:
    """The request's path as the client sent it (percent-encoded, below ``SCRIPT_NAME``), from
    gunicorn's ``RAW_URI`` or werkzeug's ``REQUEST_URI``; rebuilt from the decoded ``PATH_INFO`` only
    when a server gives neither; and the length of the request target as sent. The path is "" for
    an absolute-form target whose authority cannot be read (``http://[x/``: gunicorn refuses these
    itself, another server may pass them on), which ``shape_problem`` refuses."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        path = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~%")
        query: str = environ.get("QUERY_STRING", "")
        return path, len(path) + (len(query) + 1 if query else 0)
    if raw.startswith("/"):
        path = raw.partition("?")[0]
    else:  # absolute-form request target: GET http://host/cors/... HTTP/1.1
        try:
            path = urlsplit(raw).path
        except ValueError:
            return "", len(raw)
    root: str = environ.get("SCRIPT_NAME", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path, len(raw)


def header_key(name: str) -> str:
    """The WSGI environ key of a request header (``Content-Type`` has no ``HTTP_`` prefix)."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def shape_problem(request: ProxyRequest, max_url_length: int,
                  callback_param: str | None = None) -> BridgeError | None:
    """The refusal for a request too long or too odd to be a browser's, or None. Every route asks
    it first, so junk costs no budget and reaches no policy. ``callback_param`` is the JSONP
    callback's name on the JSONP path, whose own grammar refuses it with a more precise message."""
    if request.target_length > max_url_length:
        return UriTooLong(f"the url is {request.target_length} characters long; the limit is "
                          f"{max_url_length}")
    headers = [(key, value) for key, value in request.headers.items() if key[:5] == "HTTP_"]
    if len(headers) > MAX_HEADER_COUNT:
        return HeadersTooLarge(f"more than {MAX_HEADER_COUNT} request headers")
    if sum(len(key) + len(value) for key, value in headers) > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"the request headers are over {MAX_HEADER_BYTES} bytes")
    # One pass over every value at once (a tab joins them: it is the one control a value may hold).
    if _CONTROL_CHAR.search("\t".join(value for _, value in headers)):
        key = next(key for key, value in headers if has_control(value))
        name = key[5:].replace("_", "-").title()
        return BadRequest(f"the {name} header contains a control character")
    if not request.path.startswith("/"):
        return InvalidPath("the request target is neither a path nor an absolute URL with one")
    decoded = request.decoded_path
    # Routing would fail a decoded newline as a bare 404, or merge "//" and redirect.
    if "//" in request.path or "//" in decoded or has_control(decoded):
        return InvalidPath("the path has an empty segment ('//') or a control character")
    if request.query and any(has_control(k) or (has_control(v) and k != callback_param)
                             for k, v in request.pairs):
        return BadRequest("a query parameter contains a control character (such as %00, %0A or %0D)")
    return None


QUERY_MEMO_CHARS = 512  # longer queries are parsed every time, so made-up ones cannot fill memory


@lru_cache(maxsize=1024)
def _remembered_query(query: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(query, keep_blank_values=True, errors="replace"))


def parse_query(query: str) -> tuple[tuple[str, str], ...]:
    """The query's parameters, decoded as browsers and werkzeug encode them (``+`` is a space);
    remembered for recent short queries, since a page asks the same url again and again."""
    if len(query) > QUERY_MEMO_CHARS:
        return tuple(parse_qsl(query, keep_blank_values=True, errors="replace"))
    return _remembered_query(query)


@dataclass(slots=True)
class ProxyRequest:
    """What the road knows of a request before any policy: where it goes and what it carries.

    Every policy reads these fields and nothing else of the request; ``shape`` is all the environ
    they are read from, so two requests of one shape are judged alike (the road remembers what it
    made of recent shapes). The raw path and what is made of it (``path``, ``target_length``,
    ``name``, ``rest``) are read on first use: a request whose shape the road remembers needs none.
    ``environ`` is kept only for the body, the client's address and the path.
    """

    environ: dict[str, Any]
    kind: str  # "cors", "jsonp", or "other" for Flask's routes
    method: str
    query: str  # the raw query string, exactly as sent
    decoded_path: str  # PATH_INFO: what the server decoded
    # Every request header by its environ key (HTTP_ORIGIN, CONTENT_TYPE), in no particular order
    # (the same for the same headers sent in the same order, so one shape; the same headers in
    # another order may come out otherwise, a second shape judged alike. RFC 9110 5.3: the order
    # of different fields means nothing).
    headers: dict[str, str]
    _target: tuple[str, int, str, str | None] | None = None  # path, target_length, name, rest

    @classmethod
    def read(cls, environ: dict[str, Any], kind: str) -> ProxyRequest:
        return cls(environ, kind, environ.get("REQUEST_METHOD", "GET"), environ.get("QUERY_STRING", ""),
                   environ.get("PATH_INFO", ""),
                   {key: environ[key] for key in environ.keys() - _NOT_HEADER_KEYS
                    if key.startswith(_HEADER_KEYS)})

    def target(self) -> tuple[str, int, str, str | None]:
        target = self._target
        if target is None:
            path, target_length = raw_target(self.environ)
            after = path.split("/", 2)[2] if path.count("/") >= 2 else ""  # past "/KIND/"
            name, slash, rest = after.partition("/")
            target = self._target = (path, target_length, unquote(name) if "%" in name else name,
                                     rest if slash else None)
        return target

    @property
    def path(self) -> str:
        """The raw path below SCRIPT_NAME, still percent-encoded."""
        return self.target()[0]

    @property
    def target_length(self) -> int:
        """Characters of the request target as sent."""
        return self.target()[1]

    @property
    def name(self) -> str:
        """The upstream's name as given, decoded; "" for /KIND/ alone."""
        return self.target()[2]

    @property
    def rest(self) -> str | None:
        """The raw REST of /KIND/NAME/REST; None when NAME ends the path (no slash)."""
        return self.target()[3]

    @property
    def shape(self) -> tuple[str, ...]:
        """All the environ the policies read, as one hashable value: the raw request target, the
        query, PATH_INFO and SCRIPT_NAME (every path field above is made of these alone), then the
        header names in order and their values (as many of each, so the tuple splits back into
        exactly one request)."""
        environ, headers = self.environ, self.headers
        return (self.kind, self.method, environ.get("RAW_URI") or environ.get("REQUEST_URI") or "",
                self.query, self.decoded_path, environ.get("SCRIPT_NAME", ""),
                *headers, *headers.values())

    def header(self, key: str) -> str | None:
        """A request header by its environ key (``HTTP_ORIGIN``)."""
        return self.headers.get(key)

    @property
    def client(self) -> str:
        """The address budgets are kept for: the socket's, or what ProxyFix took from the
        trusted proxies."""
        return str(self.environ.get("REMOTE_ADDR") or "unknown")

    @property
    def is_preflight(self) -> bool:
        return self.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in self.headers

    @property
    def has_body(self) -> bool:
        return self.headers.get("CONTENT_LENGTH", "") not in ("", "0") or \
            "HTTP_TRANSFER_ENCODING" in self.headers

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return parse_query(self.query) if self.query else ()

    def origin(self) -> str | None:
        """The one Origin of the request, or None; BadRequest when it came more than once.

        WSGI servers join a repeated header with commas into one value, and no serialised origin
        contains a comma: either way the client sent Origin more than once.
        """
        origin = self.headers.get("HTTP_ORIGIN")
        if origin is not None and "," in origin:
            raise BadRequest("more than one Origin header; send exactly one")
        return origin
