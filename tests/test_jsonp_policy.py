"""The callback grammar and script-safe JSON, byte for byte."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InvalidCallback, UpstreamInvalidJson
from bridge.policy.jsonp import (
    callback_problem,
    envelope,
    json_depth,
    jsonp_params,
    nests_deeper_than,
    script,
    script_safe_json,
)

VALID = ["jQuery37100123_1700000000000", "__jp0", "YUI.Env.JSONP.yui_3_18_1_1_17",
         "dojo.io.script.jsonp_dojoIoScript1._jsonpCallback", "cb", "$", "_", "$.fn.x", "a1.b2.c3",
         "angular.callbacks._0", "x" * 128]

INVALID = [
    ("", "empty"),
    ("alert(1)", "call"),
    ("alert(1);//", "call-comment"),
    ("cb;alert(1)", "statement"),
    ("a[0]", "brackets"),
    ("a['b']", "string-brackets"),
    ("a.b()", "parens"),
    ("a..b", "empty-segment"),
    (".a", "leading-dot"),
    ("a.", "trailing-dot"),
    ("1abc", "leading-digit"),
    ("a-b", "hyphen"),
    ("a b", "space"),
    ("a\nb", "newline"),
    ("cb\n", "trailing-newline"),
    ("a\u2028b", "line-separator"),
    ("caf\u00e9", "non-ascii-letter"),
    ("\u0430lert", "cyrillic-homoglyph"),
    ("a\\u0062", "unicode-escape"),
    ("a\x00b", "nul"),
    ("<script>", "html"),
    ("/*x*/cb", "comment"),
    ("x" * 129, "over-long"),
    ("this", "this"),
    ("null", "null"),
    ("true", "true"),
    ("function", "function"),
    ("a.delete", "reserved-member"),
    ("a.class", "reserved-future"),
    ("await", "es2017-await"),
    ("let", "es2015-let"),
    ("window.alert", "window"),
    ("self.x", "self"),
    ("top.x", "top"),
    ("parent.x", "parent"),
    ("opener.x", "opener"),
    ("frames.x", "frames"),
    ("document.write", "document"),
    ("location.assign", "location"),
    ("globalThis.x", "globalThis"),
    ("a.constructor.constructor", "constructor"),
    ("Object.prototype.x", "prototype"),
    ("a.__proto__", "proto"),
    ("eval", "eval"),
    ("Function", "Function"),
    ("setTimeout", "setTimeout"),
    ("a.call", "call"),
]


@pytest.mark.parametrize("name", VALID, ids=[v[:40] for v in VALID])
def test_valid_callbacks(name: str) -> None:
    assert callback_problem(name) is None


@pytest.mark.parametrize("name", [i[0] for i in INVALID], ids=[i[1] for i in INVALID])
def test_invalid_callbacks_are_refused(name: str) -> None:
    assert callback_problem(name) is not None


def test_max_length_is_configurable() -> None:
    assert callback_problem("abcdef", max_length=5) is not None
    assert callback_problem("abcde", max_length=5) is None


def test_refusal_never_sanitises() -> None:
    with pytest.raises(InvalidCallback) as caught:
        jsonp_params({"callback": ["alert(1)"]}, "callback", 128)
    assert "alert(1)" not in caught.value.message  # the message never reflects the name


@pytest.mark.parametrize(("args", "code"), [
    ({}, "missing_callback"),
    ({"callback": [""]}, "missing_callback"),
    ({"callback": ["a", "b"]}, "invalid_callback"),
    ({"callback": ["a"], "envelope": ["yes"]}, "bad_request"),
], ids=["missing", "empty", "twice", "bad-envelope"])
def test_control_parameter_errors(args: dict[str, list[str]], code: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        jsonp_params(args, "callback", 128)
    assert caught.value.code == code


def test_escaping_is_byte_exact() -> None:
    body = ('{"h":"</script><!--x-->","a":"x & y","s":"a\u2028b\u2029c",'
            '"n":[1.10,1e400,-0,12345678901234567890123]}')
    text = script_safe_json(body.encode())
    assert text == ('{"h":"\\u003c/script\\u003e\\u003c!--x--\\u003e","a":"x \\u0026 y",'
                    '"s":"a\\u2028b\\u2029c","n":[1.10,1e400,-0,12345678901234567890123]}')
    assert json.loads(text) == json.loads(body)  # the same value, only spelled script-safe
    assert json.loads(text)["h"] == "</script><!--x-->"
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text


def test_non_ascii_text_is_kept_as_utf8() -> None:
    assert script_safe_json('{"name":"Zoë 漢字 🙂"}'.encode()) == '{"name":"Zoë 漢字 🙂"}'


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"a":', b"{'a':1}", b"NaN", b'{"a":Infinity}',
                                  b'{"a":"\x01"}', b"\xff\xfe", b"[" * 100 + b"]" * 100, b"",
                                  b'{"a":1} trailing'],
                         ids=["html", "truncated", "single-quotes", "nan", "infinity", "control-char",
                              "not-utf8", "too-deep", "empty", "trailing-garbage"])
def test_broken_json_is_refused_never_wrapped(body: bytes) -> None:
    with pytest.raises(UpstreamInvalidJson):
        script_safe_json(body)


def test_script_and_envelope_shape() -> None:
    assert script("cb", "[1]") == b"/**/cb([1]);"
    assert envelope(404, {"etag": '"x<"'}, "null") == (
        '{"status":404,"ok":false,"headers":{"etag":"\\"x\\u003c\\""},"data":null}')


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u2028'),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=4),
    max_leaves=30)


@given(value=_json_values, limit=st.integers(min_value=0, max_value=8))
def test_depth_is_counted_outside_strings_only(value: object, limit: int) -> None:
    """Brackets inside strings (escaped quotes and backslashes included) never count; the quick
    bound (fewer opening brackets than the limit) agrees with the full count."""
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert json_depth(text) == _depth(value)
        assert nests_deeper_than(text, limit) == (_depth(value) > limit)


def test_the_readme_callback_patterns_match_the_names_their_clients_send() -> None:
    """Each row of the README's allow_callbacks table: the name is accepted and its pattern matches it."""
    import re
    from pathlib import Path

    from bridge.policy.jsonp import callback_problem, parse_callback_pattern
    rows = re.findall(r"^  \| [^|]+ \| `([^`]+)` \| `([^`]+)` \|$", Path("README.md").read_text(), re.M)
    assert len(rows) >= 7
    for name, pattern in rows:
        assert callback_problem(name) is None, name
        assert parse_callback_pattern(pattern).matches(name), (pattern, name)
        assert not parse_callback_pattern(pattern).matches("x" + name), pattern
