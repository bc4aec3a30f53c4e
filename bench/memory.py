"""Resident memory of a bridge process after its cache has seen N distinct keys, against ``max_bytes``.

``python bench/memory.py --config BENCH_INI --keys 100000`` builds the app from the bench INI (the
``hit`` upstream: nginx on loopback) and sends N distinct GETs (``data.json?k=I``) through the real
gateway: real upstream answers, real keys, entries, byte accounting and evictions, without the HTTP
server in front (which only adds time, not cached memory). It prints the process's RSS before and
after, the cache's own count of entries and bytes, and the evictions, as one JSON line. Run in a fresh
process by ``bench/run.py --keys N``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import create_app  # noqa: E402
from bridge.config import load_config  # noqa: E402
from bridge.upstream.message import UpstreamRequest  # noqa: E402


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    config = load_config(args.config)
    app = create_app(config)
    gateway = app.extensions["bridge.gateway"]
    cache = app.extensions["bridge.cache"]
    upstream = config.upstreams["hit"]
    headers = (("Accept", "application/json"), *upstream.headers)  # as proxy/forward.py sends them

    def fetch(index: int) -> None:
        gateway.fetch(UpstreamRequest(upstream, "GET", "data.json", f"k={index}", headers))

    fetch(-1)  # connections, lazy imports, first allocations
    gc.collect()
    before = rss_bytes()
    started = time.monotonic()
    for index in range(args.keys):
        fetch(index)
    seconds = time.monotonic() - started
    gc.collect()
    after = rss_bytes()
    metrics = app.extensions["bridge.metrics"].registry
    print(json.dumps({
        "keys": args.keys, "max_bytes": config.cache.max_bytes, "rss_before": before, "rss_after": after,
        "growth": after - before, "fill_seconds": round(seconds, 1), "cache": cache.health(),
        "evictions": metrics.get_sample_value("bridge_cache_events_total", {"event": "eviction"}),
    }))


if __name__ == "__main__":
    main()
