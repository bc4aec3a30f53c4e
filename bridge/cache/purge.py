"""What a purge drops, and how it reaches every worker of a bridge that keeps entries in memory.

A ``Scope`` names entries by what was forwarded (an upstream; a path, a path prefix or one url below
it) or by a tag the upstream gave (``Surrogate-Key`` / ``Cache-Tag``), and says whether one entry,
by its ``address`` and ``tags``, is in it. ``PurgeLog`` is a ring of purge records in memory shared by
the processes forked after it is made (gunicorn's workers): a purge is written once, and every
worker reads the records it has not applied yet before it looks anything up (one 8-byte read when
there are none), so an entry dropped in one worker is dropped in all. ``InvalidationTable`` is how
the workers learn of the urls an unsafe request invalidated: a time per url, read on each hit, which
no flood of requests can overflow. With Redis the entries are shared and deleted there; the log and
the table are for the memory store. No I/O beyond the shared memory.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import threading
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache

# An entry's address: the upstream's name, the path and the query as forwarded.
Address = tuple[str, str, str]

RECORDS = 256  # purges kept in the ring; a worker further behind than this drops all it holds
RECORD_BYTES = 1024
_HEAD_SIZE = 8  # the sequence number of the last record written, an unsigned 64-bit integer
_RECORD = struct.Struct("<QdH")  # its sequence number, time, length of its JSON


@dataclass(frozen=True)
class Scope:
    """Entries of ``api`` (all, or those at ``path``, or below ``prefix``; with ``query``, that one
    url), or, with ``tag``, every entry the upstream tagged so."""

    api: str | None = None
    path: str | None = None
    prefix: str | None = None
    query: str | None = None
    tag: str | None = None

    def matches(self, address: Address, tags: tuple[str, ...]) -> bool:
        api, path, query = address
        if self == EVERYTHING:
            return True
        if self.tag is not None:
            return self.tag in tags and (self.api is None or self.api == api)
        if self.api != api:
            return False
        if self.path is not None:
            return self.path == path and (self.query is None or self.query == query)
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return True

    def described(self) -> dict[str, str]:
        """The scope as the purge answer names it: only what was given."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def to_bytes(self) -> bytes:
        return json.dumps(self.described(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Scope:
        return cls(**{str(k): str(v) for k, v in json.loads(data).items()})


EVERYTHING = Scope()  # what a worker drops when it fell too far behind the log


INVALIDATION_SLOTS = 65536  # 512 KiB of shared memory; two urls in one slot cost each an extra miss
_STAMP_SIZE = 8  # a double


@lru_cache(maxsize=4096)
def _slot(address: Address, slots: int) -> int:
    digest = hashlib.blake2b("\0".join(address).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % slots


class InvalidationTable:
    """When each url (an entry's address) was last invalidated by a successful unsafe request, in
    memory shared by the workers forked after it is made: one timestamp per hashed slot, written
    without a lock (a write of 8 aligned bytes, and a lost race only keeps the later time or the
    earlier; either makes entries stored before it miss). Unlike the purge log it cannot overflow,
    so no number of POSTs can make a worker drop what it holds for other urls."""

    def __init__(self, slots: int = INVALIDATION_SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _STAMP_SIZE)
        # The times as doubles, read and written in place (one index, no struct per hit).
        self._stamps = memoryview(self._map).cast("d")

    def mark(self, address: Address, at: float) -> None:
        slot = _slot(address, self.slots)
        if self._stamps[slot] < at:
            self._stamps[slot] = at

    def slot(self, address: Address) -> int:
        """Where the table keeps ``address``'s time: an entry remembers it, so a hit hashes nothing."""
        return _slot(address, self.slots)

    def invalidated_at(self, address: Address) -> float:
        return self.at(self.slot(address))

    def at(self, slot: int) -> float:
        stamp: float = self._stamps[slot]
        return stamp


class PurgeLog:
    """Purge records in anonymous shared memory, made before the workers fork.

    ``write`` appends a record under a lock shared by the processes (a POSIX record lock on a file
    made with the log); ``since`` returns the records after a sequence number, or None when the
    ring has already overwritten some of them (the reader then drops everything it holds).
    """

    def __init__(self, records: int = RECORDS) -> None:
        self.records = records
        self._map = mmap.mmap(-1, _HEAD_SIZE + records * RECORD_BYTES)
        self._head = memoryview(self._map)[:_HEAD_SIZE].cast("Q")  # read on every lookup
        # The threads of one process take this lock; the processes, a POSIX record lock on an
        # unlinked file (per process, unlike flock, whose lock a forked child would share).
        self._lock = threading.Lock()
        fd, path = tempfile.mkstemp(prefix="bridge-purge-")
        os.unlink(path)
        self._lock_fd = fd
        weakref.finalize(self, os.close, fd)

    def head(self) -> int:
        sequence: int = self._head[0]
        return sequence

    def write(self, scope: Scope, at: float) -> int:
        import fcntl

        data = scope.to_bytes()[:RECORD_BYTES - _RECORD.size]
        with self._lock:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
            try:
                sequence = self.head() + 1
                offset = _HEAD_SIZE + (sequence % self.records) * RECORD_BYTES
                _RECORD.pack_into(self._map, offset, sequence, at, len(data))
                self._map[offset + _RECORD.size:offset + _RECORD.size + len(data)] = data
                self._head[0] = sequence
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
        return sequence

    def since(self, seen: int) -> list[tuple[int, float, Scope]] | None:
        head = self.head()
        if head - seen > self.records:
            return None
        found = []
        for sequence in range(seen + 1, head + 1):
            offset = _HEAD_SIZE + (sequence % self.records) * RECORD_BYTES
            written, at, length = _RECORD.unpack_from(self._map, offset)
            if written != sequence:
                return None  # overwritten while we read: too far behind
            data = bytes(self._map[offset + _RECORD.size:offset + _RECORD.size + length])
            try:
                found.append((sequence, at, Scope.from_bytes(data)))
            except (ValueError, TypeError):
                return None
        return found
