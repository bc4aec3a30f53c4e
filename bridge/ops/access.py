"""Request ids and the structured access log: what happened to each request, one JSON line each.

Every request gets an id: the client's ``X-Request-ID`` when it is well-formed (1-128 characters of
``[A-Za-z0-9._-]``, so it cannot smuggle a header, a log line or markup), a fresh one otherwise. The id
is returned on the response, sent upstream with the fetch it caused, and written in the access line.
After each request an ``AccessRecord`` is built from what the response already says (status,
``Cache-Status``) and handed to the listeners (``bridge.metrics`` is one) and to the ``bridge.access``
logger. This module decides nothing about the request itself and never changes a response beyond
adding ``X-Request-ID``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
ACCESS_LOGGER = "bridge.access"
# The blueprints whose requests are named by kind; everything else (healthz, metrics, apis) is "other".
KINDS = ("cors", "preflight", "jsonp", "other")


@dataclass(slots=True)
class AccessRecord:
    method: str
    kind: str  # one of KINDS
    upstream: str  # a configured upstream's name, or "" (never a client-chosen string: label safety)
    status: int
    cache: str  # hit, stale, miss or "" when no cache was involved
    duration: float  # seconds, from the first hook to the last
    request_id: str
    error: str = ""  # the refusal's code when the bridge refused


Listener = Callable[[AccessRecord], None]


def accepted_request_id(value: str | None) -> str | None:
    """The client's id when it is well-formed, else None (and the bridge makes its own)."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return None


# An id is 32 hex digits: 64 random bits drawn once per process, then a counter. Unique across
# workers and restarts without a system call per request. An id names a request in logs; it is not a
# secret. gunicorn forks its workers from a master that has already imported this module: each child
# draws its own prefix, or two workers would hand out the same ids.
_next_id: Iterator[str] = iter(())


def _new_ids() -> None:
    global _next_id
    prefix = int.from_bytes(os.urandom(8), "big")
    _next_id = map("%032x".__mod__, itertools.count(prefix << 64))  # the prefix, then the count


_new_ids()
os.register_at_fork(after_in_child=_new_ids)


def new_request_id() -> str:
    return next(_next_id)


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for every str


# The start of a line up to its duration, by (method, kind, upstream, status, cache): the same few
# dozen on every request. The method is the client's, so at most this many are remembered.
_LINE_STARTS: dict[tuple[str, str, str, int, str], str] = {}
LINE_STARTS_KEPT = 512


def access_line(record: AccessRecord) -> str:
    """The record as one line of JSON, the very text ``json.dumps(..., separators=(",", ":"))``
    gives, joined by hand, without the dict that ``dataclasses.asdict`` builds or the encoder that
    ``json.dumps`` sets up for every call (the access log is written on every request)."""
    fields = (record.method, record.kind, record.upstream, record.status, record.cache)
    start = _LINE_STARTS.get(fields)
    if start is None:
        start = ('{"method":' + _json_string(record.method)
                 + ',"kind":' + _json_string(record.kind)
                 + ',"upstream":' + _json_string(record.upstream)
                 + ',"status":' + int.__repr__(record.status)
                 + ',"cache":' + _json_string(record.cache) + ',"duration":')
        if len(_LINE_STARTS) < LINE_STARTS_KEPT:
            _LINE_STARTS[fields] = start
    return (start + float.__repr__(round(record.duration, 6))
            + ',"request_id":' + _json_string(record.request_id)
            + ',"error":' + _json_string(record.error) + "}")


class _BareLines(logging.StreamHandler):
    """The default access handler: each message as it is, one per line, on a stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.bare_formatter = self.formatter

    def writes_bare(self, logger: logging.Logger) -> bool:
        """Whether handing ``logger`` a record would only reach this handler and write the message
        as it is: then ``write`` does the same without building the record."""
        handlers = logger.handlers
        return (len(handlers) == 1 and handlers[0] is self and not logger.propagate
                and not logger.filters
                and not self.filters and self.level <= logging.INFO
                and self.formatter is self.bare_formatter)

    def write(self, line: str) -> None:
        """What ``emit`` does with a record whose message is ``line``.

        On a real file (gunicorn's stderr: a pipe, a file, a journal socket) the line goes out in
        one ``write(2)`` of its own, with no Python lock: the kernel keeps each write whole (lines
        are far below PIPE_BUF, and writes to a regular file take its offset atomically), so the
        threads of a worker never queue on the handler's lock. Anything else (a StringIO, a test's
        capture) is written the locked way.
        """
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        if fd < 0:
            self.acquire()
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            finally:
                self.release()
            return
        data = (line + self.terminator).encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(fd, data):]


def _log_line(logger: logging.Logger, line: str) -> None:
    handler = logger.handlers[0] if logger.handlers else None
    if isinstance(handler, _BareLines) and handler.writes_bare(logger):
        # No LogRecord unless something goes wrong: building one was most of what was left of the
        # logging cost of a cache hit.
        try:
            handler.write(line)
        except Exception:
            handler.handleError(_record(logger, line))  # as emit() would
        return
    logger.handle(_record(logger, line))


def _record(logger: logging.Logger, line: str) -> logging.LogRecord:
    # makeRecord + handle is logger.info without findCaller's walk up the stack: the caller of an
    # access line is always this module, and the walk was most of the logging cost.
    return logger.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, line, (), None)


def _access_logger() -> logging.Logger:
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        # One bare line per request on stderr, where gunicorn's own log goes; an operator who
        # configures logging (dictConfig) before start-up keeps their handlers instead.
        handler = _BareLines()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Recorder:
    """Hands each finished request's record to the listeners and writes its access line."""

    def __init__(self, listeners: list[Listener], logger: logging.Logger) -> None:
        self.listeners = listeners
        self.logger = logger

    def record(self, record: AccessRecord) -> None:
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # a broken listener must not turn an answer into a 500
                logging.getLogger(__name__).exception("access listener %r failed", listener)
        if self.logger.isEnabledFor(logging.INFO):
            _log_line(self.logger, access_line(record))


ERROR_CODE = "bridge.error_code"  # where a Flask route's error handler leaves the refusal's code


def install(app: Flask, listeners: list[Listener] | None = None) -> Recorder:
    """Give every request Flask serves an id and an access record (the proxy road records its own
    through the same ``Recorder``); returns the recorder, whose listener list may be extended."""
    recorder = Recorder(list(listeners or []), _access_logger())

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()

    @app.after_request
    def finish_request(response: Response) -> Response:
        request_id = g.get("request_id") or new_request_id()
        response.headers[REQUEST_ID_HEADER] = request_id
        recorder.record(AccessRecord(
            method=request.method, kind="other", upstream="", status=response.status_code,
            cache="", duration=time.perf_counter() - g.get("started", time.perf_counter()),
            request_id=request_id, error=g.get(ERROR_CODE, "")))
        return response

    app.extensions["bridge.access_recorder"] = recorder
    return recorder
