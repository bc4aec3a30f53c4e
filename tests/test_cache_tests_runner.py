"""``make cache-tests``' scoring, without the suite: a made-up suite of four tests read by the same
metadata dump (``suite_meta.mjs``, under node), then counted, rendered and refused as the run does."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bench.cache_tests import run

SUITE_INDEX = textwrap.dedent("""
    export default [{
      id: 'freshness', name: 'Freshness',
      tests: [
        { id: 'fresh', name: 'reuses a fresh answer', requests: [{}, {}] },
        { id: 'vary', name: 'keys on Vary', depends_on: ['fresh'],
          requests: [{ request_headers: [['Foo', '1'], ['Authorization', 'x']] },
                     { request_method: 'POST', request_headers: [['foo', '2'], ['Bar', '1']] }] },
        { id: 'nice', name: 'an optimal one', kind: 'optimal', requests: [{}] },
        { id: 'browser', name: 'a browser cache only', browser_only: true, requests: [{}] }
      ]
    }]
""")
RESULTS_INDEX = textwrap.dedent("""
    export default [
      { file: 'chrome.json', name: 'Chrome', type: 'browser', version: '1' },
      { file: 'good.json', name: 'Good', type: 'rev-proxy', version: '2.0' },
      { file: 'cdn.json', name: 'Acdn', type: 'cdn', version: '2025' }
    ]
""")


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    suite = tmp_path_factory.mktemp("suite")
    (suite / "tests").mkdir()
    (suite / "results").mkdir()
    (suite / "tests" / "index.mjs").write_text(SUITE_INDEX)
    (suite / "results" / "index.mjs").write_text(RESULTS_INDEX)
    out = subprocess.run(["node", str(run.HERE / "suite_meta.mjs"), str(suite)], check=True,
                         capture_output=True, text=True).stdout
    meta: dict[str, Any] = json.loads(out)
    return meta


def test_the_dump_carries_what_scoring_needs(meta: dict[str, Any]) -> None:
    tests = {t.id: t for t in run.load_tests(meta)}
    assert tests["vary"].request_headers == ("Authorization", "Bar", "Foo", "foo")
    assert tests["vary"].depends_on == ("fresh",)
    assert tests["nice"].kind == "optimal" and tests["fresh"].kind == "required"
    assert [t.id for t in run.counted_tests(list(tests.values()))] == ["fresh", "vary"]
    assert [i["name"] for i in meta["implementations"]] == ["Chrome", "Good", "Acdn"]


def test_a_test_counts_by_its_own_result_only(meta: dict[str, Any]) -> None:
    tests = run.load_tests(meta)
    # "vary" depends on "fresh", which failed: its own pass still counts (the suite's rows honour
    # dependencies, the count asked for here does not).
    results = {"fresh": ["Assertion", "Response 2 does not come from cache"], "vary": True, "nice": False}
    assert run.passed(tests, results) == 1
    [fail] = run.failures(tests, results)
    assert (fail.suite, fail.id, fail.message) == (
        "freshness", "fresh", "Assertion: Response 2 does not come from cache")
    # Only true is a pass; a setup failure, false or a missing result is not.
    assert run.passed(tests, {"fresh": ["Setup", "x"], "vary": False}) == 0
    assert run.missing_results(tests, {"fresh": True}) == ["vary"]


def test_the_bridge_comes_first_then_the_published_best_first(meta: dict[str, Any]) -> None:
    tests = run.load_tests(meta)
    published = {"good.json": {"fresh": True, "vary": True}, "cdn.json": {"fresh": True}}
    rows = run.scores(tests, ("abc1234", {"fresh": True}), meta["implementations"], published)
    assert [(r.name, r.passed, r.of) for r in rows] == [
        ("jsonp-cors-bridge", 1, 2), ("Good", 2, 2), ("Acdn", 1, 2)]  # no browser row
    text = run.render(rows, run.failures(tests, {"fresh": True}), "b" * 40)
    assert "jsonp-cors-bridge  abc1234  bridge       1 / 2" in text
    assert "  freshness\n    vary: no result" in text


def test_forwarded_headers_are_the_harness_and_the_tests_less_credentials(meta: dict[str, Any]) -> None:
    names = run.forward_headers(run.load_tests(meta))
    assert names == [*run.HARNESS_HEADERS, "Bar", "Foo"]  # "foo" is Foo; Authorization never


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_the_suite_is_found_at_its_commit_or_refused_with_the_commands(tmp_path: Path) -> None:
    missing = run.suite_problem(tmp_path / "nowhere", run.SUITE_COMMIT)
    assert missing is not None and f"git clone {run.SUITE_URL} {tmp_path / 'nowhere'}" in missing
    assert f"checkout {run.SUITE_COMMIT}" in missing

    clone = tmp_path / "clone"
    clone.mkdir()
    git(clone, "init", "-q")
    (clone / "package.json").write_text("{}")
    git(clone, "add", "package.json")
    git(clone, "commit", "-q", "-m", "pinned")
    pinned = git(clone, "rev-parse", "HEAD")
    wrong = run.suite_problem(clone, run.SUITE_COMMIT)
    assert wrong is not None and f"fetch {run.SUITE_URL} {run.SUITE_COMMIT}" in wrong
    assert run.suite_problem(clone, pinned) is None

    # What runs is the commit, not the work tree: a local change after it is not in the copy.
    (clone / "package.json").write_text('{"changed": true}')
    (tmp_path / "copy").mkdir()
    run.unpack_suite(clone, pinned, tmp_path / "copy" / "suite")
    assert (tmp_path / "copy" / "suite" / "package.json").read_text() == "{}"
