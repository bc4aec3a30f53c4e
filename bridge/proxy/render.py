"""What the road sends: an upstream answer or a refusal, shaped for the CORS or the JSONP path.

``Reply`` is status, headers and body as plain values, ready for ``start_response``. On the CORS path an
answer is the upstream's, as data (``nosniff``, a sandboxing CSP, ``application/octet-stream`` when it
names no type), varying by Origin and granted to an allowed origin, errors included; a refused preflight
grants nothing. On the JSONP path it is the script (``/**/cb(JSON);``, RFC 9239 ``text/javascript``),
or with ``envelope=1`` the script whatever happened, the status inside. A cached answer's headers that
are the same on every hit are made once and kept on its entry (memory store only); a hit adds only what
changes per hit (``PER_HIT``: its ``Cache-Status`` member, ``Age``, the grant, the request id, the
length). This module shapes; it decides no policy and asks no upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from werkzeug.http import parse_set_header

from ..cache.entry import pairs_size
from ..cache.status import CacheStatus
from ..errors import BridgeError, error_body, error_headers
from ..policy import jsonp as jsonp_policy
from ..policy.cors import CorsPolicy, response_grant
from ..policy.headers import SAFELISTED_RESPONSE_HEADERS
from ..upstream.message import UpstreamResponse
from .gateway import Answer

# Upstream answer headers worth passing on to a JSONP script; the rest describe the JSON, not it.
# Date goes with Cache-Control and Expires: a stored answer keeps the Date it was made with.
JSONP_PASSED_HEADERS = frozenset({"cache-control", "date", "expires", "last-modified", "cache-status"})
JSONP_CONTENT_TYPE = "text/javascript; charset=utf-8"  # RFC 9239
# A JSONP answer is public data by design, loaded by <script> from any page: one that is
# cross-origin isolated (COEP require-corp) loads it only with this.
JSONP_SCRIPT_HEADERS = (("Content-Type", JSONP_CONTENT_TYPE), ("X-Content-Type-Options", "nosniff"),
                        ("Cross-Origin-Resource-Policy", "cross-origin"))
PROXIED_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
# Stated per answer, never taken from a stored one: the cache's Age replaces the upstream's (RFC 9111
# section 5.1: one Age), and the request id is this request's (an upstream may echo another's).
PER_HIT = frozenset({"age", "x-request-id", "content-length"})
# RFC 9110 section 15.4.5: what a 304 keeps of the answer it stands for (as werkzeug keeps it).
_ENTITY_HEADERS = frozenset({"allow", "content-encoding", "content-language", "content-length",
                             "content-md5", "content-range", "content-type", "last-modified"})


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    error: str = ""  # the bridge's refusal code, for the access record; "" for an upstream's answer
    cache_status: CacheStatus | None = field(default=None)  # the bridge's Cache-Status member
    shared: bool = False  # kept and sent again (a preflight's answer): ``finish`` never changes it


@lru_cache(maxsize=256)
def _vary_adding(vary: str | None, names: tuple[str, ...]) -> str | None:
    """The Vary value with ``names`` added as werkzeug's ``HeaderSet`` writes it; None when it names
    them all already. Computed by werkzeug itself, once per value."""
    present = parse_set_header(vary)
    if all(name in present for name in names):
        return None
    for name in names:
        present.add(name)
    return present.to_header()


def add_vary(headers: list[tuple[str, str]], *names: str) -> None:
    """Name ``names`` in the Vary field (as one line), keeping what it named before."""
    values = [v for k, v in headers if k.lower() == "vary"]
    new = _vary_adding(", ".join(values) if values else None, names)
    if new is not None:
        headers[:] = [(k, v) for k, v in headers if k.lower() != "vary"]
        headers.append(("Vary", new))


def _set(headers: list[tuple[str, str]], name: str, value: str) -> None:
    lowered = name.lower()
    headers[:] = [(k, v) for k, v in headers if k.lower() != lowered]
    headers.append((name, value))


def finish(reply: Reply, method: str, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body that go on the wire: the request id, and the length of the body (sent
    for HEAD as for GET). RFC 9110: 1xx, 204 and 304 have no body and no Content-Length; a 304
    carries no entity headers but Expires and Content-Location (as werkzeug keeps them)."""
    status = reply.status
    if status == 304:
        headers = [(k, v) for k, v in reply.headers if k.lower() not in _ENTITY_HEADERS]
    elif reply.shared:
        headers = list(reply.headers)
    else:
        headers = reply.headers  # made for this request alone
    headers.append(("X-Request-ID", request_id))
    if status < 200 or status in (204, 304):
        return headers, b""
    body = reply.body
    headers.append(("Content-Length", str(len(body))))
    return headers, b"" if method == "HEAD" else body


# --- the CORS path ---


def proxied_headers(response: UpstreamResponse) -> list[tuple[str, str]]:
    """The CORS path's headers for an upstream answer that are the same for every request: whatever
    the upstream sends is data, never a page on the bridge's origin (an upstream that reflects input
    into HTML must not become an XSS on the bridge)."""
    headers = [(k, v) for k, v in response.headers if k.lower() not in PER_HIT]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/octet-stream"))
    _set(headers, "X-Content-Type-Options", "nosniff")
    _set(headers, "Content-Security-Policy", PROXIED_CSP)
    add_vary(headers, "Origin")
    return headers


def cors_answer(answer: Answer, policy: CorsPolicy, origin: str | None, keep: bool) -> Reply:
    """An upstream answer on the CORS path (``keep``: an entry may keep its unchanging headers)."""
    response = answer.response
    headers = list(_unchanging(answer, "cors_headers", proxied_headers, keep))
    _add_cache_fields(headers, answer)
    if origin is not None:
        headers.extend(response_grant(policy, origin))
    return Reply(response.status, headers, response.body, cache_status=answer.cache_status)


def cors_error(error: BridgeError, policy: CorsPolicy, origin: str | None) -> Reply:
    """A refusal on the CORS path: readable by an allowed origin, so a page can see why."""
    headers = error_headers(error)
    add_vary(headers, "Origin")
    if origin is not None:
        headers.extend(response_grant(policy, origin))
    return Reply(error.status, headers, error_body(error), error.code)


def preflight_answer(status: int, verdict_headers: Iterable[tuple[str, str]]) -> Reply:
    """A granted preflight's answer, the same for every preflight of its shape (the road keeps it)."""
    headers = list(verdict_headers)
    add_vary(headers, "Access-Control-Request-Method", "Access-Control-Request-Headers", "Origin")
    return Reply(status, headers, shared=True)


def preflight_error(error: BridgeError) -> Reply:
    """A refused preflight: no Access-Control-* header at all."""
    headers = error_headers(error)
    add_vary(headers, "Origin")
    return Reply(error.status, headers, error_body(error), error.code)


# --- the JSONP path ---


def jsonp_static_headers(response: UpstreamResponse) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in response.headers if k.lower() in JSONP_PASSED_HEADERS]
    headers += JSONP_SCRIPT_HEADERS
    return headers


def jsonp_answer(answer: Answer, params: jsonp_policy.JsonpParams, policy: CorsPolicy,
                 max_json_depth: int, keep: bool) -> Reply:
    """An upstream answer as a script; with ``envelope`` always 200, its status and the headers a
    CORS page could read inside. UpstreamInvalidJson when the answer is not JSON."""
    response = answer.response
    status = response.status
    body_json = answer.script_json(
        lambda body: jsonp_policy.script_safe_json(body, max_json_depth) if body.strip() else "null")
    if params.envelope:
        cached = [(k, v) for k, v in response.headers if k.lower() not in PER_HIT]
        _add_cache_fields(cached, answer)
        wrapped = jsonp_policy.envelope(status, envelope_headers(cached, policy), body_json)
        status = 200
    else:
        wrapped = body_json
    headers = list(_unchanging(answer, "jsonp_headers", jsonp_static_headers, keep))
    _add_cache_fields(headers, answer)
    return Reply(status, headers, jsonp_policy.script(params.callback, wrapped),
                 cache_status=answer.cache_status)


def envelope_headers(headers: Iterable[tuple[str, str]], policy: CorsPolicy) -> dict[str, str]:
    """The headers a CORS page could read: the safelisted ones and those the policy exposes."""
    readable = SAFELISTED_RESPONSE_HEADERS | policy.expose_headers_lower
    return {name.lower(): value for name, value in headers if name.lower() in readable}


def jsonp_error(error: BridgeError, params: jsonp_policy.JsonpParams | None) -> Reply:
    """A refusal on the JSONP path: its JSON error (``nosniff``: a script tag never runs it), or in
    envelope mode a script that runs, with the error's status and headers inside."""
    if params is None or not params.envelope:
        return Reply(error.status, error_headers(error), error_body(error), error.code)
    data = jsonp_policy.script_safe_dumps(error.body())
    inside = {name.lower(): value for name, value in error.headers}
    inside["content-type"] = "application/json"
    script = jsonp_policy.script(params.callback, jsonp_policy.envelope(error.status, inside, data))
    headers = [*JSONP_SCRIPT_HEADERS, ("Cache-Control", "no-store")]
    return Reply(200, headers, script, error.code)


# --- what an entry keeps ---


def _add_cache_fields(headers: list[tuple[str, str]], answer: Answer) -> None:
    """This answer's Cache-Status member, after the upstream's own (RFC 9211: nearest the user
    last), and the cache's Age."""
    if answer.cache_status:
        headers.append(("Cache-Status", answer.cache_status.text))
    if answer.age is not None:
        headers.append(("Age", str(answer.age)))
    elif (age := answer.response.header("age")) is not None:
        headers.append(("Age", age))  # not from the cache: the upstream's own stands


def _unchanging(answer: Answer, slot: str, make: Callable[[UpstreamResponse], list[tuple[str, str]]],
                keep: bool) -> tuple[tuple[str, str], ...] | list[tuple[str, str]]:
    """``make(response)``: the headers of an answer that are the same on every request. For an
    answer from an entry they are made once and kept in ``slot`` of the entry when ``keep``; what
    is kept counts in the entry's size, re-accounted by the store as when it gains its script JSON,
    so the memory bound holds what is kept, not only the body."""
    entry = answer.entry
    if entry is None:
        return make(answer.response)
    kept: tuple[tuple[str, str], ...] | None = getattr(entry, slot)
    if kept is None:
        kept = tuple(make(entry.response))
        if keep:
            setattr(entry, slot, kept)
            entry.size += pairs_size(kept)
            answer.renew_entry()
    return kept
