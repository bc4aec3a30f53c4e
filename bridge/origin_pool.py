"""Kept-alive connections to one upstream origin, every new one through its address guard.

``OriginPool`` keeps the idle ``http1.Connection`` objects of one origin for any thread to reuse,
drops one the server closed while it idled, and opens each new one through ``AddressGuard``: the name
is resolved by the bridge, every answer checked, and the socket connected to the checked address,
while the Host header, TLS SNI and the certificate check keep using the name. ``decoder_for`` undoes
a gzip or deflate Content-Encoding a bounded piece at a time, so that a size cap counts decoded
bytes. This module connects and decodes; the upstream client decides what to send, how long to wait
and which errors to report.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import weakref
import zlib
from collections.abc import Callable

from .http1 import Connection, Overflow
from .netguard import AddressGuard


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
        if scheme not in ("http", "https"):
            raise ValueError(f"no connections for scheme {scheme!r}")
        self.guard, self.host, self.port, self.size = guard, host, port, size
        bare = f"[{host}]" if ":" in host else host  # an IPv6 literal is bracketed in Host
        default = 443 if scheme == "https" else 80
        self.host_header = bare if port == default else f"{bare}:{port}"
        self._context = ssl.create_default_context(cafile=ca_certs) if scheme == "https" else None
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        # A pool dropped with idle connections (an app rebuilt, a forked child's inherited one)
        # closes them when it is collected.
        weakref.finalize(self, _close_all, self._idle)

    def connection(self, connect_timeout: float) -> tuple[Connection, bool]:
        """A kept-alive connection the server has not closed (and True), else a new one connected
        within ``connect_timeout`` to the first checked address that answers (and False)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return Connection(self._connect(connect_timeout)), False
            if not _dropped(conn.sock):
                return conn, True
            conn.close()

    def _connect(self, timeout: float) -> socket.socket:
        addresses = self.guard.addresses(self.host, self.port)  # raises on a refused name
        for index, address in enumerate(addresses):
            try:
                sock = socket.create_connection((address, self.port), timeout)
            except OSError:
                if index == len(addresses) - 1:
                    raise
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is None:
                return sock
            # Pinned to the checked address, verified against the name (SNI and certificate).
            try:
                return self._context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        raise AssertionError("unreachable: addresses is never empty")

    def release(self, conn: Connection) -> None:
        """Take back a connection whose answer was read to the end and may be reused."""
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle)


def _close_all(idle: list[Connection]) -> None:
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
