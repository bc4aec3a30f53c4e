"""The worker handoff (cache/handoff.py, through herd.LocalLocks): a lock per key across processes,
and the entry its holder leaves."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from bridge import create_app
from bridge.cache import Cache, CacheEntry, MemoryStore
from bridge.cache.entry import new_entry
from bridge.cache.handoff import MAX_SHARED, WorkerHandoff
from bridge.cache.herd import LocalLocks
from bridge.cache.serialize import entry_from_bytes, entry_to_bytes
from bridge.config import Config, parse_config
from bridge.upstream.message import UpstreamResponse
from tests.forking import in_forked_child
from tests.upstream_server import Reply, UpstreamServer


def entry(body: bytes = b'{"a": 1}', key: str = "k") -> CacheEntry:
    response = UpstreamResponse(200, (("Content-Type", "application/json"), ("ETag", '"e"')), body)
    return new_entry(key, response, 1_000.0, 60, ("accept-language",), '{"a":1}', retain_until=1_100.0)


def memory_cache(clock: Callable[[], float], handoff: WorkerHandoff) -> Cache:
    config = parse_config("[upstream:a]\nurl = http://h/\n", "t.ini", env={})
    return Cache(config.cache, MemoryStore(1 << 20, clock=clock), clock, locks=LocalLocks(handoff))


def test_an_entry_survives_the_trip_through_bytes() -> None:
    original = entry()
    got = entry_from_bytes("k", entry_to_bytes(original), now=1_010.0)
    assert got is not None and got.retain_until == 1_100.0
    assert (got.response, got.stored_at, got.lifetime, got.vary, got.script_json) == (
        original.response, original.stored_at, original.lifetime, original.vary, original.script_json)
    assert entry_from_bytes("k", entry_to_bytes(original), now=1_200.0) is None
    for junk in (b"", b"not json\nxx", b'[["m", 5]]\n{}', b'[["m", 99]]\n' + b"x" * 10):
        assert entry_from_bytes("k", junk, now=1_010.0) is None


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_another_process_waits_for_the_holder_and_takes_what_it_left() -> None:
    handoff = WorkerHandoff()
    assert handoff.acquire("key")

    def while_held() -> bytes:
        return repr((handoff.acquire("key"), handoff.locked("key"), handoff.collect("key"))).encode()

    assert in_forked_child(while_held) == b"(False, True, None)"
    handoff.publish("key", b"the entry")
    handoff.publish("other", b"not held: never published")
    handoff.release("key")

    def after() -> bytes:
        return repr((handoff.locked("key"), handoff.collect("key"), handoff.collect("other"))).encode()

    assert in_forked_child(after) == b"(False, b'the entry', None)"


def test_only_small_entries_are_handed_over_and_only_to_their_own_key() -> None:
    handoff = WorkerHandoff()
    assert handoff.acquire("a")
    handoff.publish("a", b"x" * (MAX_SHARED + 1))
    assert handoff.collect("a") is None
    handoff.publish("a", b"small")
    assert handoff.collect("a") == b"small"
    # A key in the same stripe reads the stripe's file, which names another key.
    twin = next(k for k in (f"k{i}" for i in range(100_000)) if handoff._stripe(k) == handoff._stripe("a"))
    assert handoff.collect(twin) is None
    handoff.release("a")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_the_memory_store_takes_over_what_another_worker_stored() -> None:
    clock = [1_000.0]
    cache = memory_cache(lambda: clock[0], WorkerHandoff())
    fresh = entry()

    def worker() -> bytes:  # the holder: stores while holding the key's lock
        token = cache.locks.acquire("k", 5)
        assert token is not None
        cache.keep("k", fresh)
        cache.locks.release("k", token)
        return b"stored"

    assert in_forked_child(worker) == b"stored"
    assert cache.entry("k") is None  # not in this process's own memory
    taken = cache.entry_after_wait("k")
    assert taken is not None and taken.response.body == b'{"a": 1}'
    assert cache.entry("k") is not None  # kept here from now on
    clock[0] += 101
    assert cache.entry("k") is None  # for no longer than its retention


def test_only_the_maker_removes_the_directory() -> None:
    handoff = WorkerHandoff()
    path, finalizer = Path(handoff.path), handoff._finalizer

    def worker_exits() -> bytes:  # what a worker's exit runs: the finaliser it inherited
        finalizer()
        return str(path.is_dir()).encode()

    assert in_forked_child(worker_exits) == b"True"
    assert path.is_dir()
    del handoff
    gc.collect()
    assert not path.exists()


def test_a_worker_that_comes_after_the_fetch_takes_the_handed_over_entry(
        make_config: Callable[..., Config], upstream: UpstreamServer) -> None:
    """Two workers (two apps, each its own memory store, one handoff directory): the second asks
    after the first has fetched and let go of the lock, and still does not ask the upstream."""
    upstream.route("/w", Reply(200, {"w": 1}, {"Content-Type": "application/json"}))
    config = make_config()
    shared = WorkerHandoff()

    def worker() -> Flask:
        store = MemoryStore(1 << 20)
        return create_app(config, cache=Cache(config.cache, store,
                                              locks=LocalLocks(WorkerHandoff(shared.path))))

    first, second = worker(), worker()
    assert "stored" in first.test_client().get("/cors/api/w").headers["Cache-Status"]
    answer = second.test_client().get("/cors/api/w")
    assert answer.status_code == 200 and answer.get_json() == {"w": 1}
    assert answer.headers["Cache-Status"].startswith("jsonp-cors-bridge; hit")
    assert len([s for s in upstream.seen if s.path == "/w"]) == 1
    assert second.test_client().get("/cors/api/w").headers["Cache-Status"].startswith(
        "jsonp-cors-bridge; hit")  # now in the second worker's own memory
    assert len([s for s in upstream.seen if s.path == "/w"]) == 1


def test_without_a_writable_temporary_directory_the_bridge_starts_without_the_handoff(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", "/tmp/jsonp-cors-bridge-handoff-x")

    monkeypatch.setattr("bridge.cache.handoff.tempfile.mkdtemp", refused)
    cache = Cache.from_config(make_config())
    assert isinstance(cache.store, MemoryStore)
    assert isinstance(cache.locks, LocalLocks) and cache.locks.handoff is None
    assert "no worker handoff" in caplog.text and "Permission denied" in caplog.text


def test_an_entry_the_store_deletes_is_not_handed_over_any_more() -> None:
    handoff = WorkerHandoff()
    cache = memory_cache(lambda: 1_000.0, handoff)
    other = WorkerHandoff(handoff.path)  # another worker's view
    token = cache.locks.acquire("k", 5)
    assert token is not None
    cache.keep("k", entry())
    cache.locks.release("k", token)
    assert other.collect("k") is not None
    cache.drop("k")  # e.g. a revalidation answered no-store
    assert other.collect("k") is None
