"""Real Redis topologies on loopback for the tests: a Sentinel set (one master, one replica, three
sentinels) and a Cluster of three masters, from Debian's binaries, on free ports, in temporary
directories, with nothing persisted, and every process ended on exit.

Each is a context manager that is ready when ``with`` enters (the sentinels know the master, its
replica and each other; every cluster node reports ``cluster_state:ok``) and says how long that took
(``started_in``). ``RedisSentinelSet.failover()`` kills the master and returns once the sentinels have
promoted the replica, with the time that took. Tuned for tests, not for production: a master is
judged down after ``DOWN_AFTER_MS`` instead of 30 s. The helpers' own connections never retry
(redis-py's default retries with a backoff of seconds would hide the times they measure).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.redis_server import free_port

HOST = "127.0.0.1"
BINARIES = ("redis-server", "redis-sentinel", "redis-cli")
DOWN_AFTER_MS = 500  # how long a silent master takes to be judged down by a sentinel
FAILOVER_TIMEOUT_MS = 1000  # also half the wait before another try after a split vote
START_TIMEOUT = 20.0  # seconds; a set starts in about two to four
DEBIAN_PACKAGES = {"redis-server": "redis-server", "redis-sentinel": "redis-sentinel",
                   "redis-cli": "redis-tools"}


def find_binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)


def require_binaries() -> dict[str, str]:
    """The paths of redis-server, redis-sentinel and redis-cli; a failure under CI when one is missing
    (CI installs them all), a skip with the package to install otherwise."""
    found = {name: find_binary(name) for name in BINARIES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        packages = " ".join(sorted({DEBIAN_PACKAGES[name] for name in missing}))
        message = f"{', '.join(missing)} missing: apt-get install {packages}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run installs them)")
        pytest.skip(f"{message} (CI installs them)")
    return {name: str(path) for name, path in found.items()}


def control_client(port: int) -> redis.Redis:
    """A connection for the helpers' own questions: short timeouts, no retries."""
    return redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def wait_until(what: str, check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{what} within {timeout:g}s")


class _Processes:
    """The processes of one topology and its temporary directory, all gone after ``close()``."""

    def __init__(self, prefix: str) -> None:
        self.binaries = require_binaries()
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}  # by port

    def spawn(self, port: int, binary: str, *args: str) -> None:
        log = (self.workdir / f"{port}.log").open("wb")
        with log:
            process = subprocess.Popen([self.binaries[binary], *args], cwd=self.workdir,
                                       stdout=log, stderr=subprocess.STDOUT)
        self.processes[port] = process

    def server_args(self, port: int) -> list[str]:
        data = self.workdir / str(port)
        data.mkdir()
        # No persistence, and a replica's first sync starts at once (Redis 7 waits 5 s by default
        # for more replicas to share a diskless sync).
        return ["--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(data), "--protected-mode", "yes", "--repl-diskless-sync-delay", "0"]

    def alive(self, port: int) -> bool:
        process = self.processes[port]
        if process.poll() is not None:
            log = (self.workdir / f"{port}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis on port {port} exited with {process.returncode}:\n{log}")
        return True

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash: no shutdown, nothing said to replicas or sentinels."""
        process = self.processes[port]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes.values()]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class Failover:
    old_master: int  # port
    new_master: int
    killed_at: float  # time.monotonic() just before the SIGKILL
    dead_at: float  # time.monotonic() once the old master's process was reaped
    seconds: float  # from the kill until the sentinels name the new master and it says it is one


class _ProcessSet:
    """What a topology's life is: its processes started on entry (all stopped if one fails), stopped
    on exit; ``started_in`` says how long the start took."""

    _procs: _Processes
    started_in: float

    def _start(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return self._procs.pids()

    @property
    def workdir(self) -> Path:
        return self._procs.workdir

    def __enter__(self) -> Self:
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.started_in = time.monotonic() - started
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._procs.close()


class RedisSentinelSet(_ProcessSet):
    """One master, one replica and three sentinels (quorum 2), on loopback.

    ``sentinel_url`` is ``redis+sentinel://HOST:PORT,HOST:PORT,HOST:PORT/MASTERNAME/0``."""

    def __init__(self, master_name: str = "bridge-cache") -> None:
        self.master_name = master_name
        self._procs = _Processes("bridge-redis-sentinel-")
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.started_in = 0.0

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.sentinel_ports]

    @property
    def sentinel_url(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def _start(self) -> None:
        procs = self._procs
        procs.spawn(self.master_port, "redis-server", *procs.server_args(self.master_port))
        procs.spawn(self.replica_port, "redis-server", *procs.server_args(self.replica_port),
                    "--replicaof", HOST, str(self.master_port))
        # Sentinels find the replica in the master's INFO, asked when they connect and then only
        # every 10 s: the replica is linked before they start.
        with control_client(self.replica_port) as replica:
            wait_until("the replica did not link to its master",
                       lambda: procs.alive(self.replica_port) and procs.alive(self.master_port)
                       and replica.info("replication")["master_link_status"] == "up")
        for port in self.sentinel_ports:
            config = self.workdir / f"sentinel-{port}.conf"  # a sentinel rewrites its own file
            config.write_text(
                f"port {port}\nbind {HOST}\ndir {self.workdir}\n"
                f"sentinel monitor {self.master_name} {HOST} {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            procs.spawn(port, "redis-sentinel", str(config))
        for port in self.sentinel_ports:
            with control_client(port) as sentinel:
                def knows_all(sentinel: redis.Redis = sentinel, port: int = port) -> bool:
                    state = sentinel.sentinel_master(self.master_name)
                    return (procs.alive(port) and state["flags"] == "master"
                            and state["num-slaves"] == 1 and state["num-other-sentinels"] == 2)
                # Sentinels learn of each other from hello messages sent every 2 s.
                wait_until(f"sentinel {port} did not see the master, its replica and two sentinels",
                           knows_all)

    def master_address(self) -> tuple[str, int]:
        """The master as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with control_client(port) as sentinel:
                    host, master = sentinel.sentinel_get_master_addr_by_name(self.master_name)
                    return str(host), int(master)
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no sentinel answers")

    def failover(self, timeout: float = 30.0) -> Failover:
        """Kill the master's process and wait until every sentinel names the replica as master and
        the replica has taken the role."""
        old, new = self.master_port, self.replica_port
        killed = time.monotonic()
        self._procs.kill(old)
        dead = time.monotonic()

        def promoted() -> bool:
            for port in self.sentinel_ports:
                with control_client(port) as sentinel:
                    if int(sentinel.sentinel_get_master_addr_by_name(self.master_name)[1]) != new:
                        return False
            with control_client(new) as replica:
                return bool(replica.info("replication")["role"] == "master")

        wait_until(f"the sentinels did not promote the replica on port {new}", promoted, timeout)
        self.master_port, self.replica_port = new, old
        return Failover(old, new, killed, dead, time.monotonic() - killed)



class RedisClusterSet(_ProcessSet):
    """Three masters, no replicas, every hash slot assigned, on loopback.

    ``cluster_url`` is ``redis+cluster://HOST:PORT,HOST:PORT,HOST:PORT``."""

    def __init__(self, node_timeout_ms: int = 2000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self._procs = _Processes("bridge-redis-cluster-")
        self.ports = [free_port() for _ in range(3)]
        # The cluster bus has a port of its own (by default PORT + 10000, which may be taken).
        self.bus_ports = [free_port() for _ in range(3)]
        self.started_in = 0.0

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]

    @property
    def cluster_url(self) -> str:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    def _start(self) -> None:
        procs = self._procs
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            procs.spawn(port, "redis-server", *procs.server_args(port), "--cluster-enabled", "yes",
                        "--cluster-port", str(bus),
                        "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                        "--cluster-node-timeout", str(self.node_timeout_ms))
        for port in self.ports:
            with control_client(port) as node:
                wait_until(f"cluster node {port} did not answer",
                           lambda node=node, port=port: procs.alive(port) and bool(node.ping()))
        create = subprocess.run(
            [procs.binaries["redis-cli"], "--cluster", "create",
             *(f"{host}:{port}" for host, port in self.nodes), "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=START_TIMEOUT)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
        for port in self.ports:
            with control_client(port) as node:
                def ready(node: redis.Redis = node) -> bool:
                    info = node.cluster("INFO")
                    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == 3
                                and int(info["cluster_slots_assigned"]) == 16384)
                wait_until(f"cluster node {port} did not report cluster_state:ok", ready)

