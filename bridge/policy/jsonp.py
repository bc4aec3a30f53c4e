"""JSONP as pure functions: the callback grammar, script-safe JSON, the script and its envelope.

A callback name is validated against a grammar and refused when it does not fit; it is never
"sanitised" by deleting characters, because a name that needed changing was not written by a JSONP
client. The JSON is checked (strict RFC 8259: no NaN, no control characters in strings, UTF-8) and then
made script-safe by escaping, inside strings, the only characters that need it: ``<``, ``>`` and ``&``
(so the text is inert in HTML: no ``</script>``, no ``<!--``) and U+2028/U+2029 (line terminators in
ES3-ES2018 string literals). These characters can only occur inside JSON strings, so escaping them in
the text keeps every number and every string exactly as the upstream wrote it. This module does no I/O
and knows nothing about Flask.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from ..errors import InvalidCallback, UpstreamInvalidJson

# ES3 keywords and future reserved words, the ES5 and ES2015+ additions (strict mode and modules
# included), and the literals that cannot be called.
RESERVED_WORDS = frozenset("""
    break case catch continue default delete do else finally for function if in instanceof new return
    switch this throw try typeof var void while with
    abstract boolean byte char class const debugger double enum export extends final float goto
    implements import int interface long native package private protected public short static super
    synchronized throws transient volatile
    let yield await async arguments null true false undefined NaN Infinity
""".split())
# Segments that reach the window, the document, navigation or code evaluation: a callback made of
# these turns the upstream's data into an action (``location.assign``, ``setTimeout`` of a string).
DANGEROUS_NAMES = frozenset("""
    window self top parent opener frames document location globalThis constructor prototype
    __proto__ __defineGetter__ __defineSetter__ __lookupGetter__ __lookupSetter__ eval Function
    setTimeout setInterval setImmediate execScript importScripts globalEval getScript parseHTML
    postMessage open close write
    writeln call apply bind navigate assign replace reload alert confirm prompt print
    localStorage sessionStorage indexedDB cookie domain history navigator
""".split())
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*", re.ASCII)
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9_$*]+", re.ASCII)
DEFAULT_MAX_LENGTH = 128
# The JSONP path's own query parameters, with the configured callback parameter: never forwarded.
CONTROL_PARAMS = frozenset({"_", "envelope"})

_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                   "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NEEDS_ESCAPE = re.compile("[<>&\u2028\u2029]")
# A JSON string, written as "unrolled loop" (runs of plain characters between escapes), not as an
# alternation per character: the regex engine takes a run at a time.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class CallbackPattern:
    """One ``[jsonp] allow_callbacks`` pattern: dot-separated segments, where ``*`` stands for any
    run of identifier characters within one segment (never a dot), anchored at both ends."""

    text: str
    matcher: re.Pattern[str]

    def matches(self, name: str) -> bool:
        return self.matcher.fullmatch(name) is not None


def parse_callback_pattern(text: str) -> CallbackPattern:
    """``jQuery*``, ``angular.callbacks.*``, ``my.ns.cb``; ValueError saying what would do."""
    segments = text.split(".")
    if not all(_PATTERN_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError(f"{text!r} is not a callback pattern: use dot-separated names of letters, "
                         "digits, '_' and '$', with '*' for any run of them within one segment")
    regex = r"\.".join("[A-Za-z0-9_$]*".join(re.escape(p) for p in s.split("*")) for s in segments)
    return CallbackPattern(text, re.compile(regex, re.ASCII))


def callback_problem(name: str, max_length: int = DEFAULT_MAX_LENGTH,
                     allowed: tuple[CallbackPattern, ...] | None = None) -> str | None:
    """Why ``name`` is not an acceptable callback, or None when it is.

    Accepted: one or more dot-separated ASCII identifiers, none of them a reserved word or a name
    that reaches the DOM or code evaluation, at most ``max_length`` characters in all, and, when
    ``allowed`` is given (``[jsonp] allow_callbacks``), matching one of its patterns: the allowlist
    narrows the grammar, it never lets a refused name through.
    """
    if not name:
        return "the callback name is empty"
    if len(name) > max_length:
        return f"the callback name is longer than {max_length} characters"
    for segment in name.split("."):
        if not _IDENTIFIER.fullmatch(segment):
            return ("the callback name must be dot-separated identifiers of ASCII letters, digits, "
                    "'_' and '$' (such as jQuery123_456 or app.cb), with no brackets or spaces")
        if segment in RESERVED_WORDS:
            return f"the callback name uses the reserved word {segment!r}"
        if segment in DANGEROUS_NAMES:
            return f"the callback name may not use {segment!r}"
    if allowed is not None and not any(p.matches(name) for p in allowed):
        return ("the callback name matches none of this bridge's allowed callback patterns ("
                + " ".join(p.text for p in allowed) + ")")
    return None


def check_callback(name: str, max_length: int = DEFAULT_MAX_LENGTH,
                   allowed: tuple[CallbackPattern, ...] | None = None) -> str:
    """Return ``name`` unchanged, or raise InvalidCallback saying what to change."""
    problem = callback_problem(name, max_length, allowed)
    if problem is not None:
        raise InvalidCallback(problem)
    return name


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in (valid) JSON text, strings ignored."""
    brackets = _BRACKETS.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    return max(accumulate(1 if c in "[{" else -1 for c in brackets))


def nests_deeper_than(text: str, max_depth: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``max_depth``. Text with no more opening
    brackets than that cannot, and counting them is C-speed (``json_depth`` was three times the cost
    of parsing a 2 KB answer)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    return json_depth(text) > max_depth


def script_safe_json(body: bytes, max_depth: int = 64) -> str:
    """Check that ``body`` is JSON and return its text made safe to embed in a script.

    Raises UpstreamInvalidJson (a 502) for anything that is not strict JSON in UTF-8; the raw body is
    never wrapped as it is.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UpstreamInvalidJson("the upstream's answer is not UTF-8 text") from None
    if nests_deeper_than(text, max_depth):
        raise UpstreamInvalidJson(f"the upstream's JSON nests deeper than {max_depth} levels")
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise UpstreamInvalidJson("the upstream's answer is not valid JSON") from None
    text = text.strip(" \t\r\n")
    if _NEEDS_ESCAPE.search(text):
        text = _NEEDS_ESCAPE.sub(lambda m: _SCRIPT_ESCAPES[m.group()], text)
    return text


def script_safe_dumps(value: object) -> str:
    """Serialise a Python value to script-safe JSON (for envelopes and bridge errors)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _NEEDS_ESCAPE.sub(lambda m: _SCRIPT_ESCAPES[m.group()], text)


def script(callback: str, json_text: str) -> bytes:
    """The JSONP script. The ``/**/`` prefix keeps the first bytes from ever being read as another
    content type (the Rosetta Flash attack relied on a callback-controlled start of the body)."""
    return f"/**/{callback}({json_text});".encode()


@dataclass(frozen=True)
class JsonpParams:
    callback: str
    envelope: bool


def jsonp_params(args: Mapping[str, list[str]], callback_param: str, max_length: int,
                 allowed: tuple[CallbackPattern, ...] | None = None) -> JsonpParams:
    """Read the control parameters from the query (``args`` maps a name to all its values)."""
    callbacks = args.get(callback_param, [])
    if len(callbacks) > 1:
        raise InvalidCallback(f"give the {callback_param} parameter once, not {len(callbacks)} times")
    if not callbacks or not callbacks[0]:
        raise InvalidCallback(f"the {callback_param} parameter is missing: add "
                              f"?{callback_param}=yourFunction to the url",
                              code="missing_callback")
    envelopes = args.get("envelope", [])
    if len(envelopes) > 1:
        raise InvalidCallback("give the envelope parameter once", code="bad_request")
    envelope_text = envelopes[0] if envelopes else ""
    if envelope_text not in {"", "0", "1", "true", "false"}:
        raise InvalidCallback("envelope must be 1 or 0", code="bad_request")
    return JsonpParams(check_callback(callbacks[0], max_length, allowed), envelope_text in {"1", "true"})


@lru_cache(maxsize=1024)
def params_of(pairs: tuple[tuple[str, str], ...], callback_param: str, max_length: int,
              allowed: tuple[CallbackPattern, ...] | None = None) -> JsonpParams:
    """``jsonp_params`` of a query's decoded pairs, remembered for recent queries (a refusal is
    raised, never remembered)."""
    args: dict[str, list[str]] = {}
    for key, value in pairs:
        args.setdefault(key, []).append(value)
    return jsonp_params(args, callback_param, max_length, allowed)


def envelope(status: int, headers: Mapping[str, str], data_json: str) -> str:
    """The envelope argument: what a CORS page would see, as one script-safe JSON object."""
    return (f'{{"status":{int(status)},"ok":{"true" if 200 <= status < 300 else "false"},'
            f'"headers":{script_safe_dumps(dict(headers))},"data":{data_json}}}')
