"""The memory store stays within ``max_bytes``: accounted bytes, real allocations and process RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from bridge.cache import MemoryStore
from bridge.cache.entry import new_entry
from bridge.upstream.message import UpstreamResponse

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def response(index: int, size: int = 200) -> UpstreamResponse:
    # Fresh strings per answer, as parsing an upstream's headers gives.
    return UpstreamResponse(200, tuple((f"{name}", f"{value}{index}") for name, value in (
        ("Content-Type", "application/json; v="), ("ETag", '"'), ("Date", "Sun, 22 Nov 2026 "))),
        json.dumps({"id": index, "pad": "y" * size}).encode())


def test_hundred_thousand_keys_stay_within_max_bytes() -> None:
    """In a fresh process, so the RSS is this fill's alone. Unbounded, the same fill grows RSS by
    about 110 MB (README, "Cache")."""
    max_bytes = 8 * MIB
    result = subprocess.run([sys.executable, "-m", "tests.memory_probe", "--keys", "100000",
                             "--max-bytes", str(max_bytes)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["peak_accounted_bytes"] <= max_bytes
    assert report["accounted_bytes"] <= max_bytes
    assert 0 < report["entries"] < 100_000
    assert report["evictions"] == 100_000 - report["entries"]
    assert report["rss_growth_bytes"] <= max_bytes * 1.25


def test_accounted_bytes_cover_what_the_entries_really_allocate() -> None:
    store = MemoryStore(64 * MIB)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(5000):
            key = f"{index:040x}"
            store.put(key, new_entry(key, response(index), 0.0, 60), 60)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.health()["entries"] == 5000
    assert allocated <= store.health()["bytes"] <= allocated * 2


def test_least_recently_used_entries_go_first() -> None:
    events: list[str] = []
    probe = new_entry("k" * 40, response(0), 0.0, 60)
    store = MemoryStore(probe.size * 3 + 10, on_event=events.append)
    for key in ("a", "b", "c"):
        store.put(key * 40, new_entry(key * 40, response(0), 0.0, 60), 60)
    assert store.get("a" * 40) is not None  # a is now the most recently used
    store.put("d" * 40, new_entry("d" * 40, response(0), 0.0, 60), 60)
    assert store.get("b" * 40) is None
    assert all(store.get(k * 40) is not None for k in "acd")
    assert events == ["eviction"]


def test_an_entry_larger_than_the_cache_is_not_stored() -> None:
    store = MemoryStore(1000)
    store.put("big", new_entry("big", response(0, size=5000), 0.0, 60), 60)
    assert store.get("big") is None and store.health()["bytes"] == 0


def test_the_script_json_is_accounted_once_made() -> None:
    store = MemoryStore(64 * MIB)
    entry = new_entry("k", response(0), 0.0, 60)
    store.put("k", entry, 60)
    before = store.health()["bytes"]
    entry.script_json_of(lambda body: body.decode(), lambda text: store.put("k", entry, 60, replacing=entry))
    assert store.health()["bytes"] > before + len(entry.response.body)


def test_an_entry_written_again_is_never_revived_nor_put_over_another() -> None:
    store = MemoryStore(64 * MIB)
    first, second = new_entry("k", response(0), 0.0, 60), new_entry("k", response(1), 1.0, 60)
    store.put("k", first, 60)
    store.put("k", second, 60)  # replaced meanwhile (a refresh)
    store.put("k", first, 60, replacing=first)
    assert store.get("k") is second
    store.delete("k")  # or deleted (a purge, a no-store)
    store.put("k", second, 60, replacing=second)
    assert store.get("k") is None
