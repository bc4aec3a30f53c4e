"""Run a function in a forked child, as gunicorn runs a worker, and read back what it returns."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable


def in_forked_child(work: Callable[[], bytes], seconds: float = 30) -> bytes:
    """``work()`` run in a child forked from this process; its bytes, or AssertionError when the child
    gives nothing within ``seconds`` (a lock another thread held at the fork would hang it forever)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, work())
        finally:
            os._exit(0)
    os.close(write)
    try:
        chunks: list[bytes] = []
        while True:
            ready, _, _ = select.select([read], [], [], seconds)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the forked child gave no answer within {seconds}s")
            chunk = os.read(read, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
