"""The shared budget table: exact across forked workers, never stuck behind a worker that died."""

from __future__ import annotations

import os
import signal
import threading
import time

from bridge.ops.ratelimit import LOCK_PATIENCE, PROBES, SharedCounters
from tests.forking import in_forked_child

KEY = "LIMITER/jsonp-cors-bridge/client/192.0.2.1/5/1/minute"


def test_counts_from_forked_workers_add_up_exactly() -> None:
    counters = SharedCounters()

    def worker() -> bytes:
        for _ in range(2000):
            counters.incr(KEY, 60)
        return b"done"

    pids = []
    for _ in range(2):  # two children and this process count at once
        pid = os.fork()
        if pid == 0:
            try:
                worker()
            finally:
                os._exit(0)
        pids.append(pid)
    worker()
    for pid in pids:
        os.waitpid(pid, 0)
    assert counters.get(KEY) == 6000


def test_a_worker_killed_holding_the_lock_stops_nobody() -> None:
    counters = SharedCounters()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # takes the lock, says so, and is killed before it lets go
        counters._lock()
        os.write(write, b"held")
        time.sleep(60)
        os._exit(0)
    assert os.read(read, 4) == b"held"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    counted: list[int] = []
    waiter = threading.Thread(target=lambda: counted.append(counters.incr(KEY, 60)), daemon=True)
    waiter.start()
    waiter.join(LOCK_PATIENCE * 6)
    assert counted == [1], "the count waited for a dead worker's lock"
    assert counters.incr(KEY, 60) == 2  # and the lock works as a lock again


def test_windows_end_and_a_crowded_neighbourhood_reuses_the_oldest_window() -> None:
    counters = SharedCounters(slots=PROBES)  # every key shares one neighbourhood
    assert counters.incr("short", 1) == 1
    assert counters.get_expiry("short") <= time.time() + 1
    for index in range(PROBES - 1):
        counters.incr(f"long-{index}", 60)
    counters.incr("newcomer", 60)  # the table is full: the window that ends first makes room
    assert counters.get("newcomer") == 1 and counters.get("short") == 0
    assert all(counters.get(f"long-{index}") == 1 for index in range(PROBES - 1))


def test_a_forked_child_counts_into_the_parents_table() -> None:
    counters = SharedCounters()
    counters.incr(KEY, 60)
    assert in_forked_child(lambda: str(counters.incr(KEY, 60)).encode()) == b"2"
    assert counters.get(KEY) == 2
