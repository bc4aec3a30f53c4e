"""An upstream that answers with exactly the bytes a test gives it: HTTP broken in every way there is.

``RawUpstream`` listens on loopback; each connection's request is read to its blank line and
answered with ``answer`` (bytes, or a function of the request's path returning bytes), then the
connection is closed. ``requests`` counts what reached it, so a test can tell an answer asked for
once from one asked for twice.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Answer = bytes | Callable[[str], bytes]


class RawUpstream:
    def __init__(self, answer: Answer = b"") -> None:
        self.answer = answer
        self.requests: list[str] = []  # the path of each request
        self.heads: list[bytes] = []  # each request's head as it arrived
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            path = data.split(b" ", 2)[1].decode("latin-1") if data.count(b" ") >= 2 else ""
            self.requests.append(path)
            self.heads.append(data)
            answer = self.answer(path) if callable(self.answer) else self.answer
            try:
                conn.sendall(answer)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
