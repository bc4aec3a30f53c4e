"""HTTP/1.1 with an upstream, strictly: the request written in one piece, the answer read and checked.

``Connection`` is one socket (plain or TLS) to one upstream origin. ``send`` writes a request as one
buffer; ``read_head`` reads the status line and header section of the final answer, reading past
interim 1xx answers (RFC 9110 section 15.2: never forwarded) and refusing anything that is not HTTP/1.1
as RFC 9112 writes it: a status line that is not ``HTTP/1.x NNN reason``, a final status outside the
classes 2xx to 5xx (one inside them that HTTP does not name, such as 299, is forwarded: RFC 9110
section 15 makes status codes extensible, read by their class), a header line that is folded,
malformed or carries a control character, more than ``MAX_HEADERS`` fields or ``MAX_HEAD_BYTES``
bytes, framing that contradicts itself, or a header section the upstream broke off before its blank
line. ``read_body`` reads a length-delimited, chunked or close-delimited body and says whether the
connection may carry another request. Each refusal is a ``ProtocolError`` naming what the upstream
did; the upstream client (``upstream.py``) turns it, and the socket's own errors, into the bridge's
typed errors. This module neither decides where to connect nor how long to wait: the caller sets the
socket's timeout and watches the deadline.
"""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..policy.headers import TOKEN_BYTES

MAX_HEADERS = 100  # header fields of one answer
MAX_HEAD_BYTES = 64 * 1024  # its status line and header section together
MAX_LINE = 16 * 1024
CHUNK = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r?\n")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[\t ]*(?:;[^\r\n]*)?\r?\n")
# Final statuses a client may be given: every one of the classes 2xx to 5xx, named or not.
FORWARDABLE_STATUSES = range(200, 600)

Decode = Callable[[bytes, int], bytes]


class ProtocolError(Exception):
    """The upstream's answer is not HTTP/1.1 the bridge can pass on; the message says what it did."""


class NoAnswer(ProtocolError):
    """The connection closed before the first byte of an answer: on a reused kept-alive connection,
    the server closing it while idle, raced by our request (RFC 9112 section 9.3.1)."""


class Overflow(Exception):
    """More body than the caller's cap."""


@dataclass(frozen=True, slots=True)
class Head:
    """The status line and header section of a final answer."""

    status: int
    headers: list[tuple[str, str]]
    version: int  # 0 for HTTP/1.0, 1 for HTTP/1.1
    length: int | None  # Content-Length, None when chunked or delimited by the close
    chunked: bool
    keep_alive: bool  # whether the upstream lets the connection carry another request


class Connection:
    """One connection to an upstream origin; ``sock`` is connected already (origin_pool.py)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = cast(io.BufferedReader, sock.makefile("rb", buffering=CHUNK))

    def close(self) -> None:
        self._reader.close()
        self.sock.close()

    def send(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> None:
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}\r\n")
        lines.append("\r\n")
        self.sock.sendall("".join(lines).encode("latin-1") + (body or b""))

    def read_head(self, method: str) -> Head:
        """The head of the final answer to a request of ``method``; interim answers skipped."""
        first = True
        while True:
            version, status, headers = self._read_status_and_fields(first)
            first = False
            if status == 101:
                raise ProtocolError("switched protocols (101) though the bridge never asks it to")
            if 100 <= status < 200:
                continue  # 100 Continue, 102 Processing, 103 Early Hints: the answer follows
            if status not in FORWARDABLE_STATUSES:
                raise ProtocolError(f"answered with status {status}, outside HTTP's classes 2xx to 5xx")
            return _framed(version, status, headers, method)

    def _read_status_and_fields(self, first: bool) -> tuple[int, int, list[tuple[str, str]]]:
        line = self._reader.readline(MAX_LINE)
        if not line:
            raise (NoAnswer if first else ProtocolError)("closed the connection without answering")
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError("answered with a status line that is not HTTP/1.1")
        size = len(line)
        headers: list[tuple[str, str]] = []
        while True:
            line = self._reader.readline(MAX_LINE)
            size += len(line)
            if not line or not line.endswith(b"\n"):
                raise ProtocolError("broke off its header section before its end")
            if line in (b"\r\n", b"\n"):
                return int(match.group(1)), int(match.group(2)), headers
            if size > MAX_HEAD_BYTES or len(headers) >= MAX_HEADERS:
                raise ProtocolError(f"sent a header section of over {MAX_HEADERS} fields or "
                                    f"{MAX_HEAD_BYTES} bytes")
            headers.append(_field(line))

    def read_body(self, head: Head, method: str, cap: int, decode: Decode | None,
                  before_read: Callable[[], None]) -> tuple[bytes, bool]:
        """The body (decoded by ``decode`` when given), at most ``cap`` bytes of it, and whether the
        connection may be reused. ``before_read`` runs before every read from the socket (the caller
        cuts its timeout to the time left)."""
        if method == "HEAD" or head.status in (204, 304):
            return b"", head.keep_alive
        out = _Body(cap, decode)
        if head.chunked:
            self._read_chunked(out, before_read)
        elif head.length is not None:
            self._read_exactly(head.length, out, before_read)
        else:
            while True:
                before_read()
                piece = self._reader.read1(CHUNK)
                if not piece:
                    return out.finish(), False  # close-delimited: the close ends it
                out.add(piece)
        return out.finish(), head.keep_alive

    def _read_exactly(self, length: int, out: _Body, before_read: Callable[[], None]) -> None:
        left = length
        while left:
            before_read()
            piece = self._reader.read1(min(left, CHUNK))
            if not piece:
                raise ProtocolError(f"broke off its answer ({left} bytes short of its length)")
            left -= len(piece)
            out.add(piece)

    def _read_chunked(self, out: _Body, before_read: Callable[[], None]) -> None:
        while True:
            before_read()
            line = self._reader.readline(MAX_LINE)
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ProtocolError("broke off its answer or sent a malformed chunk")
            size = int(match.group(1), 16)
            if size == 0:
                break
            self._read_exactly(size, out, before_read)
            if self._reader.readline(3) not in (b"\r\n", b"\n"):
                raise ProtocolError("sent a chunk longer than its size says")
        trailers = 0
        while True:  # the trailer section: read and dropped (never forwarded)
            before_read()
            line = self._reader.readline(MAX_LINE)
            if line in (b"\r\n", b"\n"):
                return
            trailers += 1
            if not line.endswith(b"\n") or trailers > MAX_HEADERS:
                raise ProtocolError("broke off its answer in the chunked trailer")


class _Body:
    """Bytes gathered up to a cap, decoded a bounded piece at a time when a decoder is given."""

    def __init__(self, cap: int, decode: Decode | None) -> None:
        self.cap, self.decode, self.size = cap, decode, 0
        self.pieces: list[bytes] = []

    def add(self, piece: bytes) -> None:
        if self.decode is not None:
            piece = self.decode(piece, self.cap - self.size)
        self.size += len(piece)
        if self.size > self.cap:
            raise Overflow
        if piece:
            self.pieces.append(piece)

    def finish(self) -> bytes:
        if self.decode is not None:
            self.add(b"")  # the decoder's end: what it still holds
        return b"".join(self.pieces)


def _field(line: bytes) -> tuple[str, str]:
    """One header line as ``(name, value)``; ProtocolError for anything RFC 9112 section 5 refuses."""
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError("sent a folded header line (obs-fold), which the bridge does not pass on")
    name, colon, value = line.partition(b":")
    if not colon or not TOKEN_BYTES.fullmatch(name):
        raise ProtocolError("sent a header line that is not 'Name: value'")
    value = value.rstrip(b"\r\n").strip(b" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise ProtocolError(f"sent a control character in its {name.decode()[:40]} header")
    return name.decode("ascii"), value.decode("latin-1")


def _framed(version: int, status: int, headers: list[tuple[str, str]], method: str) -> Head:
    """How the body of this answer is delimited (RFC 9112 section 6.3), and whether the connection
    may carry another request afterwards."""
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    # "identity" (RFC 2616's, since withdrawn) means no transfer coding: read as if it were absent.
    codings = [c.strip().lower() for k, v in headers if k.lower() == "transfer-encoding"
               for c in v.split(",") if c.strip() and c.strip().lower() != "identity"]
    tokens = {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}
    keep_alive = "close" not in tokens if version == 1 else "keep-alive" in tokens
    if codings:
        if codings != ["chunked"]:
            named = ", ".join(codings)[:40]
            raise ProtocolError(f"sent a Transfer-Encoding the bridge does not read ({named})")
        # Both framings at once is how responses are smuggled: the body is read as chunked, and the
        # connection is never trusted with another request.
        return Head(status, headers, version, None, True, keep_alive and not lengths)
    if lengths:
        values = {v.strip() for v in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ProtocolError("sent a Content-Length that is not one number")
        return Head(status, headers, version, int(values.pop()), False, keep_alive)
    if method == "HEAD" or status in (204, 304):
        return Head(status, headers, version, 0, False, keep_alive)
    return Head(status, headers, version, None, False, False)  # delimited by the close
