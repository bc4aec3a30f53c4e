"""This process's id, kept up to date across forks, read without a system call.

gunicorn forks its workers from a master that has already imported the bridge; whatever a worker
keeps per process (the metrics' tallies, the access log's writer, the rate table lock's holder)
compares its own record with ``pid`` to find out whether it was made in this process or inherited.
"""

from __future__ import annotations

import os

pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
