"""The bridge's gunicorn workers: refusals in the bridge's JSON shape, the app's Date kept, and a fair
share of a burst.

gunicorn's documented extension point is the worker class; ``worker_class`` (``app.py``) gives one of
these. Every one answers what gunicorn refuses before the app sees a request (a request line or header
it cannot parse, over its limits, a chunk that is malformed) as ``{"error", "message"}`` with
``nosniff`` and never an echo of the input, in ``handle_error``, instead of gunicorn's HTML page that
quoted the request line. Every one also keeps a ``Date`` the app gives: gunicorn counts ``Date`` as
hop-by-hop, drops the app's and writes the time of sending, but a cache that serves a stored answer must
send the Date the answer was made with (RFC 9110 section 6.6.1, RFC 9111 section 4), so each request's
response object is made a ``DatedResponse``, which sends the app's Date in place of gunicorn's when
there is one (the bridge's own answers give none and get gunicorn's). ``FairThreadWorker`` adds fair
accept: gunicorn's workers share one listening socket, and whichever is awake when a burst arrives (a
load balancer opening its pool, a benchmark's connections) can accept most of it, so each worker
publishes how many connections it holds in a table of shared memory made before the workers fork, and
defers an accept for at most ``MAX_DEFER`` while it holds more than the least loaded live worker. A
worker whose row has not been refreshed for ``STALE_AFTER`` counts as gone. This module changes no
request the app sees.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import HEADER_VALUE_RE, TOKEN_RE, Response
from gunicorn.util import hop_headers, http_date, write_nonblock
from gunicorn.util import write as util_write
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

MAX_DEFER = 0.002  # seconds one connection may wait for a less loaded worker to take it
DEFER_STEP = 0.0005
STALE_AFTER = 5.0  # seconds without a heartbeat after which a worker's row is ignored
_ROW = struct.Struct("<qqd")  # pid, open connections, last heartbeat (monotonic seconds)
# The response fields gunicorn does not pass on as the app gave them: its hop-by-hop set (which
# counts Date and Server) and Content-Length, which it reads.
_SPECIAL = frozenset(hop_headers) | {"content-length"}
# Response fields already checked against gunicorn's grammar, each with what it comes to: kept as
# it is (plain), read and kept (Content-Length) or read as the app's Date. An app sends the same
# few fields again and again (a cached answer's on every hit); a field is a pair of strings, so
# one that equals a checked one is valid. Bounded in number and size, as the road's memos are.
_PLAIN, _LENGTH, _DATE = "plain", "content-length", "date"
_KINDS = {"content-length": _LENGTH, "date": _DATE}
_CHECKED: dict[tuple[str, str], tuple[str, tuple[str, str]]] = {}
CHECKED_KEPT = 1024
CHECKED_CHARS = 512


class WorkerTable:
    """One row per live worker, in memory shared with every process forked after it is made."""

    def __init__(self, rows: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rows = rows
        self.clock = clock
        self._table = mmap.mmap(-1, rows * _ROW.size, flags=mmap.MAP_SHARED)

    def claim(self, pid: int) -> int:
        """A row for ``pid``: a free one, or one whose worker has gone quiet."""
        now = self.clock()
        for row in range(self.rows):
            owner, _, beat = _ROW.unpack_from(self._table, row * _ROW.size)
            if owner in (0, pid) or now - beat > STALE_AFTER:
                _ROW.pack_into(self._table, row * _ROW.size, pid, 0, now)
                return row
        return -1  # more workers than rows: this one accepts as gunicorn would

    def publish(self, row: int, pid: int, connections: int) -> None:
        if row >= 0:
            _ROW.pack_into(self._table, row * _ROW.size, pid, connections, self.clock())

    def release(self, pid: int) -> None:
        for row in range(self.rows):
            if _ROW.unpack_from(self._table, row * _ROW.size)[0] == pid:
                _ROW.pack_into(self._table, row * _ROW.size, 0, 0, 0.0)

    def least_loaded_other(self, row: int) -> int | None:
        """The fewest connections any other live worker holds, or None when there is none."""
        now = self.clock()
        least: int | None = None
        for other in range(self.rows):
            if other == row:
                continue
            owner, connections, beat = _ROW.unpack_from(self._table, other * _ROW.size)
            if owner and now - beat <= STALE_AFTER and (least is None or connections < least):
                least = connections
        return least


# What gunicorn refuses itself, by the error it raised: status, code, and what to change.
_REFUSALS: tuple[tuple[tuple[type[BaseException], ...], int, str, str], ...] = (
    ((http_errors.LimitRequestLine,), 414, "uri_too_long",
     "the request line is over 8190 bytes; shorten the url"),
    ((http_errors.LimitRequestHeaders,), 431, "headers_too_large",
     "a request header is over 8190 bytes or there are over 100 of them"),
    ((http_errors.ExpectationFailed,), 417, "expectation_failed",
     "the Expect header is not supported; send the request without it"),
    ((http_errors.UnsupportedTransferCoding,), 501, "not_implemented",
     "that transfer coding is not supported; send a plain or chunked body"),
    ((http_errors.ForbiddenProxyRequest,), 403, "forbidden", "the request was refused by the server"),
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName,
      http_errors.ConfigurationProblem), 500, "internal_error",
     "the server failed while answering; the operator's log has the details"),
    ((http_errors.ParseException,), 400, "bad_request",
     "the request is not valid HTTP/1.1 (request line, header syntax or framing); send ASCII and "
     "percent-encode everything else in the url"),
)
_REASONS = {400: "Bad Request", 403: "Forbidden", 414: "URI Too Long", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented"}


class JsonRefusals:
    """``handle_error`` for any gunicorn worker: the refusal as JSON, the reason in the log."""

    log: Any

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        status, code, message = next(
            ((status, code, message) for kinds, status, code, message in _REFUSALS
             if isinstance(exc, kinds)), (500, "internal_error", "the server failed on this request"))
        if status == 500:
            self.log.exception("Error handling request")
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], type(exc).__name__)
        body = json.dumps({"error": code, "message": message}).encode()
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n")
        try:
            write_nonblock(client, head.encode("latin-1") + body)
        except OSError:
            self.log.debug("Failed to send error message.")


def _checked(field: Any) -> tuple[str, tuple[str, str]] | None:
    """What a field of a plain, Content-Length or Date name comes to, when it is a pair of strings
    gunicorn's grammar takes (remembered when it is at most ``CHECKED_CHARS``); None for any other
    field, which gunicorn's own method then handles."""
    if type(field) is not tuple or len(field) != 2:
        return None
    name, value = field
    if not (type(name) is str and type(value) is str and TOKEN_RE.fullmatch(name)
            and HEADER_VALUE_RE.fullmatch(value)):
        return None
    lowered = name.lower()
    kind = _PLAIN if lowered not in _SPECIAL else _KINDS.get(lowered)
    if kind is None:
        return None
    found = (kind, (name, value.strip(" \t")))
    if len(name) + len(value) <= CHECKED_CHARS:
        if len(_CHECKED) >= CHECKED_KEPT:
            _CHECKED.clear()  # cheaper than an LRU's bookkeeping on every field
        _CHECKED[field] = found
    return found


class DatedResponse(Response):
    """gunicorn's response, sending the ``Date`` the app gave instead of the time of sending.

    It checks and keeps the app's headers as gunicorn's ``process_headers`` does (every name a
    token, every value free of controls, hop-by-hop fields dropped, ``Content-Length`` read), each
    field once (``_CHECKED`` remembers what a checked field comes to); a field that fails, or that
    gunicorn handles itself (the hop-by-hop ones), goes to gunicorn's own method, which raises its
    own error. ``default_headers`` writes gunicorn's lines with the app's Date when it gave one, so
    no time is formatted for such an answer.
    """

    app_date: str | None = None
    headers_sent: bool  # gunicorn's, set in its __init__

    def process_headers(self, headers: list[tuple[str, str]]) -> None:
        kept = self.headers
        for field in headers:
            try:
                found = _CHECKED.get(field)
            except TypeError:  # not hashable: not a pair of strings, which gunicorn refuses
                found = None
            if found is None:
                found = _checked(field)
                if found is None:  # gunicorn's own: its error for a field at fault, or a hop-by-hop one
                    super().process_headers([field])
                    continue
            kind, pair = found
            if kind is _PLAIN:
                kept.append(pair)
            elif kind is _LENGTH:  # read, and passed on, as gunicorn does
                self.response_length = int(pair[1])
                kept.append(pair)
            elif self.app_date is None:  # the first Date, as a recipient reads one (RFC 9110 5.3)
                self.app_date = pair[1]

    def default_headers(self) -> list[str]:
        """gunicorn's status line and its own fields, in its order, the app's Date in place of the
        time of sending when the app gave one."""
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.req.version
        lines = [f"HTTP/{version[0]}.{version[1]} {self.status}\r\n", f"Server: {self.version}\r\n",
                 f"Date: {self.app_date or http_date()}\r\n", f"Connection: {connection}\r\n"]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        return lines

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        fields = self.headers  # every name and value a str: process_headers saw to it
        head = "".join(self.default_headers()) + (
            "\r\n".join(map(": ".join, fields)) + "\r\n\r\n" if fields else "\r\n")
        util_write(self.sock, head.encode("latin-1"))
        self.headers_sent = True


class KeepsAppDate:
    """A worker whose responses are ``DatedResponse``: its WSGI callable, wrapped once when the
    worker loads the app, turns the response gunicorn made for the request (whose ``start_response``
    it is) into one before the app runs. An HTTP/2 response, another class, is left as it is."""

    wsgi: Any

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        app = self.wsgi

        def dated(environ: dict[str, Any], start_response: Any) -> Any:
            response = getattr(start_response, "__self__", None)
            if type(response) is Response:
                response.__class__ = DatedResponse
            return app(environ, start_response)

        self.wsgi = dated


class BridgeSyncWorker(JsonRefusals, KeepsAppDate, SyncWorker):
    """gunicorn's ``sync`` worker, answering its refusals as JSON and keeping the app's Date."""


class BridgeThreadWorker(JsonRefusals, KeepsAppDate, ThreadWorker):
    """gunicorn's ``gthread`` worker, answering its refusals as JSON and keeping the app's Date."""


class FairThreadWorker(JsonRefusals, KeepsAppDate, ThreadWorker):
    """``gthread`` that leaves a connection to a less loaded worker for up to ``MAX_DEFER``."""

    table: WorkerTable | None = None  # set in the master before the workers fork (app.py)
    _row = -1
    _pid = 0
    _published = (-1, 0.0)  # the count last published, and when

    def init_process(self) -> None:
        if self.table is not None:
            self._pid = os.getpid()
            self._row = self.table.claim(self._pid)
        super().init_process()

    def notify(self) -> None:
        """gunicorn's heartbeat, once per turn of the worker's loop: the count is published when it
        changed, and at least every second so that the row stays alive."""
        super().notify()
        table = self.table
        if table is not None:
            count, (published, at) = self.nr_conns, self._published
            now = table.clock()
            if count != published or now - at > 1.0:
                table.publish(self._row, self._pid, count)
                self._published = (count, now)

    def accept(self, listener: Any) -> None:
        table = self.table
        if table is not None and self._row >= 0:
            waited = 0.0
            while waited < MAX_DEFER:
                least = table.least_loaded_other(self._row)
                if least is None or self.nr_conns <= least:
                    break
                time.sleep(DEFER_STEP)  # another worker may take it meanwhile
                waited += DEFER_STEP
        super().accept(listener)
        if table is not None:
            table.publish(self._row, self._pid, self.nr_conns)
            self._published = (self.nr_conns, table.clock())


def worker_exited(pid: int) -> None:
    """The master's ``child_exit`` hook: the row of a worker that is gone is free again."""
    if FairThreadWorker.table is not None:
        FairThreadWorker.table.release(pid)
