"""What a browser prints when it blocks a CORS request: Chromium's console wording, word for word.

``error_reason`` is the part of Chromium's console line after "blocked by CORS policy: " for each
``fetch.CorsFailure`` (its ``cors_error_string.cc``), and ``console_message`` the whole line, so that
``/explain``'s prediction can be compared with what the browser really prints. Text only: which
failure happened is ``fetch.py``'s to decide.
"""

from __future__ import annotations

from .fetch import CorsFailure

# Chromium's advice after a bad Access-Control-Allow-Origin value (as of Chromium 156, which no
# longer suggests mode 'no-cors'); the tests compare every message with the browser's own.
_VALID_VALUE = " Have the server send the header with a valid value."


def error_reason(failure: CorsFailure) -> str:
    """Chromium's words for a failure of fetch(), after "has been blocked by CORS policy: "."""
    error, hint = failure.error, failure.hint
    prefix = ""
    if error.startswith("kPreflight") and error not in ("kPreflightDisallowedRedirect",
                                                        "kPreflightInvalidStatus"):
        error = "k" + error[len("kPreflight"):]
    if failure.error.startswith("kPreflight"):
        prefix = "Response to preflight request doesn't pass access control check: "
    text = {
        "kMissingAllowOriginHeader":
            "No 'Access-Control-Allow-Origin' header is present on the requested resource.",
        "kWildcardOriginNotAllowed":
            "The value of the 'Access-Control-Allow-Origin' header in the response must not be the "
            "wildcard '*' when the request's credentials mode is 'include'.",
        "kMultipleAllowOriginValues":
            f"The 'Access-Control-Allow-Origin' header contains multiple values '{hint}', but only "
            "one is allowed." + _VALID_VALUE,
        "kInvalidAllowOriginValue":
            f"The 'Access-Control-Allow-Origin' header contains the invalid value '{hint}'."
            + _VALID_VALUE,
        "kAllowOriginMismatch":
            f"The 'Access-Control-Allow-Origin' header has a value '{hint}' that is not equal to the "
            "supplied origin." + _VALID_VALUE,
        "kInvalidAllowCredentials":
            f"The value of the 'Access-Control-Allow-Credentials' header in the response is '{hint}' "
            "which must be 'true' when the request's credentials mode is 'include'.",
        "kPreflightInvalidStatus": "It does not have HTTP ok status.",
        "kPreflightDisallowedRedirect": "Redirect is not allowed for a preflight request.",
        "kInvalidAllowMethodsPreflightResponse":
            "Cannot parse Access-Control-Allow-Methods response header field in preflight response.",
        "kInvalidAllowHeadersPreflightResponse":
            "Cannot parse Access-Control-Allow-Headers response header field in preflight response.",
        "kMethodDisallowedByPreflightResponse":
            f"Method {hint} is not allowed by Access-Control-Allow-Methods in preflight response.",
        "kHeaderDisallowedByPreflightResponse":
            f"Request header field {hint} is not allowed by Access-Control-Allow-Headers in "
            "preflight response.",
    }[error]
    return prefix + text


def console_message(url: str, origin: str, failure: CorsFailure) -> str:
    return (f"Access to fetch at '{url}' from origin '{origin}' has been blocked by CORS policy: "
            f"{error_reason(failure)}")
