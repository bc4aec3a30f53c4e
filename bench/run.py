"""``make bench``: the bridge measured side by side with its floors and with cors-anywhere, in one run.

Starts, all on loopback: nginx serving a ~2 KB JSON file (the upstream), the bridge under gunicorn as
``app.py`` runs it (a bench INI built from ``wsgi.ini``: the same [server] settings as shipped, [cors]
and [cache]; one upstream ``hit`` with the default ttl, one ``miss`` with ``ttl = 0``), the same bridge
with a per-client rate limit that is counted on every request and never reached, the two floors
(``floor.py``: bare Flask, and a raw WSGI callable) under the same gunicorn settings, and cors-anywhere
proxying the same file. wrk drives each target for a few seconds per round, the targets interleaved and
rotated every round, and the medians over rounds are compared as ratios against the goals. Each round
also records how wrk's connections sat on the gunicorn workers, and the report says how much of the
rounds' spread in throughput that explains. Two targets spread over 16 keys compare hits on entries
that keep going stale (upstream ``swr``: ttl 1 s, served stale while one background refresh renews
them) with hits on entries that stay fresh, and nginx's access log says how often each stale key
reached the upstream. Then a herd of concurrent cold requests (counted in nginx's
access log) and, with ``--keys``, resident memory after filling the cache with that many keys. Results
go to ``bench/results/`` as JSON and text. Nothing here is imported by the bridge.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
ORIGIN = "http://bench.example"
HEADERS = {"Origin": ORIGIN}
FIXED_OVERHEAD_MIB = 16
# The targets served by gunicorn with several workers (their connection spread matters).
GUNICORN_TARGETS = frozenset({"floor", "raw-floor", "cors-hit", "jsonp-hit", "cors-miss", "jsonp-miss",
                              "cors-hit-limited", "jsonp-hit-limited", "cors-swr", "cors-fresh"})
# Stale-while-revalidate: the swr upstream's lifetime, and the keys both of its targets rotate over.
SWR_TTL = 1
SWR_KEYS = 16
# A per-client limit that one client never reaches in a bench run, so every request is counted.
UNREACHED_LIMIT = "1000000000/minute"


# --- processes ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Procs:
    """Every process the bench starts, stopped (by its own pid, whole process group) at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        # A process group of its own (stopped with killpg), in the bench's own session: a new session
        # is a new scheduler autogroup on Linux, which would share the CPU with wrk group by group
        # rather than thread by thread (measured: a CORS hit 7,100 req/s against 9,700).
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env=env, process_group=0)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {url} exited early; see its log in the results directory")
        try:
            requests.get(url, headers=HEADERS, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up within {timeout:g}s")


# --- the upstream: nginx with one JSON file ---


def payload() -> bytes:
    """About 2 KB of JSON with some text that needs script-safe escaping, like a real API answer."""
    items = [{"id": i, "name": f"item {i}", "tags": ["a", "b <c>"], "score": i * 1.5, "ok": i % 2 == 0}
             for i in range(24)]
    return json.dumps({"items": items, "count": len(items)}).encode()


def start_nginx(procs: Procs, work: Path, port: int) -> tuple[Path, Path]:
    www = work / "www"
    www.mkdir()
    (www / "data.json").write_bytes(payload())
    for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir()
    access_log = work / "access.log"
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$msec "$request" $status';
    access_log {access_log} bench;
    client_body_temp_path {work}/client; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{ default_type application/json; }}
    }}
}}
""")
    # nginx's workers drop to user nobody when started as root: they must be able to read the files.
    for path in (work, www, www / "data.json"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    procs.start("nginx", ["nginx", "-p", str(work), "-c", str(conf), "-g", "daemon off;"])
    return www / "data.json", access_log


# --- the bridge's bench config, derived from wsgi.ini ---


def shipped_ini() -> configparser.ConfigParser:
    """``wsgi.ini``'s [server], [cors], [jsonp], [cache] and [limits] as shipped, keys as written."""
    source = configparser.ConfigParser(interpolation=None)
    source.optionxform = str  # type: ignore[assignment,method-assign]
    source.read(ROOT / "wsgi.ini")
    out = configparser.ConfigParser(interpolation=None)
    out.optionxform = str  # type: ignore[assignment,method-assign]
    for section in ("server", "cors", "jsonp", "cache", "limits"):
        out[section] = dict(source[section]) if source.has_section(section) else {}
    return out


def bench_ini(path: Path, nginx_port: int, server: dict[str, str], backend: str | None = None,
              per_client: str = "") -> None:
    out = shipped_ini()
    # The shipped [server] settings, unless the command line changes them (--reuse-port and the rest).
    out["server"].update(server)
    if backend is not None:
        out["cache"]["backend"] = backend
    out["cors"]["allow_origins"] = ORIGIN
    # The bench is one client sending thousands of requests a second: a reachable per-client limit
    # would measure the refusals, not the bridge. The limited bridge counts against one never reached.
    out["limits"]["per_client"] = per_client
    upstream = {"url": f"http://127.0.0.1:{nginx_port}/", "timeout": "5", "allow_private": "true"}
    out["upstream:hit"] = dict(upstream)
    out["upstream:miss"] = {**upstream, "ttl": "0"}
    out["upstream:swr"] = {**upstream, "ttl": str(SWR_TTL), "stale_while_revalidate": "60"}
    with path.open("w") as handle:
        out.write(handle)


# --- wrk ---


@dataclass
class Sample:
    target: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: str = ""
    spread: str = ""  # how wrk's connections sat on the server's processes, e.g. "18/14" or "32"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def connection_spread(port: int) -> str:
    """How the established connections to ``port`` are spread over the processes holding them:
    "18/14" for two gunicorn workers sharing wrk's 32, "32" when one worker took them all."""
    try:
        output = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                                capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", output):
        counts[pid] = counts.get(pid, 0) + 1
    return "/".join(str(n) for n in sorted(counts.values(), reverse=True))


def run_wrk(url: str, seconds: float, connections: int, threads: int = 1,
            script: Path | None = None, spread: list[str] | None = None
            ) -> tuple[float, float, float, int, str, str]:
    """wrk's figures for ``url``; with ``spread``, also how its connections sat on the server's
    processes a third of the way in (appended to that list)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
           "-H", f"Origin: {ORIGIN}"]
    if script is not None:
        cmd += ["-s", str(script)]
    with subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, text=True) as process:
        if spread is not None:
            time.sleep(seconds / 3)
            spread.append(connection_spread(urlsplit(url).port or 80))
        output, _ = process.communicate()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, cmd, output)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\n\s+50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\n\s+99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors_match = re.search(r"Socket errors: (.*)", output)
    return (rps, p50, p99, int(non_2xx_match.group(1)) if non_2xx_match else 0,
            errors_match.group(1) if errors_match else "", output)


def rotating_script(path: Path, url_path: str, param: str) -> Path:
    """A wrk script sending ``url_path?PARAM=0..SWR_KEYS-1`` in turn (one key per entry)."""
    path.write_text(f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "{url_path}?{param}=" .. (counter % {SWR_KEYS}))
end
""")
    return path


def refreshes(access_log: Path, param: str, window: float) -> dict[str, Any]:
    """How the upstream saw the stale keys: requests per key, and the most for one key within
    ``window`` seconds (1 when every refresh of a key was one request)."""
    times: dict[str, list[float]] = {}
    pattern = re.compile(r'^([\d.]+) "GET /data\.json\?' + param + r'=(\d+) ')
    for line in access_log.read_text().splitlines():
        if match := pattern.match(line):
            times.setdefault(match.group(2), []).append(float(match.group(1)))
    most = 0
    for seen in times.values():
        seen.sort()
        start = 0
        for end, at in enumerate(seen):
            while at - seen[start] >= window:
                start += 1
            most = max(most, end - start + 1)
    return {"keys": len(times), "upstream_requests": sum(len(t) for t in times.values()),
            "most_within_window": most, "window_s": window}


# --- checks before measuring: each target answers what it should ---


def check_targets(targets: dict[str, str]) -> dict[str, str]:
    seen = {}
    for name, url in targets.items():
        for _ in range(2):  # the second request of a hit target must be a hit
            response = requests.get(url, headers=HEADERS, timeout=10)
        if response.status_code != 200:
            raise SystemExit(f"bench: {name} answered {response.status_code}: {response.text[:200]}")
        seen[name] = response.headers.get("Cache-Status", "")
    return seen


# --- the herd: concurrent cold requests for one key ---


def herd(url: str, access_log: Path, size: int) -> dict[str, Any]:
    marker = f"herd={time.time_ns()}"
    target = f"{url}{'&' if '?' in url else '?'}{marker}"
    barrier = threading.Barrier(size)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        status = requests.get(target, headers=HEADERS, timeout=30).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.2)  # nginx writes its access line after the response; not a measurement
    upstream_requests = sum(1 for line in access_log.read_text().splitlines() if marker in line)
    return {"requests": size, "ok": statuses.count(200), "upstream_requests": upstream_requests}


def start_redis(procs: Procs, work: Path) -> str | None:
    """A throwaway redis-server on loopback (no persistence), or None when it is not installed."""
    if shutil.which("redis-server") is None:
        print("bench: redis-server is not installed; the Redis herd is skipped", flush=True)
        return None
    port = free_port()
    proc = procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(work)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench: redis-server did not start; see redis.log in the results directory")


# --- resident memory with many keys ---


def fill_keys(ini: Path, keys: int) -> dict[str, Any]:
    """``bench/memory.py`` in a fresh process: RSS before and after ``keys`` distinct keys."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    output = subprocess.run([PY, str(BENCH / "memory.py"), "--config", str(ini), "--keys", str(keys)],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


# --- reporting ---


def versions(ca_port_log: Path) -> dict[str, str]:
    def cmd(*args: str) -> str:
        result = subprocess.run(args, capture_output=True, text=True)
        return (result.stdout + result.stderr).strip().splitlines()[0]

    from importlib.metadata import version

    ca = json.loads((BENCH / "node_modules" / "cors-anywhere" / "package.json").read_text())["version"]
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cpus, "
                   f"{model}",
        "python": platform.python_version(),
        "flask": version("flask"),
        "werkzeug": version("werkzeug"),
        "gunicorn": version("gunicorn"),
        "prometheus-client": version("prometheus-client"),
        "nginx": cmd("nginx", "-v").rpartition("/")[2],
        "wrk": cmd("wrk", "--version").split(" [")[0],
        "node": cmd("node", "--version"),
        "cors-anywhere": ca,
    }


HITS = ("cors-hit", "jsonp-hit")


def evenly_spread(spread: str, workers: int) -> bool:
    """Whether every one of ``workers`` held an equal share of wrk's connections ("16/16"; with a
    count that does not divide, none more than one above another)."""
    counts = [int(n) for n in spread.split("/") if n.isdigit()]
    return len(counts) == workers and max(counts) - min(counts) <= (sum(counts) % workers != 0)


def busier_share(spread: str) -> float | None:
    """The share of wrk's connections on the busiest worker ("24/8" -> 0.75, "32" -> 1.0)."""
    counts = [int(n) for n in spread.split("/") if n.isdigit()]
    return max(counts) / sum(counts) if counts and sum(counts) else None


def spread_report(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per gunicorn target: how unevenly wrk's connections sat on the workers over the rounds, how
    much the rounds' req/s varied, and how much of that variance the busier worker's share explains
    (R squared of a straight-line fit of req/s on that share)."""
    report = {}
    for name in sorted({s.target for s in samples} & GUNICORN_TARGETS):
        points = [(share, s.rps) for s in samples if s.target == name
                  and (share := busier_share(s.spread)) is not None]
        if len(points) < 3:
            continue
        shares, rps = zip(*points, strict=True)
        spread_rps = (max(rps) - min(rps)) / statistics.median(rps)
        r_squared = statistics.correlation(shares, rps) ** 2 if len(set(shares)) > 1 else 0.0
        report[name] = {"busier_share_min": round(min(shares), 2), "busier_share_max": round(max(shares), 2),
                        "rps_range_over_median": round(spread_rps, 2), "r_squared": round(r_squared, 2)}
    return report


@dataclass
class Goal:
    name: str
    value: float
    limit: float
    higher_is_better: bool = True
    met: bool = field(init=False)

    def __post_init__(self) -> None:
        self.met = self.value >= self.limit if self.higher_is_better else self.value <= self.limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--warm", type=float, default=1,
                        help="seconds of unmeasured load on each target just before each measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--herd", type=int, default=200)
    parser.add_argument("--keys", type=int, default=0,
                        help="fill a cache with this many keys and report RSS (0: skip)")
    parser.add_argument("--worker-class", help="override [server] worker_class for bridge and floor")
    parser.add_argument("--workers", help="override [server] workers")
    parser.add_argument("--threads", help="override [server] threads")
    parser.add_argument("--reuse-port", action="store_true",
                        help="[server] reuse_port = true for bridge and floors (off as shipped)")
    parser.add_argument("--fair-accept", choices=("true", "false"),
                        help="override [server] fair_accept for bridge and floors")
    parser.add_argument("--only", help="comma-separated target names to measure")
    parser.add_argument("--label", default="", help="a word for the results file name")
    args = parser.parse_args()

    for tool in ("nginx", "wrk", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed (apt-get install nginx wrk nodejs)")
    if not (BENCH / "node_modules" / "cors-anywhere").exists():
        raise SystemExit("bench: cors-anywhere is missing: npm ci --prefix bench (make bench does it)")

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + (f"-{args.label}" if args.label else "")
    results = BENCH / "results" / stamp
    results.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    procs = Procs(results)
    server = {k: v for k, v in (("worker_class", args.worker_class), ("workers", args.workers),
                                ("threads", args.threads), ("fair_accept", args.fair_accept),
                                ("reuse_port", "true" if args.reuse_port else None)) if v}
    try:
        nginx_port, bridge_port, limited_port, floor_port, raw_port, ca_port = (free_port()
                                                                                for _ in range(6))
        data, access_log = start_nginx(procs, work, nginx_port)
        ini = results / "bench.ini"
        bench_ini(ini, nginx_port, server)
        limited_ini = results / "bench-limited.ini"
        bench_ini(limited_ini, nginx_port, server, per_client=UNREACHED_LIMIT)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        bridge = procs.start("bridge", [PY, "app.py", "--config", str(ini), "--bind",
                                        f"127.0.0.1:{bridge_port}"], env=env)
        limited = procs.start("bridge-limited", [PY, "app.py", "--config", str(limited_ini), "--bind",
                                                 f"127.0.0.1:{limited_port}"], env=env)
        floor = procs.start("floor", [PY, str(BENCH / "floor.py"), "--config", str(ini), "--bind",
                                      f"127.0.0.1:{floor_port}", "--body", str(data)])
        raw_floor = procs.start("raw-floor", [PY, str(BENCH / "floor.py"), "--config", str(ini), "--bind",
                                              f"127.0.0.1:{raw_port}", "--body", str(data), "--raw"])
        ca = procs.start("cors-anywhere", ["node", str(BENCH / "cors_anywhere.js"), str(ca_port)])
        nginx_url = f"http://127.0.0.1:{nginx_port}/data.json"
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        limited_url = f"http://127.0.0.1:{limited_port}"
        targets = {
            "nginx": nginx_url,
            "floor": f"http://127.0.0.1:{floor_port}/jsonp",
            "raw-floor": f"http://127.0.0.1:{raw_port}/jsonp",
            "cors-hit": f"{bridge_url}/cors/hit/data.json",
            "jsonp-hit": f"{bridge_url}/jsonp/hit/data.json?callback=cb",
            "cors-hit-limited": f"{limited_url}/cors/hit/data.json",
            "jsonp-hit-limited": f"{limited_url}/jsonp/hit/data.json?callback=cb",
            "cors-miss": f"{bridge_url}/cors/miss/data.json",
            "jsonp-miss": f"{bridge_url}/jsonp/miss/data.json?callback=cb",
            "cors-anywhere": f"http://127.0.0.1:{ca_port}/{nginx_url}",
            "cors-swr": f"{bridge_url}/cors/swr/data.json?s=0",
            "cors-fresh": f"{bridge_url}/cors/hit/data.json?f=0",
        }
        scripts = {"cors-swr": rotating_script(work / "swr.lua", "/cors/swr/data.json", "s"),
                   "cors-fresh": rotating_script(work / "fresh.lua", "/cors/hit/data.json", "f")}
        wait_ready(nginx_url, procs.procs[0])
        wait_ready(bridge_url + "/healthz", bridge)
        wait_ready(limited_url + "/healthz", limited)
        wait_ready(targets["floor"], floor)
        wait_ready(targets["raw-floor"], raw_floor)
        wait_ready(f"http://127.0.0.1:{ca_port}/", ca)
        cache_status = check_targets(targets)
        if args.only:
            targets = {k: v for k, v in targets.items() if k in args.only.split(",")}
        info = versions(results / "cors-anywhere.log")
        config_server = configparser.ConfigParser(interpolation=None)
        config_server.read(ini)
        info["server"] = ", ".join(f"{k}={v}" for k, v in config_server["server"].items() if k != "bind")
        info["load_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"bench: {info['machine']}; {info['server']}; load {info['load_before']}", flush=True)

        for name, url in targets.items():  # warm: connections, caches, lazy imports
            run_wrk(url, 1, args.connections, script=scripts.get(name))
        samples: list[Sample] = []
        names = list(targets)
        for round_no in range(args.rounds):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                if args.warm > 0:  # the target was idle, or another server was just busy: not measured
                    run_wrk(targets[name], args.warm, args.connections, script=scripts.get(name))
                spread: list[str] = []
                rps, p50, p99, non_2xx, errors, _ = run_wrk(targets[name], args.seconds, args.connections,
                                                            script=scripts.get(name), spread=spread)
                samples.append(Sample(name, round_no, rps, p50, p99, non_2xx, errors, spread[0]))
            print(f"  round {round_no + 1}/{args.rounds}: "
                  + "  ".join(f"{s.target} {s.rps:.0f} [{s.spread}]" for s in samples
                              if s.round == round_no), flush=True)

        medians = {name: {"rps": statistics.median(s.rps for s in samples if s.target == name),
                          "p50_ms": statistics.median(s.p50_ms for s in samples if s.target == name),
                          "p99_ms": statistics.median(s.p99_ms for s in samples if s.target == name),
                          "non_2xx": sum(s.non_2xx for s in samples if s.target == name)}
                   for name in names}
        # gunicorn's workers share one listening socket and wrk opens its connections at once; how
        # they land moves a round's req/s more than most changes do (with wrk on the same two cores,
        # an uneven round runs faster: the lighter worker's idle time goes to wrk), and it lands
        # differently for each target. The goals are also given over the rounds where every worker
        # held an equal share, the same conditions for every target.
        worker_count = int(config_server["server"].get("workers", "1"))
        even = {name: [s for s in samples if s.target == name
                           and (name not in GUNICORN_TARGETS or evenly_spread(s.spread, worker_count))]
                    for name in names}
        even_medians = {name: {"rps": statistics.median(s.rps for s in kept),
                                   "p50_ms": statistics.median(s.p50_ms for s in kept),
                                   "p99_ms": statistics.median(s.p99_ms for s in kept),
                                   "non_2xx": sum(s.non_2xx for s in kept), "rounds": len(kept)}
                            for name, kept in even.items() if kept}
        goals: list[Goal] = []
        for label, table in (("", medians), ("even rounds: ", even_medians)):
            def ratio(a: str, b: str, key: str = "rps", table: dict[str, Any] = table) -> float | None:
                if a in table and b in table and table[b][key]:
                    return round(table[a][key] / table[b][key], 2)
                return None

            wanted = [
                *((f"{hit} / floor (rps)", ratio(hit, "floor"), 1.2, True) for hit in HITS),
                *((f"{hit} / raw-floor (rps)", ratio(hit, "raw-floor"), 0.8, True) for hit in HITS),
                ("jsonp-hit / cors-anywhere (rps)", ratio("jsonp-hit", "cors-anywhere"), 3.0, True),
                ("cors-miss / cors-anywhere (rps)", ratio("cors-miss", "cors-anywhere"), 1.3, True),
                *((f"{hit}-limited / {hit} (rps)", ratio(f"{hit}-limited", hit), 0.8, True)
                  for hit in HITS),
            ]
            goals += [Goal(label + name, value, limit, up) for name, value, limit, up in wanted
                      if value is not None]
            if "cors-swr" in table and "cors-fresh" in table:
                goals.append(Goal(label + "cors-swr / cors-fresh (p99, lower is better)",
                                  ratio("cors-swr", "cors-fresh", "p99_ms"), 1.2, False))
        spread_effect = spread_report(samples)
        swr = refreshes(access_log, "s", 0.9 * SWR_TTL) if "cors-swr" in targets else None
        if swr is not None:
            goals.append(Goal("cors-swr: upstream requests for one key within one lifetime",
                              swr["most_within_window"], 1, False))

        herd_result: dict[str, Any] | None = None
        if args.herd:
            workers = config_server["server"].get("workers", "?")
            herd_result = {"memory": herd(f"{bridge_url}/cors/hit/data.json", access_log, args.herd)}
            goals.append(Goal(f"herd of {args.herd}, memory store, {workers} workers: upstream requests",
                              herd_result["memory"]["upstream_requests"], 1, False))
            redis_url = start_redis(procs, work)
            if redis_url is not None:
                # The same bridge with the Redis store: one lock per key across all workers.
                redis_ini = results / "bench-redis.ini"
                bench_ini(redis_ini, nginx_port, server, backend=redis_url)
                redis_port = free_port()
                redis_bridge = procs.start("bridge-redis", [PY, "app.py", "--config", str(redis_ini),
                                                            "--bind", f"127.0.0.1:{redis_port}"], env=env)
                wait_ready(f"http://127.0.0.1:{redis_port}/healthz", redis_bridge)
                herd_result["redis"] = herd(f"http://127.0.0.1:{redis_port}/cors/hit/data.json",
                                            access_log, args.herd)
                goals.append(Goal(f"herd of {args.herd}, Redis store, {workers} workers: upstream requests",
                                  herd_result["redis"]["upstream_requests"], 1, False))
        info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        memory = None
        if args.keys:
            memory = fill_keys(ini, args.keys)
            # What the process grew by beyond max_bytes: allocator slack and the cache's own structures,
            # which should be a fixed amount (FIXED_OVERHEAD), not a multiple of the keys.
            goals.append(Goal(f"RSS growth - max_bytes with {args.keys} keys (MiB)",
                              round((memory["growth"] - memory["max_bytes"]) / 2**20, 1),
                              FIXED_OVERHEAD_MIB, False))

        report = {"command": " ".join(sys.argv), "info": info, "cache_status": cache_status,
                  "rounds": args.rounds, "seconds": args.seconds, "warm": args.warm,
                  "connections": args.connections,
                  "medians": medians, "even_medians": even_medians,
                  "goals": [asdict(g) for g in goals], "herd": herd_result, "spread": spread_effect,
                  "stale_while_revalidate": swr,
                  "memory": memory, "samples": [asdict(s) for s in samples]}
        (results / "results.json").write_text(json.dumps(report, indent=2))
        text = render(report)
        (results / "results.txt").write_text(text)
        print(text)
        print(f"bench: results in {results.relative_to(ROOT)}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def render(report: dict[str, Any]) -> str:
    info = report["info"]
    lines = [
        f"machine: {info['machine']}",
        "versions: " + ", ".join(f"{k} {info[k]}" for k in
                                 ("python", "flask", "werkzeug", "gunicorn", "prometheus-client", "nginx",
                                  "wrk", "node", "cors-anywhere")),
        f"gunicorn: {info['server']}",
        f"load average before/after: {info['load_before']} / {info['load_after']} "
        "(the machine is shared; medians over interleaved rounds)",
        f"wrk: 1 thread, {report['connections']} connections, "
        f"{report['seconds']:g}s x {report['rounds']} rounds, each run after {report['warm']:g}s "
        "of unmeasured load on its target",
        "",
        f"{'target':<15}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}",
    ]
    for name, m in report["medians"].items():
        lines.append(f"{name:<15}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}{m['non_2xx']:>9}")
    if report.get("even_medians"):
        lines += ["", "rounds where every gunicorn worker held an equal share of wrk's connections:",
                  f"{'target':<15}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'rounds':>9}"]
        for name, m in report["even_medians"].items():
            lines.append(f"{name:<15}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}"
                         f"{m['rounds']:>9}")
    lines += ["", f"{'goal':<60}{'value':>8}{'limit':>8}  met"]
    for goal in report["goals"]:
        sign = ">=" if goal["higher_is_better"] else "<="
        lines.append(f"{goal['name']:<60}{goal['value']:>8}{sign:>4}{goal['limit']:<4}  "
                     f"{'yes' if goal['met'] else 'NO'}")
    if report.get("spread"):
        lines += ["", "how wrk's connections sat on the workers, and how much of each target's swing "
                  "in req/s that explains:",
                  f"{'target':<20}{'busier worker':>16}{'req/s range':>14}{'R^2':>7}"]
        for name, spread in report["spread"].items():
            lines.append(f"{name:<20}{spread['busier_share_min']:>8.2f}-{spread['busier_share_max']:<7.2f}"
                         f"{spread['rps_range_over_median']:>13.0%}{spread['r_squared']:>7.2f}")
    if report.get("stale_while_revalidate"):
        swr = report["stale_while_revalidate"]
        lines.append(f"stale-while-revalidate: {swr['keys']} keys of ttl {SWR_TTL}s reached nginx "
                     f"{swr['upstream_requests']} times in all; at most {swr['most_within_window']} "
                     f"for one key within {swr['window_s']:g}s")
    for store, result in (report["herd"] or {}).items():
        lines.append(f"herd ({store} store): {result['requests']} concurrent cold requests, {result['ok']} "
                     f"answered 200, {result['upstream_requests']} reached nginx")
    if report["memory"]:
        m = report["memory"]
        lines.append(f"memory: {m['keys']} keys in {m['fill_seconds']}s, "
                     f"RSS {m['rss_before'] >> 20} MiB -> {m['rss_after'] >> 20} MiB "
                     f"(max_bytes {m['max_bytes'] >> 20} MiB; cache {m['cache']}; "
                     f"evictions {m['evictions']:.0f})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
