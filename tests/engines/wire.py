"""The plumbing Firefox and WebKit share: browser processes in their own process group, a private
Xvfb display, and JSON commands over a websocket answered by id.

Nothing here knows a browser protocol's commands; `ProtocolSocket` only matches replies to
requests and hands every other message to the engine. Chromium needs none of it (Playwright owns
that process and its pipe).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket  # websocket-client

from tests.engines.base import COMMAND_TIMEOUT, EngineError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(log: Path, lines: int = 15) -> str:
    """The end of a browser's own output, for an error message that says why it failed."""
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


class BrowserProcess:
    """A browser started in a new session, so that stopping it stops every child it forked."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("ab") as output:
            self.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise EngineError(f"exited with status {self.popen.returncode}: {log_tail(self.log)}")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` in the process's output, e.g. the port it listens on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text(errors="replace"))
            if found:
                return found
            self.check_running()
            time.sleep(0.05)
        raise EngineError(f"no {pattern!r} in its output after {timeout} s: {log_tail(self.log)}")

    def wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise EngineError(f"127.0.0.1:{port} not listening after {timeout} s: {log_tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever of it is left after 5 s."""
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # The leader may be gone while a child it forked (a content process) still runs.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(2)


class Xvfb:
    """A virtual X display for WebKitGTK, on a display number Xvfb picks itself (-displayfd)."""

    def __init__(self, log: Path) -> None:
        read_end, write_end = os.pipe()
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as announced:
            number = announced.readline().strip()  # empty when Xvfb exits before it has a display
        if not number:
            self.stop()
            raise EngineError(f"Xvfb exited before it had a display: {log_tail(log)}")
        self.display = ":" + number.decode()

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(2)


class ProtocolSocket:
    """JSON messages over a websocket: `command` sends one with a fresh id and waits for the reply of
    that id; every message that has a ``method`` is an event, given to `on_event` on the reader
    thread (which must therefore never wait for a reply itself)."""

    def __init__(self, url: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self._socket = websocket.create_connection(url, timeout=COMMAND_TIMEOUT, suppress_origin=True)
        self._socket.settimeout(None)  # the reader blocks until the next message or the close
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        self._closed = False
        self._on_event = on_event
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"protocol {url}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                raw = self._socket.recv()
                if not raw:
                    break
                message = json.loads(raw)
                if "method" in message:
                    self._on_event(message)
                    continue
                with self._arrived:
                    self._replies[message["id"]] = message
                    self._arrived.notify_all()
        except (websocket.WebSocketException, OSError):
            pass  # the browser closed the socket or exited; waiters are told below
        finally:
            with self._arrived:
                self._closed = True
                self._arrived.notify_all()

    def command(self, message: dict[str, Any], timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send `message` (without its id) and return the whole reply."""
        message_id = next(self._ids)
        with self._send_lock:
            self._socket.send(json.dumps({"id": message_id, **message}))
        deadline = time.monotonic() + timeout
        with self._arrived:
            while message_id not in self._replies:
                if self._closed:
                    raise EngineError(f"the browser closed its socket before answering {message}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineError(f"no answer in {timeout} s to {message}")
                self._arrived.wait(left)
            return self._replies.pop(message_id)

    def close(self) -> None:
        self._socket.close(timeout=1)
        self._reader.join(2)
