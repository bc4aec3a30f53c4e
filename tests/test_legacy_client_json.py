"""legacy-client.js's own JSON reader and writer, used where the browser has no ``window.JSON``.

They run in Chromium against its native JSON as the reference: every valid text must read the same,
every invalid one must be refused by both, and what the writer writes must read back the same.
One page for the whole module (no network: the library is injected as text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

LIBRARY = Path(__file__).resolve().parent.parent / "legacy_client" / "legacy-client.js"

COMPARE = """text => {
  const outcome = fn => { try { return {ok: true, value: fn(text)}; } catch (e) { return {ok: false,
    kind: e.name}; } };
  return {native: outcome(JSON.parse), fallback: outcome(LegacyBridge.fallbackJson.parse)};
}"""


@pytest.fixture(scope="module")
def library_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.add_script_tag(content=LIBRARY.read_text(encoding="utf-8"))
    yield page
    context.close()


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    '[]', '{}', '  [ 1 , 2 ]  ', '"just a string"', '0', '-0.5e-3', '1E+2', '123456789012345',
    r'"\u00e9\u2028\ud83d\ude00 \" \\ \/ \b\f\n\r\t"',
    '"ü 😀 </script>"',
    '{"a": {"a": {"a": [[[[1]]]]}}}',
    '{"dup": 1, "dup": 2}',
], ids=["mixed", "empty-array", "empty-object", "spaces", "string", "zero", "small-float", "exponent",
        "big-int", "escapes", "raw-unicode", "nested", "duplicate-key"])
def test_fallback_reads_what_native_json_reads(library_page: Any, text: str) -> None:
    result = library_page.evaluate(COMPARE, text)
    assert result["native"]["ok"] and result["fallback"] == result["native"]


@pytest.mark.parametrize("text", [
    "", " ", "{", "[1,]", '{"a":1,}', "{a: 1}", "{'a': 1}", "'single'", "01", "1.", ".5", "+1", "0x10",
    "NaN", "Infinity", "-Infinity", "undefined", "tru", "nul", '"unterminated', '"tab\there"',
    '"new\nline"', r'"\x41"', r'"\u12"', "[1] [2]", "1 2", "/* c */ 1", "alert(1)",
], ids=["empty", "space", "open-brace", "array-trailing-comma", "object-trailing-comma", "bare-key",
        "single-quoted-key", "single-quoted-string", "leading-zero", "dot-end", "dot-start", "plus",
        "hex", "NaN", "Infinity", "minus-Infinity", "undefined", "tru", "nul", "unterminated",
        "raw-tab", "raw-newline", "x-escape", "short-u-escape", "two-values", "two-numbers", "comment",
        "code"])
def test_fallback_refuses_what_native_json_refuses(library_page: Any, text: str) -> None:
    result = library_page.evaluate(COMPARE, text)
    assert result["native"] == {"ok": False, "kind": "SyntaxError"}
    assert result["fallback"] == {"ok": False, "kind": "SyntaxError"}


@pytest.mark.parametrize("expression", [
    "({a: 1, b: [true, null, 'x'], c: {d: -1.5}})",
    "['\\u2028 \\u0000 \\u001f \" \\\\ é 😀']",
    "({skip: undefined, fn: function () {}, keep: 0, list: [undefined, function () {}]})",
    "({nan: NaN, inf: Infinity})",
    "({when: {toJSON: function () { return 'then'; }}})",
    "'plain'", "42", "null",
], ids=["nested", "escapes", "undefined-and-functions", "non-finite", "toJSON", "string", "number", "null"])
def test_fallback_writes_what_native_json_writes(library_page: Any, expression: str) -> None:
    """The same value, read back by the native parser (the fallback also escapes U+2028/2029)."""
    native, fallback = library_page.evaluate(
        f"(() => {{ const v = {expression}; "
        "const ours = LegacyBridge.fallbackJson.stringify(v); "
        "return [JSON.stringify(v), JSON.stringify(JSON.parse(ours))]; })()")
    assert fallback == native
