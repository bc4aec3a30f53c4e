"""The three browser engines' own words for a blocked CORS request, and what else differs by engine.

``console_lines(engine, ...)`` is what Chromium, Firefox or WebKit prints in the console for one
``fetch.CorsFailure``, line by line and word for word as each engine printed it on this project's
test machines (Chromium 156, Firefox ESR 153, WebKitGTK 2.50; ``tests/test_explain_engines.py``
holds them to it): Chromium one line (``messages.py``); Firefox one line, and a second for every
failed preflight; WebKit a line of its own reason and then "Fetch API cannot load URL due to access
control checks." ``PAGE_ERRORS`` is what the page's code catches, ``PREFLIGHT_CACHE_CAP`` how long
each engine keeps a preflight's answer at most, and ``engine_of`` reads the engine from a
User-Agent. The checks themselves are ``fetch.py``'s (in Chromium's order); where another engine
reports a different check first (WebKit names a preflight's bad status before anything else), the
wording follows that engine. Text only.
"""

from __future__ import annotations

from .fetch import CorsFailure
from .messages import console_message

ENGINES = ("chromium", "firefox", "webkit")
ENGINE_TITLES = {"chromium": "Chromium (Chrome, Edge, Opera)", "firefox": "Firefox",
                 "webkit": "WebKit (Safari)"}
PAGE_ERRORS = {
    "chromium": "TypeError: Failed to fetch",
    "firefox": "TypeError: NetworkError when attempting to fetch resource.",
    "webkit": "TypeError: Load failed",
}
# Seconds an engine keeps a preflight's answer at most, whatever Access-Control-Max-Age says.
PREFLIGHT_CACHE_CAP = {"chromium": 7200, "firefox": 86400, "webkit": 600}

_ACAO = "\u2018Access-Control-Allow-Origin\u2019"


def engine_of(user_agent: str | None) -> str | None:
    """The engine a User-Agent names, or None. Edge, Opera and every Chrome are Chromium; Safari
    and every browser on iOS (their User-Agent says AppleWebKit without Chrome) are WebKit."""
    ua = user_agent or ""
    if "Firefox/" in ua and "Seamonkey/" not in ua:
        return "firefox"
    if "Chrome/" in ua or "Chromium/" in ua or "CriOS/" in ua:
        return "chromium"
    if "AppleWebKit/" in ua:
        return "webkit"
    return None


def preflight_cache_seconds(engine: str, max_age: int) -> int:
    return min(max_age, PREFLIGHT_CACHE_CAP[engine])


def _firefox(url: str, failure: CorsFailure, status: int | None) -> list[str]:
    def line(reason: str, quoted: bool = False, with_status: bool = False) -> str:
        shown = f"\u2018{url}\u2019" if quoted else url
        text = ("Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote "
                f"resource at {shown}. (Reason: {reason}).")
        return text + (f" Status code: {status}." if with_status else "")

    error = failure.error
    preflight = error.startswith("kPreflight") or error in (
        "kMethodDisallowedByPreflightResponse", "kHeaderDisallowedByPreflightResponse",
        "kInvalidAllowMethodsPreflightResponse", "kInvalidAllowHeadersPreflightResponse")
    kind = "k" + error[len("kPreflight"):] if error.startswith("kPreflight") else error
    if error == "kPreflightDisallowedRedirect":
        lines = [line("CORS request external redirect not allowed"),
                 line("CORS preflight response did not succeed", with_status=True)]
    elif error == "kPreflightInvalidStatus":
        lines = [line("CORS preflight response did not succeed", with_status=True)]
    elif kind == "kMissingAllowOriginHeader":
        lines = [line(f"CORS header {_ACAO} missing", with_status=True)]
    elif kind == "kAllowOriginMismatch":
        lines = [line(f"CORS header {_ACAO} does not match \u2018{failure.hint}\u2019")]
    elif kind == "kWildcardOriginNotAllowed":
        lines = [line(f"Credential is not supported if the CORS header {_ACAO} is \u2018*\u2019",
                      quoted=True)]
    elif kind == "kInvalidAllowCredentials":
        lines = [line("expected \u2018true\u2019 in CORS header "
                      "\u2018Access-Control-Allow-Credentials\u2019")]
    elif kind == "kMultipleAllowOriginValues":
        lines = [line(f"Multiple CORS header {_ACAO} not allowed")]
    elif kind == "kInvalidAllowOriginValue":
        lines = [line(f"CORS header {_ACAO} does not match \u2018{failure.hint}\u2019")]
    elif error == "kMethodDisallowedByPreflightResponse":
        lines = [line("Did not find method in CORS header \u2018Access-Control-Allow-Methods\u2019")]
    elif error == "kHeaderDisallowedByPreflightResponse":
        lines = [line(f"header \u2018{failure.hint.lower()}\u2019 is not allowed according to header "
                      "\u2018Access-Control-Allow-Headers\u2019 from CORS preflight response")]
    elif error == "kInvalidAllowMethodsPreflightResponse":
        lines = [line("invalid token in CORS header \u2018Access-Control-Allow-Methods\u2019")]
    else:
        lines = [line("invalid token in CORS header \u2018Access-Control-Allow-Headers\u2019")]
    if preflight:  # every failed preflight is followed by the request it stopped
        lines.append(line("CORS request did not succeed") + " Status code: (null).")
    return lines


def _webkit(url: str, origin: str, failure: CorsFailure, status: int | None,
            header_names: tuple[str, ...]) -> list[str]:
    error = failure.error
    kind = "k" + error[len("kPreflight"):] if error.startswith("kPreflight") else error
    not_ok = status is None or not 200 <= status < 300
    if error.startswith("kPreflight") and (not_ok or error == "kPreflightDisallowedRedirect"):
        reason = f"Preflight response is not successful. Status code: {status}"
    elif kind in ("kMissingAllowOriginHeader", "kAllowOriginMismatch", "kMultipleAllowOriginValues",
                  "kInvalidAllowOriginValue"):
        reason = f"Origin {origin} is not allowed by Access-Control-Allow-Origin. Status code: {status}"
    elif kind == "kWildcardOriginNotAllowed":
        reason = "Cannot use wildcard in Access-Control-Allow-Origin when credentials flag is true."
    elif kind == "kInvalidAllowCredentials":
        reason = 'Credentials flag is true, but Access-Control-Allow-Credentials is not "true".'
    elif error == "kMethodDisallowedByPreflightResponse":
        reason = f"Method {failure.hint} is not allowed by Access-Control-Allow-Methods."
    elif error == "kHeaderDisallowedByPreflightResponse":
        # WebKit names the header as the page spelled it; the check compares lowercase names.
        spelled = next((name for name in header_names if name.lower() == failure.hint.lower()),
                       failure.hint)
        reason = f"Request header field {spelled} is not allowed by Access-Control-Allow-Headers."
    elif error == "kInvalidAllowMethodsPreflightResponse":
        reason = "Cannot parse Access-Control-Allow-Methods response header field in preflight response."
    else:
        reason = "Cannot parse Access-Control-Allow-Headers response header field in preflight response."
    return [reason, f"Fetch API cannot load {url} due to access control checks."]


def console_lines(engine: str, url: str, origin: str, failure: CorsFailure, status: int | None,
                  header_names: tuple[str, ...] = ()) -> list[str]:
    """The console lines ``engine`` prints when ``fetch(url)`` from ``origin`` fails with
    ``failure``; ``status`` is the status of the answer that failed the check (the preflight's or
    the request's), ``header_names`` the headers the page set, as it spelled them."""
    if engine == "firefox":
        return _firefox(url, failure, status)
    if engine == "webkit":
        return _webkit(url, origin, failure, status, header_names)
    return [console_message(url, origin, failure)]
