"""One upstream request per cold key across the worker processes of one bridge (memory store).

Each gunicorn worker has a memory store of its own, so without this a herd for one cold key asks the
upstream once per worker. ``WorkerHandoff`` gives the workers what Redis gives instances: a lock per
key (``flock`` on one of ``STRIPES`` files in a directory made before the workers fork) and a place
where the holder leaves what it fetched (that stripe's file, written whole, then renamed); a worker
that found the lock taken waits and takes the entry from there. ``herd.LocalLocks`` drives it. It
does not hand over an entry over ``MAX_SHARED`` bytes or one stored under a ``Vary`` key (the others
fetch their own: one request per worker at most), and two keys that share a stripe wait for each
other; only the process that made the directory removes it, at exit.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import weakref

STRIPES = 1024
MAX_SHARED = 256 * 1024  # bytes of one handed-over entry; at most STRIPES x this on disk


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # workers inherit this finaliser; only the maker removes the directory
        shutil.rmtree(path, ignore_errors=True)


class WorkerHandoff:
    def __init__(self, directory: str | None = None) -> None:
        self.path = directory or tempfile.mkdtemp(prefix="jsonp-cors-bridge-handoff-")
        self._finalizer = weakref.finalize(self, _remove, self.path, os.getpid())
        self._held: dict[str, int] = {}  # key -> the fd whose flock this process holds
        self._lock = threading.Lock()

    def _stripe(self, key: str) -> str:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return os.path.join(self.path, str(int.from_bytes(digest, "big") % STRIPES))

    def _try_lock(self, key: str) -> int | None:
        """The fd holding the key's lock, or None when another process holds it. Any other failure
        (the directory gone, no descriptors left) raises OSError."""
        fd = os.open(self._stripe(key) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd

    def acquire(self, key: str) -> bool:
        """Take the key's lock if no other process holds it; False when one does. On an error this
        worker goes ahead without the lock (it asks the upstream itself, as without a handoff)."""
        try:
            fd = self._try_lock(key)
        except OSError:
            return True
        if fd is None:
            return False
        with self._lock:
            previous = self._held.pop(key, None)
            self._held[key] = fd
        if previous is not None:
            os.close(previous)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            fd = self._held.pop(key, None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file releases its flock

    def locked(self, key: str) -> bool:
        """Whether another process holds the key's lock now."""
        try:
            fd = self._try_lock(key)
        except OSError:
            return False
        if fd is None:
            return True
        os.close(fd)
        return False

    def holds(self, key: str) -> bool:
        """Whether this process holds ``key``'s lock (only then is what it stores handed over)."""
        with self._lock:
            return key in self._held

    def publish(self, key: str, data: bytes) -> None:
        """Leave ``data`` (an entry) for the workers waiting on ``key``, if this process holds its
        lock and it is small enough to hand over."""
        if not self.holds(key) or len(data) > MAX_SHARED:
            return
        stripe = self._stripe(key)
        encoded_key = key.encode("utf-8", "surrogatepass")
        temporary = f"{stripe}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(len(encoded_key).to_bytes(4, "big") + encoded_key + data)
            os.replace(temporary, stripe + ".entry")
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def withdraw(self, key: str) -> None:
        """Take back what was left for ``key`` (the store deleted its entry: an upstream said it may
        no longer be kept). Racing a publish for another key of the stripe costs that one a handoff."""
        if self.collect(key) is not None:
            try:
                os.unlink(self._stripe(key) + ".entry")
            except OSError:
                pass

    def collect(self, key: str) -> bytes | None:
        """What the holder of ``key``'s lock left for it, or None (nothing, or another key's)."""
        try:
            with open(self._stripe(key) + ".entry", "rb") as file:
                content = file.read(MAX_SHARED + 4 + 4 * len(key) + 16)
        except OSError:
            return None
        size = int.from_bytes(content[:4], "big")
        if content[4:4 + size] != key.encode("utf-8", "surrogatepass"):
            return None
        return content[4 + size:]
