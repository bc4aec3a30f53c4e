"""gunicorn's threaded worker, taking its fair share of a burst of connections rather than all of it.

gunicorn's workers share one listening socket, and whichever worker is awake when a burst arrives
(a load balancer opening its pool, a benchmark's connections) can accept most of it: one worker then
serves them all on one core while the other idles, for as long as those connections live. With
``[server] fair_accept`` (on by default for ``gthread``), each worker publishes how many connections it
holds in a table of shared memory made before the workers fork, and defers an accept for at most
``MAX_DEFER`` while it holds more than the least loaded live worker, so that worker takes it instead.
A worker whose row has not been refreshed for ``STALE_AFTER`` counts as gone, so a dead or stuck
worker never stops the others from accepting. This uses gunicorn's documented extension point (a
worker class) and the threaded worker's ``accept`` and connection count; it changes no request.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

MAX_DEFER = 0.002  # seconds one connection may wait for a less loaded worker to take it
DEFER_STEP = 0.0005
STALE_AFTER = 5.0  # seconds without a heartbeat after which a worker's row is ignored
_ROW = struct.Struct("<qqd")  # pid, open connections, last heartbeat (monotonic seconds)


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


class FairThreadWorker(ThreadWorker):
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
