"""``make cache-tests``: the public HTTP caching suite (http-tests/cache-tests, cache-tests.fyi) run
through the bridge, its required tests counted beside the suite's published results for other caches.

The suite is never part of this repository and is never fetched here: ``--suite`` names a git clone (or
mirror) of it that holds the pinned commit, and that commit is unpacked into a temporary directory, so
the clone is neither changed nor trusted to be checked out at the pin. The one package its command line
imports (undici) comes from ``bench/cache_tests/package-lock.json``. All on loopback: the suite's test
server (with ``loopback.cjs`` preloaded, as it would otherwise bind every interface) is the bridge's only
upstream, the bridge runs as ``app.py`` runs it with one worker (the suite asks one cache; a memory cache
is one per worker) and no rate limit (the suite is one client sending about 1,300 requests), and the
suite's client asks the bridge's ``/cors/suite/`` path. A test counts as passed when its own result is
a pass; whether the tests it depends on passed is not asked. Writes
``bench/results/STAMP-cache-tests/`` (``summary.json``, the suite's raw ``results.json``, the INI and
every log). Not a test: the score is a measurement, and ``make test`` never runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import Procs, shipped_ini  # noqa: E402  (the bench's own, not copies)

PY = sys.executable
SUITE_URL = "https://github.com/http-tests/cache-tests"
SUITE_COMMIT = "b55b8bda3dbb8c927c04e85bd8d496a8caa3e4ba"
UPSTREAM = "suite"
# Sent by the suite's client with every request (test-engine/client/fetching.mjs): the server matches
# requests to tests by Test-ID and Req-Num, so without them every test is a setup failure.
HARNESS_HEADERS = ("Test-ID", "Test-Name", "Req-Num", "Pragma", "Cache-Control")
# The bridge never forwards these whatever the config says; tests that send them are scored as they are.
WITHHELD_HEADERS = frozenset({"authorization", "cookie"})
# The methods the suite sends (the harness PUTs each test's config): RFC 9110's and its extension
# method M-SEARCH, configured as an operator would for an upstream that takes it.
METHODS = "GET HEAD POST PUT PATCH DELETE M-SEARCH"
# The suite's package.json scripts "server" and "cli", run by node itself: npm 11 warns that it will
# stop handing unknown settings such as --port and --base to scripts.
SERVER = ["node", "test-engine/server/server.mjs"]
CLIENT = ["node", "--no-warnings", "test-engine/cli.mjs"]
CLIENT_TIMEOUT = 900  # seconds for the whole suite; a run takes about a minute


@dataclass(frozen=True)
class SuiteTest:
    id: str
    suite: str
    name: str
    kind: str  # required, optimal or check
    browser_only: bool
    cdn_only: bool
    depends_on: tuple[str, ...]
    request_headers: tuple[str, ...]

    @property
    def counted(self) -> bool:
        """A required test the suite's command line runs (browser_only tests need a browser cache)."""
        return self.kind == "required" and not self.browser_only


@dataclass(frozen=True)
class Score:
    name: str
    version: str
    kind: str  # the suite's type: rev-proxy, cdn, or ours
    passed: int
    of: int


@dataclass(frozen=True)
class Failure:
    suite: str
    id: str
    name: str
    result: Any  # the suite's own: [error name, message], or false

    @property
    def message(self) -> str:
        if isinstance(self.result, list) and len(self.result) == 2:
            return f"{self.result[0]}: {self.result[1]}"
        return "no result" if self.result is None else json.dumps(self.result)


# --- scoring: plain functions over the suite's metadata and results ---


def load_tests(meta: dict[str, Any]) -> list[SuiteTest]:
    return [SuiteTest(t["id"], t["suite"], t["name"], t["kind"], t["browser_only"], t["cdn_only"],
                      tuple(t["depends_on"]), tuple(t["request_headers"]))
            for t in meta["tests"]]


def counted_tests(tests: list[SuiteTest]) -> list[SuiteTest]:
    return [t for t in tests if t.counted]


def passed(tests: list[SuiteTest], results: dict[str, Any]) -> int:
    """Counted tests whose own result is a pass (``true``; anything else is a failure of some kind)."""
    return sum(1 for t in counted_tests(tests) if results.get(t.id) is True)


def failures(tests: list[SuiteTest], results: dict[str, Any]) -> list[Failure]:
    return [Failure(t.suite, t.id, t.name, results.get(t.id)) for t in counted_tests(tests)
            if results.get(t.id) is not True]


def missing_results(tests: list[SuiteTest], results: dict[str, Any]) -> list[str]:
    """Counted tests the run reported nothing for: a broken run, never a score."""
    return [t.id for t in counted_tests(tests) if t.id not in results]


def forward_headers(tests: list[SuiteTest]) -> list[str]:
    """The harness's headers and every request header a test sends, once each (case-insensitive),
    less those the bridge never forwards. Accept-Language, If-None-Match and the rest the bridge
    forwards by default are listed too: naming them changes nothing."""
    names: dict[str, str] = {}
    for name in (*HARNESS_HEADERS, *(h for t in tests for h in t.request_headers)):
        if name.lower() not in WITHHELD_HEADERS:
            names.setdefault(name.lower(), name)
    return list(names.values())


def scores(tests: list[SuiteTest], bridge: tuple[str, dict[str, Any]], implementations: list[dict[str, Any]],
           published: dict[str, dict[str, Any]]) -> list[Score]:
    """The bridge first, then every published implementation that is not a browser, best first."""
    of = len(counted_tests(tests))
    others = [Score(i["name"], i.get("version", ""), i["type"], passed(tests, published[i["file"]]), of)
              for i in implementations if i["type"] != "browser"]
    label, results = bridge
    return [Score("jsonp-cors-bridge", label, "bridge", passed(tests, results), of),
            *sorted(others, key=lambda s: (-s.passed, s.name.lower()))]


def render(rows: list[Score], fails: list[Failure], commit: str) -> str:
    width = max(len(r.name) for r in rows)
    vwidth = max(len(r.version) for r in rows)
    lines = [f"cache-tests at {commit[:12]}: required tests passed (each test's own result), "
             f"of the {rows[0].of} the suite's command line runs", ""]
    lines += [f"  {r.name:<{width}}  {r.version:<{vwidth}}  {r.kind:<9}  {r.passed:>3} / {r.of}"
              for r in rows]
    lines += ["", f"the bridge's failing required tests ({len(fails)}):"]
    suite = None
    for fail in fails:
        if fail.suite != suite:
            suite = fail.suite
            lines.append(f"  {suite}")
        lines.append(f"    {fail.id}: {fail.message}")
    return "\n".join(lines)


# --- the suite: found, never fetched ---


def suite_problem(source: Path, commit: str) -> str | None:
    """Why ``source`` cannot give us the suite at ``commit``, with the commands that fix it (None: it can)."""
    get = (f"  git clone {SUITE_URL} {source}\n"
           f"  git -C {source} checkout {commit}\n"
           f"(or clone any mirror of it: git clone MIRROR {source}), or point the target at a clone that "
           f"has it:\n  make cache-tests CACHE_TESTS_DIR=/path/to/cache-tests")
    if not source.exists():
        return f"cache-tests: no copy of the suite at {source}. Get it (once, online) with:\n{get}"
    probe = subprocess.run(["git", "-C", str(source), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return (f"cache-tests: {source} is not a git clone of the suite holding commit {commit}"
                f" ({probe.stderr.strip() or 'commit not found'}). Fetch it with:\n"
                f"  git -C {source} fetch {SUITE_URL} {commit}\nor start afresh:\n{get}")
    return None


def unpack_suite(source: Path, commit: str, into: Path) -> None:
    """The suite's files at ``commit`` exactly, whatever ``source`` has checked out or changed."""
    archive = into.parent / "suite.tar"
    subprocess.run(["git", "-C", str(source), "archive", "--format=tar", f"--output={archive}", commit],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()


# --- processes ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, proc: subprocess.Popen[bytes], ready: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cache-tests: {what} exited with {proc.returncode}; see its log")
        if ready():
            return
        time.sleep(0.1)
    raise SystemExit(f"cache-tests: {what} did not come up within {timeout:g}s; see its log")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def suite_env(**settings: str) -> dict[str, str]:
    """The environment for the suite's server or client: its settings as the npm_config_* variables
    ``npm run server --port=P`` would set (the scripts read nothing else), and none of npm's own from
    ours (the client runs one test only when it finds npm_config_id set)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_")}
    # As npm would set them from the suite's package.json "config": the client reads the id as
    # npm_config_id || npm_package_config_id, and runs every test only when that is "".
    env.update(npm_package_config_protocol="http", npm_package_config_id="", **settings)
    return env


def bridge_ini(path: Path, upstream_port: int, tests: list[SuiteTest]) -> None:
    """``wsgi.ini``'s [server], [cors], [jsonp] and [cache] as shipped, with one worker, no rate limit
    and the suite's server as the one upstream."""
    out = shipped_ini()
    out["server"]["workers"] = "1"
    out["limits"]["per_client"] = ""
    out[f"upstream:{UPSTREAM}"] = {
        "url": f"http://127.0.0.1:{upstream_port}/",
        "methods": METHODS,
        "allow_private": "true",
        "timeout": "15",
        "forward_headers": " ".join(forward_headers(tests)),
    }
    with path.open("w") as handle:
        out.write(handle)


def git_label(path: Path) -> str:
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


# --- the run ---


@contextmanager
def suite_behind_bridge(suite: Path, tests: list[SuiteTest], procs: Procs,
                        results_dir: Path) -> Iterator[str]:
    """The suite's server on loopback and the bridge in front of it; yields the base url the
    suite's client is given."""
    server_port, bridge_port = free_port(), free_port()
    server = procs.start("suite-server", SERVER, cwd=suite, env=suite_env(
        npm_config_port=str(server_port), npm_config_pidfile=str(suite / "server.pid"),
        NODE_OPTIONS=f"--require {HERE / 'loopback.cjs'}"))
    wait_for("the suite's server", server, lambda: answers(f"http://127.0.0.1:{server_port}/"))
    if f"Listening on http://127.0.0.1:{server_port}/" not in (results_dir / "suite-server.log").read_text():
        raise SystemExit("cache-tests: the suite's server is not bound to 127.0.0.1 alone; see its log")
    ini = results_dir / "bridge.ini"
    bridge_ini(ini, server_port, tests)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    bridge = procs.start("bridge", [PY, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{bridge_port}"],
                         env)
    wait_for("the bridge", bridge, lambda: answers(f"http://127.0.0.1:{bridge_port}/healthz"))
    yield f"http://127.0.0.1:{bridge_port}/cors/{UPSTREAM}"


def run_suite(suite: Path, base: str, results_dir: Path) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    with (results_dir / "results.json").open("wb") as out, (results_dir / "cli.log").open("wb") as err:
        client = subprocess.run(CLIENT, cwd=suite, env=suite_env(npm_config_base=base), stdout=out,
                                stderr=err, timeout=CLIENT_TIMEOUT)
    seconds = time.monotonic() - started
    if client.returncode != 0:
        raise SystemExit(f"cache-tests: the suite's client exited with {client.returncode}; "
                         f"see {results_dir / 'cli.log'}")
    return json.loads((results_dir / "results.json").read_text()), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, required=True,
                        help="a git clone or mirror of http-tests/cache-tests holding --commit")
    parser.add_argument("--commit", default=SUITE_COMMIT, help="the suite's commit to run (default: the pin)")
    parser.add_argument("--results", type=Path, default=HERE.parent / "results")
    parser.add_argument("--min-required", type=int, default=0,
                        help="exit 1 when the bridge passes fewer required tests than this")
    parser.add_argument("--test", metavar="ID",
                        help="run this one test and print its requests and answers as the suite's client "
                             "saw them (nothing is scored)")
    args = parser.parse_args()

    source = args.suite.expanduser().resolve()
    problem = suite_problem(source, args.commit)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if not (HERE / "node_modules" / "undici").is_dir():
        print("cache-tests: undici is missing: npm ci --prefix bench/cache_tests (make cache-tests does it)",
              file=sys.stderr)
        return 2

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results_dir = args.results / f"{stamp}-cache-tests"
    results_dir.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="bridge-cache-tests-"))
    procs = Procs(results_dir)
    try:
        suite = work / "suite"
        unpack_suite(source, args.commit, suite)
        # The suite imports undici by name: Node looks for it in node_modules beside the suite's parents.
        (work / "node_modules").symlink_to(HERE / "node_modules")
        meta = json.loads(subprocess.run(["node", str(HERE / "suite_meta.mjs"), str(suite)], check=True,
                                         capture_output=True, text=True).stdout)
        tests = load_tests(meta)
        with suite_behind_bridge(suite, tests, procs, results_dir) as base:
            if args.test:
                return subprocess.run(CLIENT, cwd=suite,
                                      env=suite_env(npm_config_base=base, npm_config_id=args.test)).returncode
            print(f"cache-tests: running {len(tests)} tests through {base} ...", flush=True)
            results, seconds = run_suite(suite, base, results_dir)
        missing = missing_results(tests, results)
        if missing:
            raise SystemExit(f"cache-tests: no result for {len(missing)} required tests "
                             f"({', '.join(missing[:5])}...): the run is broken, not scored")
        implementations = meta["implementations"]
        published = {i["file"]: json.loads((suite / "results" / i["file"]).read_text())
                     for i in implementations if i["type"] != "browser"}
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    label = git_label(ROOT)
    rows = scores(tests, (label, results), implementations, published)
    fails = failures(tests, results)
    print(render(rows, fails, args.commit))
    print(f"\nsuite run {seconds:.1f} s; results in {results_dir}")
    summary = {
        "stamp": stamp,
        "suite": {"url": SUITE_URL, "commit": args.commit, "source": str(source)},
        "bridge": {"commit": label, "config": "bridge.ini"},
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "suite_seconds": round(seconds, 1),
        "required_counted": rows[0].of,
        "scores": [asdict(r) for r in rows],
        "bridge_failures": [{**asdict(f), "message": f.message} for f in fails],
    }
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if rows[0].passed < args.min_required:
        print(f"cache-tests: {rows[0].passed} required tests passed, fewer than --min-required "
              f"{args.min_required}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
