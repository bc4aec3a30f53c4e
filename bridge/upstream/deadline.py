"""The total deadline of an upstream request, enforced on the socket whatever pace the upstream keeps.

Socket timeouts bound each read, not the request: an upstream that sends a byte just inside every
read timeout would hold a worker thread for as long as it likes. ``Watchdog.watch(deadline)`` opens a
watch for the current thread, the upstream connection attaches its socket while it waits for the
answer (``attach_current``), and when the deadline passes first one watchdog thread shuts the socket
down, which wakes the blocked read at once; the caller, past its deadline, reports a timeout. The
watchdog is woken only for a deadline earlier than the one it sleeps until, and fires every watch
then due once a ``TICK``, so a deadline is kept to within a tick and a watch costs its request no
thread switch. It only cuts sockets: it neither decides deadlines nor renders errors.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The least time between two rounds of firing: how late past its deadline a socket may be cut.
TICK = 0.05


class Watch:
    """One request's deadline, and the socket to cut when it passes."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.done = False
        self.fired = False
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self.sock = sock
            cut_now = self.fired
        if cut_now and sock is not None:
            _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sock = self.sock
        if sock is not None:
            _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self.sock = None


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to cut


class Watchdog:
    """One thread per process that fires watches in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._counter = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._local = threading.local()
        # When the thread next looks at the heap by itself (inf: only when notified), set under the
        # condition; a watch due earlier than that notifies it.
        self._sleeping_until = -math.inf

    def _ensure_thread(self) -> None:
        # gunicorn forks workers after loading the app: a thread started before the fork is not in
        # the child, so each process starts its own on first use.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._heap.clear()
            self._sleeping_until = -math.inf  # the new thread looks at the heap as soon as it runs
            self._thread = threading.Thread(target=self._run, name="upstream-deadlines", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due: list[Watch] = []
            with self._condition:
                while not self._heap:
                    self._sleeping_until = math.inf
                    self._condition.wait()
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._sleeping_until = self._heap[0][0]
                    self._condition.wait(self._heap[0][0] - now)
                    continue
                self._sleeping_until = now + TICK
            for watch in due:
                watch.fire()  # a finished watch fires as a no-op
            time.sleep(TICK)  # whatever falls due meanwhile waits for the next round

    @contextmanager
    def watch(self, deadline: float) -> Iterator[Watch]:
        """Watch ``deadline`` for the current thread's upstream request until the block ends."""
        watch = Watch(deadline)
        with self._condition:
            self._ensure_thread()
            heapq.heappush(self._heap, (deadline, next(self._counter), watch))
            if deadline < self._sleeping_until:  # else the watchdog wakes in time for it anyway
                self._sleeping_until = deadline
                self._condition.notify()
        previous = getattr(self._local, "watch", None)
        self._local.watch = watch
        try:
            yield watch
        finally:
            self._local.watch = previous
            watch.finish()  # left in the heap; a finished watch fires as a no-op

    def attach_current(self, sock: socket.socket | None) -> None:
        """Called by the connection about to wait for an answer: cut this socket at the deadline."""
        watch: Watch | None = getattr(self._local, "watch", None)
        if watch is not None:
            watch.attach(sock)


WATCHDOG = Watchdog()
