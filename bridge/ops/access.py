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
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Flask, Response, g, request

from . import process

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
ACCESS_LOGGER = "bridge.access"
WRITE_AFTER = 0.02  # seconds an access line waits, at most, to be written with the lines after it
PIPE_BUF = select.PIPE_BUF  # the most bytes one write(2) to a pipe keeps whole among other writers'
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


def _text(line: str | AccessRecord) -> str:
    """A message as it is, or an access record's line."""
    return line if isinstance(line, str) else access_line(line)


class _BareLines(logging.StreamHandler):
    """The default access handler: each message as it is, one per line, on a stream.

    On a real file (gunicorn's stderr: a pipe, a file, a journal socket) lines are not written by the
    request that made them (nor, for an access record, made by it): they wait at most
    ``WRITE_AFTER`` in this process's queue and a thread of the process writes them together, in
    ``write(2)`` calls of whole lines of at most ``PIPE_BUF`` bytes, which the kernel keeps whole
    among other processes' writes to the same pipe or file (O_APPEND). A write per request was
    about 4% of a cache hit's throughput under load: each one lets the worker's other threads take
    the interpreter, and the request waits to get it back.
    ``flush`` (at exit, through ``logging.shutdown``; before ``setStream``) writes what waits at once,
    so a worker that stops loses no line; one killed outright loses at most its last ``WRITE_AFTER``.
    Anything else (a StringIO, a test's capture) is written at once, the locked way. A record that
    comes through ``logging`` (when an operator adds a handler or a filter at run time) is written at
    once too, after the lines that wait.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.bare_formatter = self.formatter
        self._waiting: deque[str | AccessRecord] = deque()
        self._wake = threading.Event()
        self._writer_pid = 0  # the process whose thread writes what waits (0: none started yet)

    def writes_bare(self, logger: logging.Logger) -> bool:
        """Whether handing ``logger`` a record would only reach this handler and write the message
        as it is: then ``write`` does the same without building the record."""
        handlers = logger.handlers
        return (len(handlers) == 1 and handlers[0] is self and not logger.propagate
                and not logger.filters
                and not self.filters and self.level <= logging.INFO
                and self.formatter is self.bare_formatter)

    def write(self, line: str | AccessRecord) -> None:
        """What ``emit`` does with a record whose message is ``line``; for an ``AccessRecord``,
        its ``access_line``, made by the writer thread with the lines around it (so the request
        that made the record does not spend its time on it)."""
        try:
            self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.acquire()
            try:
                self.stream.write(_text(line) + self.terminator)
                self.flush()
            finally:
                self.release()
            return
        if self._writer_pid != process.pid:
            self._start_writer()
        self._waiting.append(line)
        if not self._wake.is_set():  # once per batch: the writer is asleep until then
            self._wake.set()

    def emit(self, record: logging.LogRecord) -> None:
        """A record that came through ``logging`` (another handler or a filter beside this one):
        written at once, after the lines still waiting, so that lines come out in the order they
        were made."""
        self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        self._write_waiting()
        super().flush()

    def _start_writer(self) -> None:
        """This process's writer, on its first line. In a child forked after lines were queued
        (gunicorn forks before any request), the queue and its event are the parent's: the parent
        writes those lines, and the child starts with its own."""
        self.acquire()
        try:
            if self._writer_pid == process.pid:
                return
            self._waiting, self._wake = deque(), threading.Event()
            self._writer_pid = process.pid
            threading.Thread(target=self._write_often, args=(process.pid, self._wake),
                             name="access-log", daemon=True).start()
        finally:
            self.release()

    def _write_often(self, pid: int, wake: threading.Event) -> None:
        while self._writer_pid == pid:
            wake.wait()
            time.sleep(WRITE_AFTER)  # the lines of the next few requests go in the same write
            wake.clear()
            self._write_waiting()

    def _write_waiting(self) -> None:
        """Write every line that waits, in order, whole lines per ``write(2)``, at most ``PIPE_BUF``
        bytes each (a longer line alone)."""
        waiting = self._waiting
        if not waiting or self._writer_pid != process.pid:  # none, or a parent's (see above)
            return
        self.acquire()  # with setStream and the other flushes: each line goes out once, in order
        try:
            chunk: list[bytes] = []
            size = 0
            terminator = self.terminator
            while waiting:
                data = (_text(waiting.popleft()) + terminator).encode("utf-8", "backslashreplace")
                if chunk and size + len(data) > PIPE_BUF:
                    self._write_all(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
            if chunk:
                self._write_all(b"".join(chunk))
        except Exception:  # a closed or full stream: reported as emit() would, the lines dropped
            self.handleError(logging.makeLogRecord({"msg": "access lines", "name": ACCESS_LOGGER}))
        finally:
            self.release()

    def _write_all(self, data: bytes) -> None:
        fd = self.stream.fileno()
        while data:
            data = data[os.write(fd, data):]


def _log_access(logger: logging.Logger, record: AccessRecord) -> None:
    handler = logger.handlers[0] if logger.handlers else None
    if isinstance(handler, _BareLines) and handler.writes_bare(logger):
        # No LogRecord unless something goes wrong (building one was most of what was left of the
        # logging cost of a cache hit), and the line made when it is written.
        try:
            handler.write(record)
        except Exception:
            handler.handleError(_record(logger, access_line(record)))  # as emit() would
        return
    logger.handle(_record(logger, access_line(record)))


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
            _log_access(self.logger, record)


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
