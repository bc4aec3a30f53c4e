"""The upstream client: safe path joining, header hygiene, pooled connections, limits.

A request reaches an upstream only through ``UpstreamClient.send``, and only to a url built by
``upstream_url`` from a configured base and a path that ``split_rest`` has checked cannot leave that
base. Headers cross in both directions through allowlists and denylists defined once here. Each
upstream has one connection pool (origin_pool.py: thread-safe, keep-alive, every connection through
its address guard): no environment is read (no proxy variables, no ``.netrc``), no cookie is kept, so
nothing on the host decorates traffic and no upstream's cookie ever rides along with another client's
request.
This module raises the typed errors of ``errors.py``; it knows nothing about CORS, JSONP or caching.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from certifi import where as ca_bundle

from ..config import LimitsConfig, UpstreamConfig
from ..errors import (
    BridgeError,
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from ..policy.headers import (
    TAG_HEADERS,
    TRANSPORT_HEADERS,
    filter_response_headers,
    is_http_date,
    parse_tags,
)
from ..policy.paths import redirect_target, within_base
from .coding import DecodeError, decoder_for
from .deadline import WATCHDOG
from .http1 import Connection, NoAnswer, Overflow, ProtocolError
from .message import UpstreamRequest, UpstreamResponse
from .netguard import AddressGuard, Resolver, system_resolver
from .pool import OriginPool

USER_AGENT = "jsonp-cors-bridge/0.1"
# Sent on every upstream request unless the upstream's configured headers say otherwise.
DEFAULT_REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
POOL_SIZE = 16  # kept-alive connections per upstream host and worker
MAX_REDIRECTS = 5
CHUNK = 64 * 1024


def timed_out(upstream: UpstreamConfig) -> UpstreamTimeout:
    """The one refusal for a passed deadline, whichever noticed it first (the socket's timeout or
    the watchdog's cut, a race on a loaded machine), so the same delay always reads the same."""
    return UpstreamTimeout(f"upstream {upstream.name!r} did not answer in full within "
                           f"{upstream.timeout:g}s")


_DEFAULT_NAMES = {name.lower(): name for name in DEFAULT_REQUEST_HEADERS}


def request_headers(headers: Iterable[tuple[str, str]], host: str) -> dict[str, str]:
    """The headers sent upstream: Host (the upstream's name, not the checked address it is
    connected to), the defaults, each replaced by a header of the same name in any case (a configured
    User-Agent wins), then ``headers`` in order; a name given twice keeps the last value, as a
    case-insensitive header dict would. The transport's own fields are never taken from ``headers``."""
    sent = {"Host": host, **DEFAULT_REQUEST_HEADERS}
    names = dict(_DEFAULT_NAMES)  # lower-case name -> the spelling in ``sent``
    for name, value in headers:
        lowered = name.lower()
        if lowered in TRANSPORT_HEADERS:
            continue
        previous = names.get(lowered)
        if previous is not None:
            del sent[previous]
        names[lowered] = name
        sent[name] = value
    return sent


# A kept-alive connection the upstream closed while it idled fails the next request before any
# answer: such a request is sent once more on a new connection when it is safe to repeat (RFC 9112
# section 9.3.1; RFC 9110 section 9.2.1). Never a POST, never after an answer began.
RETRIED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RACED = (NoAnswer, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Exchange:
    """One finished trip to an upstream, for observers (metrics): how long, and how it ended."""

    upstream: str
    seconds: float
    status: int | None  # None when no answer came (the error says why)
    error: str = ""  # the BridgeError code, when the trip failed


class UpstreamClient:
    """Sends checked requests to configured upstreams over pooled keep-alive connections."""

    def __init__(self, limits: LimitsConfig, resolver: Resolver | None = None,
                 ca_certs: str | None = None) -> None:
        self._limits = limits
        self._resolver = resolver or system_resolver
        self._ca_certs = ca_certs or ca_bundle()  # certifi's bundle; tests hand in their own CA
        self._pools: dict[str, tuple[str, OriginPool]] = {}
        self._pools_lock = threading.Lock()
        self._pools_pid = os.getpid()
        # Called after every send, success or failure; appended to at start-up only (create_app).
        self.observers: list[Callable[[Exchange], None]] = []

    def pool_for(self, upstream: UpstreamConfig) -> tuple[str, OriginPool]:
        """The origin (``scheme://host:port``) of ``upstream`` and its connection pool, shared by every
        thread, behind the upstream's own address guard.

        One per upstream because the guard is per upstream: two upstreams may share a host and
        differ in ``allow_private``. One origin is all a pool needs: requests and the redirects the
        client follows never leave the upstream's base (``upstream_url``, ``within_base``). Every
        connection it opens is resolved and checked by the guard (netguard.py).
        """
        if self._pools_pid != os.getpid():
            # A forked child (gunicorn preloads the app in its master) must never share the
            # parent's sockets: it starts with pools of its own.
            with self._pools_lock:
                self._pools, self._pools_pid = {}, os.getpid()
        found = self._pools.get(upstream.name)
        if found is None:
            with self._pools_lock:
                found = self._pools.get(upstream.name)
                if found is None:
                    base = urlsplit(upstream.url)
                    scheme = base.scheme.lower()
                    port = base.port or (443 if scheme == "https" else 80)
                    guard = AddressGuard(upstream.name, upstream.allow_private, self._resolver)
                    pool = OriginPool(guard, scheme, base.hostname or "", port, POOL_SIZE,
                                      ca_certs=self._ca_certs)
                    found = self._pools[upstream.name] = (f"{base.scheme}://{base.netloc}", pool)
        return found

    def send(self, request: UpstreamRequest, request_id: str | None = None) -> UpstreamResponse:
        """Send ``request``, following redirects only within the upstream's base; typed errors.
        ``request_id`` goes along as X-Request-ID, so upstream logs can be joined with the bridge's
        (it names who asks, not what is asked: it is no part of the request or its key)."""
        if not self.observers:
            return self._send(request, request_id)
        started = time.perf_counter()
        try:
            response = self._send(request, request_id)
        except BridgeError as exc:
            self._notify(Exchange(request.upstream.name, time.perf_counter() - started, None, exc.code))
            raise
        self._notify(Exchange(request.upstream.name, time.perf_counter() - started, response.status))
        return response

    def _notify(self, exchange: Exchange) -> None:
        for observer in self.observers:
            observer(exchange)

    def _send(self, request: UpstreamRequest, request_id: str | None) -> UpstreamResponse:
        upstream = request.upstream
        deadline = time.monotonic() + upstream.timeout
        started = time.monotonic()
        method, url, body = request.method, request.url, request.body
        headers_out = request.headers
        if request_id is not None:
            headers_out = (*headers_out, ("X-Request-ID", request_id))
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, content = self._send_once(upstream, method, url, headers_out,
                                                       body, deadline)
            location = next((v for k, v in headers if k.lower() == "location"), None) \
                if status in (301, 302, 303, 307, 308) else None
            if location is None:
                return UpstreamResponse(status, _dated(filter_response_headers(headers)), content,
                                        time.monotonic() - started, _tags(headers))
            target = redirect_target(url, location)
            if target is None:
                raise UpstreamRedirect(f"upstream {upstream.name!r} redirected to a Location that is "
                                       "not a valid url; the bridge only follows redirects below "
                                       "the configured url")
            if not within_base(upstream.url, target):
                raise UpstreamRedirect(f"upstream {upstream.name!r} redirected outside its base url; "
                                       "the bridge only follows redirects below the configured url")
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = target
        raise UpstreamRedirect(f"upstream {upstream.name!r} redirected more than {MAX_REDIRECTS} "
                               "times")

    def _send_once(self, upstream: UpstreamConfig, method: str, url: str,
                   headers: tuple[tuple[str, str], ...], body: bytes | None,
                   deadline: float) -> tuple[int, list[tuple[str, str]], bytes]:
        """One exchange under the total deadline: past it, the socket is cut (deadline.py) and
        whatever that broke is reported as the timeout it is, never as a short answer."""
        with WATCHDOG.watch(deadline) as watch:
            try:
                result = self._exchange(upstream, method, url, headers, body, deadline)
            except UpstreamError:
                if not watch.fired:
                    raise
                result = None
            if watch.fired:
                raise timed_out(upstream)
        assert result is not None
        return result

    def _exchange(self, upstream: UpstreamConfig, method: str, url: str,
                  headers: tuple[tuple[str, str], ...], body: bytes | None,
                  deadline: float) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request and its answer on a pooled connection, every transport failure turned into
        the bridge's typed errors here and only here."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out(upstream)
        origin, pool = self.pool_for(upstream)
        target = url[len(origin):]
        if url[:len(origin)].lower() != origin.lower() or not target.startswith("/"):
            # upstream_url and within_base never make such a url; this is the last line anyway.
            raise UpstreamRedirect(f"a request for upstream {upstream.name!r} left its origin")
        for attempt in range(2):
            try:
                conn, reused = pool.connection(min(remaining, upstream.timeout))
            except BaseException as exc:
                raise self._typed(exc, upstream, answered=False) from None
            progress: list[str] = []
            try:
                return self._on(conn, pool, method, target, headers, body, deadline, progress)
            except BaseException as exc:
                conn.close()  # a half-read or broken connection is never reused
                if (attempt == 0 and reused and method in RETRIED_METHODS and isinstance(exc, RACED)
                        and "head" not in progress):
                    continue  # the server closed it while idle: once more on a new connection
                raise self._typed(exc, upstream, answered="sent" in progress) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _on(self, conn: Connection, pool: OriginPool, method: str, target: str,
            headers: tuple[tuple[str, str], ...], body: bytes | None, deadline: float,
            progress: list[str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request and its answer on ``conn``, released to the pool when it may be reused;
        ``progress`` gains "sent" and "head" as the exchange passes them."""
        sock = conn.sock

        def before_read() -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)

        before_read()
        conn.send(method, target, request_headers(headers, pool.host_header), body)
        progress.append("sent")
        # Waiting for the answer is where a dripping upstream holds us: cut at the deadline.
        WATCHDOG.attach_current(sock)
        head = conn.read_head(method)
        progress.append("head")
        if head.length is not None and head.length > self._limits.max_upstream_body:
            raise Overflow
        decode = decoder_for(_header(head.headers, "content-encoding")) \
            if method != "HEAD" else None
        content, reusable = conn.read_body(head, method, self._limits.max_upstream_body, decode,
                                           before_read)
        if reusable:
            pool.release(conn)
        else:
            conn.close()
        return head.status, head.headers, content

    def _typed(self, exc: BaseException, upstream: UpstreamConfig, answered: bool) -> BaseException:
        """The bridge's error for what broke a connection or an exchange, decided here and only here
        (as requests' adapters do); the guard's own refusals (``BridgeError``) pass through."""
        name = upstream.name
        if isinstance(exc, TimeoutError):
            return timed_out(upstream)
        if isinstance(exc, Overflow):
            return UpstreamTooLarge(f"upstream {name!r} answered with more than "
                                    f"{self._limits.max_upstream_body} bytes")
        if isinstance(exc, ProtocolError):
            return UpstreamError(f"upstream {name!r} {exc}")
        if isinstance(exc, DecodeError):
            return UpstreamError(f"upstream {name!r} sent {exc}")
        if isinstance(exc, ssl.SSLError):
            return UpstreamUnreachable(f"TLS with upstream {name!r} failed")
        if isinstance(exc, OSError):
            return UpstreamError(f"upstream {name!r} broke off its answer ({type(exc).__name__})") \
                if answered else UpstreamUnreachable(f"upstream {name!r} is unreachable")
        return exc


def _dated(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """RFC 9110 section 6.6.1: an answer goes on with one Date, since the bridge stores and forwards
    it (and its Expires is counted from it). The upstream's when it is an HTTP-date (the first, when
    it sent several: the one a recipient reads); an answer that came without one, or with one that
    is not a date (which a recipient may replace), is given the time it arrived."""
    dates = [index for index, (name, _) in enumerate(headers) if name.lower() == "date"]
    kept = bool(dates) and is_http_date(headers[dates[0]][1])
    if kept and len(dates) == 1:
        return headers
    dropped = set(dates[1:] if kept else dates)
    fields = tuple(field for index, field in enumerate(headers) if index not in dropped)
    return fields if kept else (*fields, ("Date", formatdate(usegmt=True)))


def _tags(headers: list[tuple[str, str]]) -> tuple[str, ...]:
    """The purge tags an answer names in Surrogate-Key and Cache-Tag (every line of both)."""
    values = [value for name, value in headers if name.lower() in TAG_HEADERS]
    return parse_tags(" ".join(values)) if values else ()


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)
