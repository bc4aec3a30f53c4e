"""Purge and invalidation: POST /purge by upstream, path, prefix and tag, unsafe methods invalidating
their url, in every worker (memory store, through the purge log) and every instance (Redis).

Hits and misses are told apart by the upstream's request counts, and by answers that change
version once the upstream is asked again.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from bridge.cache import Scope
from bridge.cache.purge import InvalidationTable, PurgeLog
from bridge.site.cli import main as cli_main
from tests.concurrency import together
from tests.conftest import config_text
from tests.forking import in_forked_child
from tests.redis_server import RedisServer, free_port
from tests.test_cache import Bridge, cache_status
from tests.test_cache import backend as backend  # noqa: F401 - a fixture used below
from tests.test_cache import make_bridge as make_bridge  # noqa: F401 - a fixture used below
from tests.upstream_server import Reply, Seen, UpstreamServer

TOKEN = "purge-token-0123456789abcdef"
ADMIN = f"[admin]\ntoken = {TOKEN}\n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def versioned(headers: dict[str, str] | None = None) -> Callable[[Seen], Reply]:
    """A route answering ``{"path": ..., "v": N}``, N counting the upstream's requests for it."""
    counters: dict[str, itertools.count[int]] = {}

    def route(seen: Seen) -> Reply:
        counter = counters.setdefault(seen.path, itertools.count(1))
        return Reply(200, {"path": seen.path, "v": next(counter)}, headers=dict(headers or {}))
    return route


def bridge_with_admin(make_bridge: Callable[..., Bridge], extra: str = "") -> Bridge:
    # make_bridge writes the [cache] section; [admin] follows it as its own section.
    return make_bridge(f"{extra}\n{ADMIN}")


def version(bridge: Bridge, path: str) -> int:
    response = bridge.client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return int(response.get_json()["v"])


# --- the route ---


def test_without_a_token_there_is_no_purge_route(make_bridge: Callable[..., Bridge]) -> None:
    response = make_bridge().client.post("/purge", json={"api": "api"}, headers=AUTH)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN}x", "Bearer", f"bearer{TOKEN}"])
def test_a_missing_or_wrong_token_is_a_401(make_bridge: Callable[..., Bridge], upstream: UpstreamServer,
                                           authorization: str | None) -> None:
    bridge = bridge_with_admin(make_bridge)
    upstream.route("/items", versioned())
    bridge.client.get("/cors/api/items")
    headers = {"Authorization": authorization} if authorization else {}
    refused = bridge.client.post("/purge", json={"api": "api"}, headers=headers)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["error"] == "unauthorized" and refused.get_json()["message"]
    assert TOKEN not in refused.get_data(as_text=True)
    assert version(bridge, "/cors/api/items") == 1  # nothing was purged


def test_refused_tokens_cost_the_clients_budget(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(f"\n[limits]\nper_client = 3/minute\n{ADMIN}")
    statuses = [bridge.client.post("/purge", json={"api": "api"},
                                   headers={"Authorization": "Bearer guess-000000000000"}).status_code
                for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.parametrize(("body", "says"), [
    pytest.param(b"not json", "JSON object", id="not-json"),
    pytest.param(b"[]", "JSON object", id="a-list"),
    pytest.param(b"{}", "name what to purge", id="no-scope"),
    pytest.param(b'{"path": "items"}', "name what to purge", id="path-without-api"),
    pytest.param(b'{"api": "nope"}', "unknown api 'nope'", id="unknown-api"),
    pytest.param(b'{"api": "api", "path": "a", "tag": "t"}', "one of path, prefix or tag", id="two"),
    pytest.param(b'{"api": "api", "paths": "a"}', "unknown field 'paths'", id="unknown-field"),
    pytest.param(b'{"api": 1}', "'api' must be a non-empty string", id="not-a-string"),
    pytest.param(b'{"api": "api", "prefix": ""}', "'prefix' must be a non-empty string", id="empty"),
])
def test_a_bad_body_is_a_400_that_says_what_to_change(make_bridge: Callable[..., Bridge], body: bytes,
                                                      says: str) -> None:
    response = bridge_with_admin(make_bridge).client.post(
        "/purge", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert says in response.get_json()["message"]


# --- what each scope drops (memory and Redis) ---

PATHS = ["/cors/api/items/1", "/cors/api/items/1?x=1", "/jsonp/api/items/1?callback=cb",
         "/cors/api/items/2", "/cors/api/other/3", "/cors/closed/items/1"]


# The JSONP read of /items/1 shares the CORS read's entry (one forwarded request): entries < paths.
@pytest.mark.parametrize(("scope", "dropped", "entries"), [
    pytest.param({"api": "api"}, PATHS[:5], 4, id="api"),
    pytest.param({"api": "api", "path": "items/1"}, PATHS[:3], 2, id="path"),
    pytest.param({"api": "api", "path": "/items/1"}, PATHS[:3], 2, id="path-with-a-slash"),
    pytest.param({"api": "api", "prefix": "items/"}, PATHS[:4], 3, id="prefix"),
    pytest.param({"tag": "odd"}, [PATHS[0], PATHS[1], PATHS[2], PATHS[5]], 3, id="tag-in-every-api"),
    pytest.param({"tag": "odd", "api": "closed"}, [PATHS[5]], 1, id="tag-in-one-api"),
    pytest.param({"tag": "three"}, [PATHS[4]], 1, id="tag-from-cache-tag"),
])
def test_each_scope_drops_exactly_its_entries(make_bridge: Callable[..., Bridge], upstream: UpstreamServer,
                                              scope: dict[str, str], dropped: list[str],
                                              entries: int) -> None:
    bridge = bridge_with_admin(make_bridge)
    upstream.route("/items/1", versioned({"Surrogate-Key": "odd item-1"}))
    upstream.route("/items/2", versioned({"Surrogate-Key": "even"}))
    upstream.route("/other/3", versioned({"Cache-Tag": "three,odd-ish"}))

    def read(path: str) -> str:
        response = bridge.client.get(path)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    before = {path: read(path) for path in PATHS}
    answer = bridge.client.post("/purge", json=scope, headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    shown = {k: v.lstrip("/") if k == "path" else v for k, v in scope.items()}
    assert answer.get_json() == {"purged": entries, "scope": shown}
    after = {path: read(path) for path in PATHS}
    assert sorted(path for path in PATHS if after[path] != before[path]) == sorted(dropped)
    assert "purged" in bridge.events


def test_tags_are_never_sent_to_clients(make_bridge: Callable[..., Bridge], upstream: UpstreamServer) -> None:
    for bridge in (make_bridge(), bridge_with_admin(make_bridge)):
        upstream.route("/t", Reply(200, {"n": 1}, headers={"Surrogate-Key": "a b", "Cache-Tag": "c"}))
        for path in ("/cors/api/t", "/cors/api/t", "/jsonp/api/t?callback=cb"):
            response = bridge.client.get(path)
            assert "Surrogate-Key" not in response.headers and "Cache-Tag" not in response.headers


def test_an_answer_fetched_while_it_is_purged_is_not_stored(make_bridge: Callable[..., Bridge],
                                                            upstream: UpstreamServer) -> None:
    bridge = bridge_with_admin(make_bridge)
    release, arrived = threading.Event(), threading.Event()
    counter = itertools.count(1)

    def slow(seen: Seen) -> Reply:
        number = next(counter)
        if number == 1:
            arrived.set()
            release.wait(10)
        return Reply(200, {"v": number})

    upstream.route("/slow", slow)
    first: list[int] = []
    fetching = threading.Thread(target=lambda: first.append(version(bridge, "/cors/api/slow")))
    fetching.start()
    assert arrived.wait(10)
    bridge.clock.tick(0.001)
    assert bridge.client.post("/purge", json={"api": "api", "path": "slow"}, headers=AUTH).status_code == 200
    bridge.clock.tick(0.001)  # later requests begin after the purge
    release.set()
    fetching.join(10)
    assert first == [1]  # the request under way still gets its answer
    assert version(bridge, "/cors/api/slow") == 2  # but it was not stored for anyone after the purge
    assert version(bridge, "/cors/api/slow") == 2


# --- RFC 9111 section 4.4: unsafe methods invalidate ---


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"])
def test_a_successful_unsafe_request_invalidates_its_url(make_bridge: Callable[..., Bridge],
                                                         upstream: UpstreamServer, method: str) -> None:
    """So does a method whose safety the bridge does not know (RFC 9111 section 4.4), configured as
    an extension method."""
    # An upstream of its own that allows every method (make_bridge's text follows [cache]).
    bridge = make_bridge(f"\n[upstream:rw]\nurl = {upstream.url}\n"
                         "methods = GET HEAD POST PUT DELETE PATCH M-SEARCH\n")
    upstream.route("/items", versioned({"Location": "/items/9", "Content-Location": "/elsewhere"}))
    upstream.route("/items/9", versioned())
    upstream.route("/elsewhere", versioned())
    for path in ("/cors/rw/items", "/cors/rw/items/9", "/cors/rw/elsewhere"):
        assert version(bridge, path) == 1
    other_query = version(bridge, "/cors/rw/items?q=1")  # counted with /items by the upstream: 2
    assert version(bridge, "/cors/rw/items") == 1  # a hit
    changed = bridge.client.open("/cors/rw/items", method=method, data=b"{}",
                                 content_type="application/json")
    assert changed.status_code == 200 and upstream.last().method == method
    after = bridge.client.get("/cors/rw/items")
    assert after.get_json()["v"] == 4 and "fwd=uri-miss" in cache_status(after)
    assert version(bridge, "/cors/rw/items/9") == 2  # named by Location, below the same base
    assert version(bridge, "/cors/rw/elsewhere") == 2  # named by Content-Location
    assert version(bridge, "/cors/rw/items?q=1") == other_query  # another url: untouched
    assert "invalidated" in bridge.events


def test_a_failed_unsafe_request_invalidates_nothing(make_bridge: Callable[..., Bridge],
                                                     upstream: UpstreamServer) -> None:
    bridge = make_bridge()
    upstream.route("/items", versioned())
    assert version(bridge, "/cors/api/items") == 1
    upstream.route("/items", lambda seen: Reply(500, {"error": "no"}) if seen.method == "POST"
                   else Reply(200, {"v": 99}))
    assert bridge.client.post("/cors/api/items", json={}).status_code == 500
    assert version(bridge, "/cors/api/items") == 1


def test_a_location_outside_the_base_is_not_followed(make_bridge: Callable[..., Bridge],
                                                     upstream: UpstreamServer) -> None:
    bridge = make_bridge()
    upstream.route("/items", versioned({"Location": "http://elsewhere.example/items"}))
    assert bridge.client.post("/cors/api/items", json={}).status_code == 200


def test_a_flood_of_invalidations_leaves_other_urls_alone(make_bridge: Callable[..., Bridge],
                                                          upstream: UpstreamServer) -> None:
    """However many unsafe requests one client sends, only their url is invalidated: the purge log's
    overflow (drop everything) is for an operator's purges, never reached by clients."""
    bridge = make_bridge()
    upstream.route("/items", versioned())
    upstream.route("/other", versioned())
    assert version(bridge, "/cors/api/other") == 1
    for _ in range(300):
        assert bridge.client.post("/cors/api/items", json={}).status_code == 200
    assert version(bridge, "/cors/api/other") == 1 and upstream.count("/other") == 1
    if bridge.cache.purge_log is not None:
        assert bridge.cache.purge_log.head() == 0  # nothing went through the log


def test_the_invalidation_table_across_processes() -> None:
    table = InvalidationTable(slots=64)
    address = ("api", "items", "q=1")
    assert table.invalidated_at(address) == 0.0
    in_forked_child(lambda: (table.mark(address, 5.0), b"")[1])
    assert table.invalidated_at(address) == 5.0  # a worker's mark is seen by the others
    table.mark(address, 3.0)
    assert table.invalidated_at(address) == 5.0  # never moved back
    assert table.invalidated_at(("api", "items", "q=2")) in (0.0, 5.0)  # another slot, or a shared one


# --- the purge log across processes ---


def test_the_purge_log_reaches_a_forked_process_and_says_when_it_fell_behind() -> None:
    log = PurgeLog(records=4)

    def child() -> bytes:
        seen = log.since(0)
        return repr([(n, s.described()) for n, _, s in seen or []]).encode()

    log.write(Scope(api="a"), 1.0)
    log.write(Scope(api="a", path="p"), 2.0)
    assert in_forked_child(child) == repr([(1, {"api": "a"}), (2, {"api": "a", "path": "p"})]).encode()
    written = in_forked_child(lambda: str(log.write(Scope(tag="t"), 3.0)).encode())
    assert written == b"3" and log.head() == 3  # a child's write is seen by the parent
    for at in range(4, 10):
        log.write(Scope(api="b"), float(at))
    assert log.since(0) is None  # overwritten: the reader must drop all it holds
    assert [s.described() for _, _, s in log.since(7) or []] == [{"api": "b"}, {"api": "b"}]


# --- through gunicorn: every worker, and every instance of a shared Redis ---


def start_bridge(ini: Path, workers: int, log: Path, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--config", str(ini), "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers)], cwd=root, stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"gunicorn at {url} did not start"
        time.sleep(0.05)


@pytest.fixture
def gunicorn_set(tmp_path: Path, upstream: UpstreamServer, page_origin: str,
                 request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two workers on the memory store, or (``redis``) two instances of two workers on one Redis."""
    shared = request.param == "redis"
    backend = ""
    if shared:
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis.flush()
        backend = f"backend = {redis.url}\n"
    ini = tmp_path / "bridge.ini"
    admin = "[admin]\ntoken = ${BRIDGE_ADMIN_TOKEN}\n"
    ini.write_text(config_text(upstream.url, f"[cache]\n{backend}\n{admin}", page_origin=page_origin))
    processes = []
    try:
        for _ in range(2 if shared else 1):
            processes.append(start_bridge(ini, 2, tmp_path / "gunicorn.log",
                                          env={"BRIDGE_ADMIN_TOKEN": TOKEN}))
        yield [url for _, url in processes]
    finally:
        for process, _ in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
        assert TOKEN not in (tmp_path / "gunicorn.log").read_text()


def versions_seen(urls: list[str], path: str) -> tuple[set[int], set[str]]:
    """The versions served and the processes serving them (X-Request-ID starts with a prefix of
    the worker's own), over concurrent requests on new connections, in rounds until every worker of
    every instance has answered: which worker accepts a connection is the kernel's choice, and a
    round can miss one."""
    seen: list[tuple[int, str]] = []

    def one(index: int) -> None:
        response = requests.get(urls[index % len(urls)] + path, timeout=10)
        seen.append((response.json()["v"], response.headers["X-Request-ID"][:16]))

    for _ in range(20):
        together(one, 20, at_once=False)  # as before the helper: each thread as it starts
        if len({worker for _, worker in seen}) >= 2 * len(urls):
            break
    return {v for v, _ in seen}, {worker for _, worker in seen}


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_set", ["memory", "redis"], indirect=True)
def test_a_purge_reaches_every_worker_and_instance(gunicorn_set: list[str], upstream: UpstreamServer) -> None:
    upstream.route("/items", versioned())
    urls = gunicorn_set
    _, workers = versions_seen(urls, "/cors/api/items")  # every worker holds an entry
    assert len(workers) == 2 * len(gunicorn_set), workers  # every worker took part
    held = upstream.count("/items")
    out = io.StringIO()
    code = cli_main(["purge", "--api", "api", "--path", "items", "--bridge", urls[0], "--token", TOKEN],
                    out=out)
    assert code == 0, out.getvalue()
    assert '"scope": {"api": "api", "path": "items"}' in out.getvalue()
    seen, workers = versions_seen(urls, "/cors/api/items")
    assert len(workers) == 2 * len(gunicorn_set), workers
    assert min(seen) > held, seen  # no worker, no instance served a version from before the purge
    assert len(seen) == 1 or len(gunicorn_set) == 1  # with Redis, one new entry for everyone


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_set", ["memory", "redis"], indirect=True)
def test_an_invalidation_reaches_every_worker_and_instance(gunicorn_set: list[str],
                                                           upstream: UpstreamServer) -> None:
    upstream.route("/items", versioned())
    upstream.route("/other", versioned())
    urls = gunicorn_set
    _, workers = versions_seen(urls, "/cors/api/items")
    assert len(workers) == 2 * len(gunicorn_set), workers
    other, _ = versions_seen(urls, "/cors/api/other")
    held = upstream.count("/items")
    assert requests.post(urls[0] + "/cors/api/items", json={}, timeout=10).status_code == 200
    seen, workers = versions_seen(urls, "/cors/api/items")
    assert len(workers) == 2 * len(gunicorn_set), workers
    assert min(seen) > held + 1, seen  # the POST itself was one more upstream request
    assert versions_seen(urls, "/cors/api/other")[0] <= other  # another url: still held
