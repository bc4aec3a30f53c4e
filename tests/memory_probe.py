"""Fill a MemoryStore with many distinct keys and report its accounted bytes and the process's memory.

Run in a fresh process (``python -m tests.memory_probe --keys 100000 --max-bytes 8388608``) so the RSS
it reports belongs to this fill alone; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import tracemalloc

from bridge.cache import MemoryStore
from bridge.cache.entry import new_entry
from bridge.cache.key import primary_key, variant_key
from bridge.upstream.message import UpstreamResponse


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--max-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--body", type=int, default=300, help="bytes of JSON per answer")
    parser.add_argument("--trace", action="store_true",
                        help="also measure with tracemalloc (which costs memory of its own)")
    args = parser.parse_args()

    evictions = 0

    def on_event(name: str) -> None:
        nonlocal evictions
        evictions += name == "eviction"

    store = MemoryStore(args.max_bytes, on_event=on_event)
    padding = "x" * max(0, args.body - 40)
    rss_before = rss_bytes()
    if args.trace:
        tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    peak_accounted = 0
    for index in range(args.keys):
        key = variant_key(primary_key("api", f"items/{index}", (("page", str(index)),)), (),
                          (("Accept", "*/*"),))
        body = json.dumps({"id": index, "pad": padding}).encode()
        response = UpstreamResponse(200, (
            ("Content-Type", "application/json"), ("ETag", f'"{index:x}"'),
            ("Cache-Control", "max-age=60"), ("Date", "Sun, 22 Nov 2026 03:00:00 GMT"),
        ), body)
        store.put(key, new_entry(key, response, 0.0, 60), 3600)
        if index % 1000 == 0:
            peak_accounted = max(peak_accounted, store.health()["bytes"])
    traced = tracemalloc.get_traced_memory()[0] - traced_before if args.trace else None
    tracemalloc.stop()
    print(json.dumps({
        "keys": args.keys, "max_bytes": args.max_bytes, "entries": store.health()["entries"],
        "accounted_bytes": store.health()["bytes"], "peak_accounted_bytes": peak_accounted,
        "traced_bytes": traced, "evictions": evictions,
        "rss_growth_bytes": rss_bytes() - rss_before,
    }))


if __name__ == "__main__":
    main()
