"""One error hierarchy for every refusal the bridge makes, rendered to JSON at one boundary.

The pieces (config, upstream client, CORS and JSONP policy, cache) raise these typed errors; the views
never build error bodies themselves. ``error_body`` and ``error_response`` turn them into
``{"error": code, "message": ...}`` with the right status and headers. Which extra headers a path adds
(CORS grants, JSONP envelopes) is the views' business, not this module's.
"""

from __future__ import annotations

import json

from flask import Response


class BridgeError(Exception):
    """A refusal with an HTTP status, a stable machine-readable code and a message for a person."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: tuple[tuple[str, str], ...] = (),
                 code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class BadRequest(BridgeError):
    status, code = 400, "bad_request"


class InvalidPath(BadRequest):
    code = "invalid_path"


class InvalidCallback(BadRequest):
    code = "invalid_callback"


class Unauthorized(BridgeError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=(("WWW-Authenticate", 'Bearer realm="jsonp-cors-bridge"'),))


class Forbidden(BridgeError):
    status, code = 403, "forbidden"


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class JsonpDisabled(Forbidden):
    code = "jsonp_disabled"


class UnknownApi(BridgeError):
    status, code = 404, "unknown_api"


class MethodNotAllowed(BridgeError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, allowed: frozenset[str] | tuple[str, ...]) -> None:
        super().__init__(message, headers=(("Allow", ", ".join(sorted(allowed))),))


class PayloadTooLarge(BridgeError):
    status, code = 413, "payload_too_large"


class UriTooLong(BridgeError):
    status, code = 414, "uri_too_long"


class HeadersTooLarge(BridgeError):
    status, code = 431, "headers_too_large"


class RateLimited(BridgeError):
    status, code = 429, "rate_limited"


class UpstreamError(BridgeError):
    """The upstream could not give a usable answer: the bridge's fault to report, not the client's."""

    status, code = 502, "upstream_error"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTooLarge(UpstreamError):
    code = "upstream_too_large"


class UpstreamInvalidJson(UpstreamError):
    code = "upstream_invalid_json"


class UpstreamRedirect(UpstreamError):
    code = "upstream_redirect_refused"


class UpstreamAddressRefused(UpstreamError):
    code = "upstream_address_refused"


class UpstreamTimeout(BridgeError):
    status, code = 504, "upstream_timeout"


class NotFound(BridgeError):
    status, code = 404, "not_found"


class InternalError(BridgeError):
    """A bug in the bridge: answered in the JSON shape, with the traceback in the log only."""

    status, code = 500, "internal_error"


def error_body(error: BridgeError) -> bytes:
    return json.dumps(error.body()).encode()


def error_headers(error: BridgeError) -> list[tuple[str, str]]:
    """The headers of every refusal: JSON, never stored, never sniffed into something that runs
    (a JSON error on the JSONP path is loaded by a script tag), then the error's own."""
    return [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"), *error.headers]


def error_response(error: BridgeError) -> Response:
    """The refusal as a Flask response, for the routes Flask serves."""
    return Response(error_body(error), status=error.status, headers=error_headers(error))
