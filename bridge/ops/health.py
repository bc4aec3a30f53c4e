"""``/healthz``: is the bridge ready, and can it reach its upstreams and its Redis, without hammering them.

The bridge itself is ready when it can answer at all, so ``/healthz`` is 200 whenever it answers; what
it cannot reach is named in the JSON (``status: degraded``, ``unreachable: [...]``) for a person or a
dashboard to act on, rather than turned into a 503 that would make a load balancer pull a bridge that
can still serve cached answers. Reachability is a TCP connect to the upstream's host and port (no HTTP
request: nothing to authenticate, nothing for the upstream's own rate limits to count), to an address
the upstream's own address guard (``netguard.AddressGuard``) accepts, so a probe goes nowhere a request
could not; at most once
per ``PROBE_INTERVAL`` per host and port however often ``/healthz`` is polled and by however many
threads. The cache reports its own health (``Cache.health``: a Redis ping, which the Redis store already
paces while Redis is down; while it is up a ping is cheaper than this request). Probes are made on demand
by the request that finds the last one too old, not by a background thread. This module reports; it
never changes how requests are served.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import UpstreamConfig
from ..errors import BridgeError
from ..upstream.netguard import AddressGuard, Resolver, system_resolver

PROBE_INTERVAL = 10.0  # seconds between two probes of one host and port
PROBE_TIMEOUT = 1.0  # seconds a TCP connect may take before the target counts as unreachable

Clock = Callable[[], float]
Target = tuple[str, int, bool]  # host, port, allow_private
Connect = Callable[[str, int, float], str | None]  # host, port, timeout -> None, or why it failed


def tcp_connect(host: str, port: int, timeout: float) -> str | None:
    """Open and close one TCP connection; None when it worked, else a short reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except socket.gaierror:
        return "the host name does not resolve"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def probe_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


@dataclass(frozen=True)
class Probe:
    reachable: bool
    checked_at: float
    reason: str | None = None


class Health:
    def __init__(self, upstreams: Mapping[str, UpstreamConfig], cache_health: Callable[[], dict[str, Any]]
                 | None = None, *, clock: Clock = time.monotonic, connect: Connect = tcp_connect,
                 resolver: Resolver | None = None, interval: float = PROBE_INTERVAL,
                 timeout: float = PROBE_TIMEOUT) -> None:
        # Keyed by host, port and allow_private: two upstreams on one host share a probe unless
        # their address guards differ.
        self._targets = {name: (*probe_target(u.url), u.allow_private) for name, u in upstreams.items()}
        self._resolver = resolver or system_resolver
        self._cache_health = cache_health
        self._clock = clock
        self._connect = connect
        self._interval = interval
        self._timeout = timeout
        self._probes: dict[Target, Probe] = {}
        self._probing: dict[Target, threading.Lock] = {
            target: threading.Lock() for target in set(self._targets.values())}

    def _due(self, target: Target, now: float) -> bool:
        last = self._probes.get(target)
        return last is None or now - last.checked_at >= self._interval

    def _probe(self, target: Target) -> None:
        lock = self._probing[target]
        if not lock.acquire(blocking=False):
            return  # another request is probing it right now: its result will do
        try:
            if self._due(target, self._clock()):
                host, port, allow_private = target
                try:
                    address = AddressGuard("health", allow_private, self._resolver).addresses(host, port)[0]
                except BridgeError as exc:
                    reason: str | None = exc.message.replace("'health'", host)
                else:
                    reason = self._connect(address, port, self._timeout)
                self._probes[target] = Probe(reason is None, self._clock(), reason)
        finally:
            lock.release()

    def report(self) -> dict[str, Any]:
        now = self._clock()
        due = [t for t in set(self._targets.values()) if self._due(t, now)]
        if len(due) == 1:
            self._probe(due[0])
        elif due:  # in parallel: a report waits for one probe timeout, not one per target
            with ThreadPoolExecutor(max_workers=min(len(due), 8)) as pool:
                list(pool.map(self._probe, due))
        now = self._clock()
        upstreams: dict[str, Any] = {}
        unreachable = []
        for name, target in sorted(self._targets.items()):
            probe = self._probes.get(target)
            if probe is None:  # someone else's probe of it is still under way
                upstreams[name] = {"reachable": None}
                continue
            upstreams[name] = {"reachable": probe.reachable, "checked_ago": round(now - probe.checked_at, 1)}
            if not probe.reachable:
                upstreams[name]["reason"] = probe.reason
                unreachable.append(name)
        body: dict[str, Any] = {"status": "ok", "upstreams": upstreams, "unreachable": unreachable}
        cache = self._cache_health() if self._cache_health is not None else None
        if cache is not None:
            body["cache"] = cache
            if cache.get("redis") == "down":
                unreachable.append("redis")
        if unreachable:
            body["status"] = "degraded"
        return body
