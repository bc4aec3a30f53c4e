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

from .http1 import Connection
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


