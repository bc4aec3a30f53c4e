"""Many requests at once: ``together(work, count)`` calls ``work(0) ... work(count - 1)`` on their own
threads, released by one barrier so they really overlap (``at_once=False``: as each thread starts,
which spreads new connections over a server's workers rather than bursting them), and returns once
every one has ended."""

from __future__ import annotations

import threading
from collections.abc import Callable


def together(work: Callable[[int], None], count: int, seconds: float = 20, at_once: bool = True) -> None:
    start = threading.Barrier(count)

    def run(index: int) -> None:
        if at_once:
            start.wait(seconds)
        work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds)
