"""Prometheus metrics: what the bridge served, how its cache and upstreams behaved, at ``GET /metrics``.

``BridgeMetrics`` owns one private registry per app (so the tests can build many apps) and is fed by
three seams, never by the views: access records from ``observe`` (requests by path kind, upstream and
status; refusals; rate limits), upstream exchanges from ``UpstreamClient.observers`` (latency), and
the cache's listeners (hit, miss, stale, eviction and the rest of ``cache.EVENTS``). Under gunicorn
with several workers each worker counts into its own files in ``PROMETHEUS_MULTIPROC_DIR`` (``app.py``
makes a fresh one and marks dead workers) and ``/metrics`` adds them up, so any worker answers for all
of them. There, a counter's increment takes a lock and writes its file, so each thread of a worker
tallies its counts in memory, without a lock, and the worker adds what the tallies gained to the
files every ``FLUSH_EVERY`` (and before it answers ``/metrics``, and at exit): a scrape sees another
worker's requests at most that late. Labels only ever carry configured
upstream names and the bridge's own codes, never a client-chosen string, so a client cannot grow the
number of series. This module counts; it does not decide, log or alert.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..cache import EVENTS as CACHE_EVENTS
from ..upstream.client import Exchange
from . import process
from .access import AccessRecord

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_EVERY = 1.0  # seconds a worker's increments wait, at most, before its counter files hold them
# Loopback upstreams answer in about a millisecond, public APIs in tens to hundreds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

class BridgeMetrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter("bridge_requests", "Requests answered, by path kind, upstream and status",
                                ["kind", "upstream", "status"], registry=self.registry)
        self.refused = Counter("bridge_refused", "Requests the bridge refused, by path kind and error code",
                               ["kind", "code"], registry=self.registry)
        self.rate_limited = Counter("bridge_rate_limited", "Requests refused with 429 by the rate limits",
                                    ["kind", "upstream"], registry=self.registry)
        self.cache_events = Counter("bridge_cache_events", "Cache lookups and evictions, by event",
                                    ["event"], registry=self.registry)
        self.upstream_latency = Histogram("bridge_upstream_latency_seconds",
                                          "Time from sending to an upstream to its whole answer",
                                          ["upstream", "outcome"], buckets=LATENCY_BUCKETS,
                                          registry=self.registry)
        # The children by label values, bound once: ``labels()`` validates and locks on every call,
        # which was a visible part of a cache hit. Every label value is bounded (see above), so are these.
        self._request_children: dict[tuple[str, str, int], Any] = {}
        # Present at zero from the start, so rate() works at once.
        self._event_children = {event: self.cache_events.labels(event) for event in CACHE_EVENTS}
        # Multiprocess mode: each thread tallies its own counts (only it writes its tally, so no
        # lock), and ``flush`` adds to the files what each tally gained since the last flush.
        # Each tally beside what of it the files already hold.
        self._tallies: list[tuple[dict[Any, int], dict[Any, int]]] | None = \
            [] if multiprocess_dir is not None else None
        self._local = threading.local()
        self._tally_pid = process.pid
        self._lock = threading.Lock()  # new tallies, flushes; never taken by a count
        if self._tallies is not None:
            atexit.register(self.flush)

    def _inc(self, child: Any) -> None:
        if self._tallies is None:
            child.inc()
            return
        if self._tally_pid != process.pid:
            self._drop_the_parents_tallies()
        try:
            tally: dict[Any, int] = self._local.tally
        except AttributeError:
            tally = self._new_tally()
        tally[child] = tally.get(child, 0) + 1

    def _new_tally(self) -> dict[Any, int]:
        tally: dict[Any, int] = {}
        with self._lock:
            assert self._tallies is not None
            first = not self._tallies
            self._tallies.append((tally, {}))
        self._local.tally = tally
        if first:  # the first count of this process: its flusher starts
            threading.Thread(target=self._flush_often, args=(process.pid,), name="metrics",
                             daemon=True).start()
        return tally

    def _drop_the_parents_tallies(self) -> None:
        """In a child forked after counting (gunicorn forks before): the tallies are the parent's."""
        with self._lock:
            if self._tally_pid != process.pid:
                self._tallies = []
                self._local = threading.local()
                self._tally_pid = process.pid

    def _flush_often(self, pid: int) -> None:
        while self._tally_pid == pid:
            time.sleep(FLUSH_EVERY)
            try:
                self.flush()
            except Exception:  # a full disk, say: the counts wait for the next turn
                log.exception("metrics: could not add this worker's counts to its files")

    def flush(self) -> None:
        """Add to this process's counter files what every thread counted since the last flush."""
        if self._tallies is None:
            return
        with self._lock:
            for tally, flushed in self._tallies:
                for child, total in list(tally.items()):  # one step: its thread may add a child
                    amount = total - flushed.get(child, 0)
                    if amount:
                        child.inc(amount)
                        flushed[child] = total

    def record_access(self, record: AccessRecord) -> None:
        key = (record.kind, record.upstream, record.status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(record.kind, record.upstream,
                                                                        str(record.status))
        self._inc(child)
        if record.status == 429:
            self._inc(self.rate_limited.labels(record.kind, record.upstream))
        if record.error:
            self._inc(self.refused.labels(record.kind, record.error))

    def record_exchange(self, exchange: Exchange) -> None:
        outcome = str(exchange.status) if exchange.status is not None else exchange.error
        self.upstream_latency.labels(exchange.upstream, outcome).observe(exchange.seconds)

    def cache_event(self, name: str) -> None:
        """The cache's event hook (``cache.EVENTS``: hit, miss, stale, eviction, ...); others ignored."""
        child = self._event_children.get(name)
        if child is not None:
            self._inc(child)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.flush()
        # Every worker's files, summed: a scrape reaching any one worker sees the whole server.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def install(app: Flask) -> BridgeMetrics:
    """Create the app's metrics, feed them from the access log and the upstream client, serve them."""
    metrics = BridgeMetrics(os.environ.get(MULTIPROC_ENV) or None)
    app.extensions["bridge.metrics"] = metrics
    app.extensions["bridge.access_recorder"].listeners.append(metrics.record_access)
    app.extensions["bridge.gateway"].client.observers.append(metrics.record_exchange)
    cache = app.extensions.get("bridge.cache")
    if cache is not None:
        # Beside, not instead of, a hook handed in with the cache (the tests' event list).
        cache.listen(metrics.cache_event)

    def serve_metrics() -> Response:
        return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", "metrics", serve_metrics, methods=["GET"])
    return metrics
