"""Firefox ESR (Debian's ``firefox-esr``) driven over WebDriver BiDi, the W3C protocol Firefox speaks
natively: one headless browser per test session, one user context (cookie jar) and tab per page.

Firefox reports errors to BiDi's ``log.entryAdded``, but not warnings (the CORS deprecation
warnings among them); those are read from Firefox's own console service by a listener installed in
the browser's privileged (chrome) scope, which ``--remote-allow-system-access`` opens. No geckodriver
and no Selenium: the BiDi websocket is all there is.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.engines.base import (
    COMMAND_TIMEOUT,
    START_TIMEOUT,
    ConsoleMessage,
    Engine,
    EngineError,
    EngineUnavailable,
    EvaluationError,
    Page,
    console_level,
    evaluation_outcome,
    evaluation_script,
)
from tests.engines.wire import BrowserProcess, ProtocolSocket

FIREFOX = "/usr/bin/firefox-esr"

# A quiet throw-away profile: nothing phones home (updates, telemetry, remote settings, safe
# browsing, captive portal and connectivity checks), nothing is prefetched, no first-run pages.
PREFS: dict[str, Any] = {
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "browser.aboutwelcome.enabled": False,
    "browser.discovery.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.search.update": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.tabs.warnOnClose": False,
    "browser.topsites.contile.enabled": False,
    "browser.translations.enable": False,
    "browser.warnOnQuit": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "dom.ipc.reportProcessHangs": False,
    "extensions.blocklist.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "geo.provider.network.url": "",
    "identity.fxaccounts.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-manager.url": "",
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.trr.mode": 5,
    "nimbus.rsexperimentloader.enabled": False,
    "privacy.trackingprotection.enabled": False,
    "security.OCSP.enabled": 0,
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.unified": False,
}

# Runs in the browser's chrome scope: every warning or info a content page logs, with the browser
# (tab) it came from, sent back over a BiDi channel. Errors are not sent: log.entryAdded has them.
CONSOLE_SERVICE_LISTENER = """(send) => {
  const {warningFlag, infoFlag} = Ci.nsIScriptError;
  Services.console.registerListener({
    observe(message) {
      if (!(message instanceof Ci.nsIScriptError) || message.isFromChromeContext) return;
      if (!(message.flags & (warningFlag | infoFlag))) return;
      const window = WindowGlobalParent.getByInnerWindowId(message.innerWindowID);
      send(JSON.stringify({browserId: window ? window.browsingContext.top.browserId : null,
                           level: message.flags & warningFlag ? 'warning' : 'info',
                           text: message.errorMessage}));
    },
    QueryInterface: ChromeUtils.generateQI(['nsIConsoleListener']),
  });
}"""


class FirefoxEngine(Engine):
    """``firefox-esr --headless --remote-debugging-port=0 --remote-allow-system-access`` on a fresh
    profile, and one BiDi session on ``ws://127.0.0.1:PORT/session``.

    Quirks:
    - Warnings reach the console only through the console-service listener, attributed to a page by
      the tab they came from. Some carry no window ("Loading failed for the <script> ..."): those
      go to every open page, which is exact while a test has one page open.
    - Preload scripts (`add_init_script`) run as a function body: top-level ``var``/``let`` stay
      local, so an init script assigns to ``window`` (as the suite's IIFEs do).
    - A preflight may be sent again despite a long max-age (measured on 153 ESR: the first three of a
      row were not cached; in another run none was), so no test may count Firefox's preflights.
    """

    name = "firefox"

    def __init__(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="engine-firefox-"))
        self._pages: dict[str, FirefoxPage] = {}  # by top-level BiDi context id
        self._top_context: dict[str, str] = {}  # every frame's context id -> its tab's
        self._pages_lock = threading.Lock()
        self._process: BrowserProcess | None = None
        self._socket: ProtocolSocket | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @classmethod
    def launch(cls) -> FirefoxEngine:
        if not Path(FIREFOX).exists():
            raise EngineUnavailable(cls.name, "firefox-esr", f"{FIREFOX} is missing")
        try:
            return cls()
        except EngineError as failure:
            raise EngineUnavailable(cls.name, "firefox-esr", str(failure)) from failure

    def _start(self) -> None:
        (self._profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items()))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self._profile), "MOZ_CRASHREPORTER_DISABLE": "1"}
        self._process = BrowserProcess(
            [FIREFOX, "--headless", "--remote-debugging-port=0", "--remote-allow-system-access",
             "--profile", str(self._profile), "--no-remote", "--new-instance", "about:blank"],
            self._profile / "firefox.log", env)
        listening = self._process.wait_for_log(r"WebDriver BiDi listening on (ws://\S+)", START_TIMEOUT)
        self._socket = ProtocolSocket(listening.group(1) + "/session", self._on_event)
        session = self.command("session.new", {"capabilities": {"alwaysMatch": {
            "unhandledPromptBehavior": {"default": "ignore"}}}})
        self.user_agent = session["capabilities"]["userAgent"]
        self.command("session.subscribe", {"events": [
            "log.entryAdded", "script.message", "browsingContext.contextCreated"]})
        chrome = self.command("browsingContext.getTree", {"moz:scope": "chrome"})["contexts"][0]
        self._chrome_context = chrome["context"]
        self.command("script.callFunction", {
            "functionDeclaration": CONSOLE_SERVICE_LISTENER, "awaitPromise": False,
            "target": {"context": self._chrome_context}, "resultOwnership": "none",
            "arguments": [{"type": "channel", "value": {"channel": "console-service"}}]})

    def command(self, method: str, params: dict[str, Any],
                timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """One BiDi command; its ``result``, or EngineError with Firefox's own error and message."""
        if self._socket is None:
            raise EngineError("firefox is closed")
        reply = self._socket.command({"method": method, "params": params}, timeout)
        if reply.get("type") != "success":
            raise EngineError(f"{method}: {reply.get('error')}: {reply.get('message')}")
        result: dict[str, Any] = reply["result"]
        return result

    def new_page(self) -> FirefoxPage:
        user_context = self.command("browser.createUserContext", {})["userContext"]
        context = self.command("browsingContext.create",
                               {"type": "tab", "userContext": user_context})["context"]
        # A new tab is the selected one: its <browser>'s id ties console-service warnings to it.
        browser_id = self.command("script.evaluate", {
            "expression": "gBrowser.selectedBrowser.browserId", "awaitPromise": False,
            "target": {"context": self._chrome_context}, "resultOwnership": "none"})["result"]["value"]
        page = FirefoxPage(self, context, user_context, browser_id)
        with self._pages_lock:
            self._pages[context] = page
            self._top_context[context] = context
        return page

    def forget(self, page: FirefoxPage) -> None:
        """Stop routing messages to a page that is closing."""
        with self._pages_lock:
            del self._pages[page.context]
            self._top_context = {frame: top for frame, top in self._top_context.items()
                                 if top != page.context}

    def _on_event(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event["params"]
        with self._pages_lock:
            if method == "browsingContext.contextCreated" and params.get("parent"):
                self._top_context[params["context"]] = self._top_context.get(params["parent"],
                                                                             params["parent"])
            elif method == "log.entryAdded":
                top = self._top_context.get(params["source"].get("context", ""))
                page = self._pages.get(top or "")
                if page is not None:
                    page.console_entry(ConsoleMessage(console_level(params["level"]), params["text"],
                                                      params["type"]))
            elif method == "script.message" and params["channel"] == "console-service":
                message = json.loads(params["data"]["value"])
                for page in self._pages.values():
                    if message["browserId"] in (None, page.browser_id):
                        page.console_entry(ConsoleMessage(message["level"], message["text"],
                                                          "console-service"))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self._profile, ignore_errors=True)


class FirefoxPage(Page):
    """A tab in a user context of its own: cookies, storage and HTTP cache apart from other pages."""

    def __init__(self, engine: FirefoxEngine, context: str, user_context: str, browser_id: int) -> None:
        super().__init__()
        self._engine = engine
        self.context = context
        self.browser_id = browser_id
        self._user_context = user_context
        self._preload_scripts: list[str] = []

    def console_entry(self, message: ConsoleMessage) -> None:
        self._console.add(message)

    def goto(self, url: str) -> None:
        self._engine.command("browsingContext.navigate",
                             {"context": self.context, "url": url, "wait": "complete"})

    def evaluate(self, source: str, arg: Any = None) -> Any:
        outcome = self._engine.command("script.evaluate", {
            "expression": evaluation_script(source, arg), "target": {"context": self.context},
            "awaitPromise": True, "resultOwnership": "none",
            "serializationOptions": {"maxObjectDepth": None}})
        if outcome["type"] == "exception":
            raise EvaluationError(outcome["exceptionDetails"]["text"])
        return evaluation_outcome(python_value(outcome["result"]))

    def add_init_script(self, source: str) -> None:
        self._preload_scripts.append(self._engine.command("script.addPreloadScript", {
            "functionDeclaration": "() => {\n" + source + "\n}",
            "userContexts": [self._user_context]})["script"])

    def screenshot(self, path: str) -> None:
        shot = self._engine.command("browsingContext.captureScreenshot", {"context": self.context})
        Path(path).write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self._engine.forget(self)
        for script in self._preload_scripts:
            self._engine.command("script.removePreloadScript", {"script": script})
        self._engine.command("browsingContext.close", {"context": self.context})
        self._engine.command("browser.removeUserContext", {"userContext": self._user_context})


def python_value(remote: dict[str, Any], shared: dict[str, Any] | None = None) -> Any:
    """A BiDi remote value as Python data. Numbers BiDi cannot put in JSON (NaN, -0, Infinity) are
    floats; values that are not data (nodes, functions, maps) stay BiDi's own description. An object
    the value holds twice is serialized once with an ``internalId`` and then by that id alone: it
    comes back as the same data both times (as Playwright's by-value copy gives it)."""
    shared = {} if shared is None else shared
    kind: str = remote["type"]
    value: Any = remote.get("value")
    internal = remote.get("internalId")
    if internal is not None and "value" not in remote and internal in shared:
        return shared[internal]
    if kind in ("undefined", "null"):
        return None
    if kind == "number":
        return float(value) if isinstance(value, str) else value
    if kind in ("string", "boolean"):
        return value
    if kind == "bigint":
        return int(value)
    result: Any = remote
    if kind == "array":
        result = [python_value(item, shared) for item in value]
    elif kind == "object":
        result = {key: python_value(item, shared) for key, item in value}
    if internal is not None:
        shared[internal] = result
    return result
