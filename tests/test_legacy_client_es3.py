"""legacy-client.js parses as ES3 (acorn, ecmaVersion 3) and uses no ES5 built-in unguarded.

``legacy_client/check-es3.js`` runs in node; acorn comes from ``legacy_client/package-lock.json``
(``make test`` runs ``npm ci`` first). The bad-snippet table proves the checker can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent / "legacy_client"
LIBRARY = CLIENT_DIR / "legacy-client.js"
CHECKER = CLIENT_DIR / "check-es3.js"


def _missing(what: str, how: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI: {how}")
    pytest.skip(f"{what} is missing: {how}")


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        _missing("node", "install Node.js (Debian's nodejs package)")
    assert path is not None
    if not (CLIENT_DIR / "node_modules" / "acorn" / "package.json").is_file():
        _missing("acorn", "run `make test`, or `cd legacy_client && npm ci`")
    return path


def es3_check(node: str, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(CHECKER), "-"], input=source, capture_output=True, text=True,
                          cwd=CLIENT_DIR, timeout=60, check=False)


def test_library_is_es3(node: str) -> None:
    result = subprocess.run([node, str(CHECKER), str(LIBRARY)], capture_output=True, text=True,
                            cwd=CLIENT_DIR, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def test_acorn_is_the_pinned_version(node: str) -> None:
    result = subprocess.run([node, "-p", "require('acorn').version"], capture_output=True, text=True,
                            cwd=CLIENT_DIR, timeout=60, check=True)
    assert result.stdout.strip() == "8.15.0"


@pytest.mark.parametrize(("snippet", "complaint"), [
    ("p.catch(f);", "Unexpected keyword 'catch'"),
    ("delete o.x; o.delete(1);", "Unexpected keyword 'delete'"),
    ("var d = m.default;", "Unexpected keyword 'default'"),
    ("var o = {default: 1};", "Unexpected keyword 'default'"),
    ("var o = {class: 1};", "The keyword 'class' is reserved"),
    ("var o = {a: 1,};", "not ES3"),
    ("f(a, b,);", "not ES3"),
    ("var a = [1, 2,];", "trailing comma in an array literal"),
    ("let x = 1;", "not ES3"),
    ("const x = 1;", "not ES3"),
    ("var o = {get x() { return 1; }};", "not ES3"),
    ("var f = (a) => a;", "not ES3"),
    ("var s = `template`;", "not ES3"),
    ("a.forEach(f);", "ES5 built-in .forEach"),
    ("var k = Object.keys(o);", "ES5 built-in .keys"),
    ("var g = f.bind(o);", "ES5 built-in .bind"),
    ("var t = s.trim();", "ES5 built-in .trim"),
    ("var n = Date.now();", "ES5 built-in .now"),
    ("var v = JSON.parse(s);", "bare global JSON"),
    ("var p = new Promise(f);", "bare global Promise"),
], ids=["dot-catch", "dot-delete", "dot-default", "key-default", "key-class", "object-trailing-comma",
        "call-trailing-comma", "array-trailing-comma", "let", "const", "getter", "arrow", "template",
        "forEach", "Object.keys", "bind", "trim", "Date.now", "bare-JSON", "bare-Promise"])
def test_checker_rejects(node: str, snippet: str, complaint: str) -> None:
    result = es3_check(node, snippet)
    assert result.returncode == 1, result.stdout
    assert complaint in result.stdout


@pytest.mark.parametrize("snippet", [
    "var o = {'default': 1}; var d = o['default']; p['catch'](f);",
    "var json = window.JSON; if (json && json.parse) { json.parse('1'); }",
    "var P = window.Promise; var x = [1, 2]; var h = {a: 1, b: [3]};",
    "var s = 'a,b'.split(','); var i = 'abc'.indexOf('b');",
], ids=["quoted-reserved-words", "guarded-JSON", "guarded-Promise", "ES3-string-methods"])
def test_checker_accepts_es3(node: str, snippet: str) -> None:
    result = es3_check(node, snippet)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "ok"


RESERVED_PROPERTY = re.compile(
    r"\.\s*(break|case|catch|continue|default|delete|do|else|finally|for|function|if|in|instanceof|new|"
    r"return|switch|this|throw|try|typeof|var|void|while|with|class|const|enum|export|extends|import|"
    r"super)\b")


def test_no_reserved_word_property_access_in_the_text() -> None:
    """Belt and braces beside acorn, on the text with comments and strings removed."""
    code = LIBRARY.read_text(encoding="utf-8")
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", code, flags=re.DOTALL)
    code = re.sub(r"'(?:[^'\\\n]|\\.)*'", "''", code)
    found = [m.group(0) for m in RESERVED_PROPERTY.finditer(code)]
    assert found == []
    assert RESERVED_PROPERTY.search("promise.catch(f)")  # the pattern itself can match
