"""Kept-alive HTTP/1.1 connections to one upstream origin, every new one through its address guard.

``http.client`` speaks the protocol (the request out; the status line, headers and a chunked or
length-delimited body in). ``OriginPool`` keeps the idle connections of one origin for any thread to
reuse, drops one the server closed while it idled, and opens each new one through ``AddressGuard``:
the name is resolved by the bridge, every answer checked, and the socket connected to the checked
address, while the Host header, TLS SNI and the certificate check keep using the name. ``decoder_for``
undoes a gzip or deflate Content-Encoding a bounded piece at a time, so that a size cap counts decoded
bytes. This replaces urllib3's pool and response layers, which were two fifths of a cache miss in the
profile (its connection and response wrappers, header dicts, url parsing, retry and timeout objects)
for nothing the bridge used. This module connects and reads; the upstream client decides what to send,
how long to wait and which errors to report.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import weakref
import zlib
from collections.abc import Callable
from typing import Any

from .netguard import AddressGuard


class _GuardedConnect:
    """``connect`` through the guard: the checked addresses in order, the first that answers."""

    bridge_guard: AddressGuard
    host: str
    port: int
    timeout: float | None
    sock: socket.socket | None

    def _guarded_socket(self) -> socket.socket:
        addresses = self.bridge_guard.addresses(self.host, self.port)  # raises on a refused name
        for index, address in enumerate(addresses):
            try:
                sock = socket.create_connection((address, self.port), self.timeout)
            except OSError:
                if index == len(addresses) - 1:
                    raise
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise AssertionError("unreachable: addresses is never empty")


class GuardedHTTPConnection(_GuardedConnect, http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = self._guarded_socket()


class GuardedHTTPSConnection(_GuardedConnect, http.client.HTTPSConnection):
    bridge_context: ssl.SSLContext

    def connect(self) -> None:
        # Pinned to the checked address, verified against the name (SNI and certificate).
        self.sock = self.bridge_context.wrap_socket(self._guarded_socket(), server_hostname=self.host)


def _dropped(sock: socket.socket | None) -> bool:
    """Whether an idle kept-alive connection is gone: readable means closed (or, worse, talking
    out of turn); either way it is not reused. One poll, no wait."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class OriginPool:
    """Idle connections to ``scheme://host:port``, at most ``size`` kept; safe to share by threads."""

    def __init__(self, guard: AddressGuard, scheme: str, host: str, port: int, size: int,
                 ca_certs: str | None = None) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        # A pool dropped with idle connections (an app rebuilt, a forked child's inherited one)
        # closes them when it is collected, as urllib3's does.
        weakref.finalize(self, _close_all, self._idle)
        attributes: dict[str, Any] = {"bridge_guard": guard}
        if scheme == "https":
            attributes["bridge_context"] = ssl.create_default_context(cafile=ca_certs)
            self._connection_class: type[http.client.HTTPConnection] = type(
                "GuardedHTTPSConnection", (GuardedHTTPSConnection,), attributes)
        elif scheme == "http":
            self._connection_class = type("GuardedHTTPConnection", (GuardedHTTPConnection,), attributes)
        else:
            raise ValueError(f"no connections for scheme {scheme!r}")

    def connection(self, connect_timeout: float) -> http.client.HTTPConnection:
        """A kept-alive connection the server has not closed, else a new one (which connects on its
        first request, within ``connect_timeout``)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connection_class(self.host, self.port, timeout=connect_timeout)
            if not _dropped(conn.sock):
                return conn
            conn.close()

    def release(self, conn: http.client.HTTPConnection) -> None:
        """Take back a connection whose answer was read to the end and may be reused."""
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle)


def _close_all(idle: list[http.client.HTTPConnection]) -> None:
    while idle:
        idle.pop().close()


class DecodeError(ValueError):
    """The body does not decode as its Content-Encoding says, or names one the bridge cannot undo."""


Decoder = Callable[[bytes, int], bytes]


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A decoder for the body, or None when it is not encoded. ``decode(data, limit)`` returns at
    most ``limit`` bytes of output and raises ``Overflow`` when ``data`` holds more than that;
    ``decode(b"", limit)`` at the end returns what is left. Raises DecodeError for an encoding the
    bridge never asks for (it sends ``Accept-Encoding: gzip, deflate``) or a list of several."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return _ZlibDecoder(16 + zlib.MAX_WBITS).decode
    if coding == "deflate":
        return _ZlibDecoder(zlib.MAX_WBITS, raw_fallback=True).decode
    raise DecodeError(f"a Content-Encoding the bridge does not undo ({coding[:40]!r})")


class Overflow(Exception):
    """More decoded bytes than the caller's limit."""


class _ZlibDecoder:
    def __init__(self, wbits: int, raw_fallback: bool = False) -> None:
        self._wbits = wbits
        self._object = zlib.decompressobj(wbits)
        # RFC 9110 "deflate" is the zlib format, but servers have long sent raw deflate: like
        # browsers (and urllib3), try zlib first and fall back to raw on the first bytes only.
        self._raw_fallback = raw_fallback
        self._started = False

    def decode(self, data: bytes, limit: int) -> bytes:
        try:
            return self._decode(data, limit)
        except zlib.error:
            raise DecodeError("the body does not decode as its Content-Encoding says") from None

    def _decode(self, data: bytes, limit: int) -> bytes:
        if not data:
            return self._object.flush() if not self._object.eof else b""
        if self._raw_fallback and not self._started:
            self._started = True
            try:
                return self._bounded(data, limit)
            except zlib.error:
                self._object = zlib.decompressobj(-zlib.MAX_WBITS)
        out = self._bounded(data, limit)
        # gzip allows several members one after another (RFC 1952 section 2.2).
        while self._object.eof and self._object.unused_data and self._wbits > zlib.MAX_WBITS:
            rest = self._object.unused_data
            self._object = zlib.decompressobj(self._wbits)
            out += self._bounded(rest, limit - len(out))
        return out

    def _bounded(self, data: bytes, limit: int) -> bytes:
        out = self._object.decompress(data, max(limit, 0) + 1)
        if len(out) > limit or self._object.unconsumed_tail:
            raise Overflow
        return out
