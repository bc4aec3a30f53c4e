"""WebKitGTK (Debian's libwebkit2gtk-4.1-0, the engine of Epiphany and the closest to Safari that
Linux has) driven through its remote Web Inspector protocol: MiniBrowser on a private Xvfb display,
one window for the whole test session, reused page after page.

WebDriver (webkit2gtk-driver's WebKitWebDriver) would start the same browser but reports no console
messages, which are what the CORS tests read; the inspector reports them all. This module drives
one window and does not open others.
"""

from __future__ import annotations

import base64
import glob
import itertools
import json
import re
import shutil
import tempfile
import threading
import time
import urllib.request
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
from tests.engines.wire import BrowserProcess, ProtocolSocket, Xvfb, free_port

# Debian installs it under the machine's multiarch triplet (x86_64-linux-gnu, aarch64-linux-gnu...).
MINIBROWSER = next(iter(sorted(glob.glob("/usr/lib/*/webkit2gtk-4.1/MiniBrowser"))),
                   "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
XVFB = "/usr/bin/Xvfb"

# A process-swapped target runs its bootstrap script twice in its first document (measured on
# 2.50.6, both before the page's scripts): a marker on the window lets the first run alone count.
ONCE_PER_DOCUMENT = """if (!Object.prototype.hasOwnProperty.call(window, '__engineInitScriptRan')) {{
Object.defineProperty(window, '__engineInitScriptRan', {{value: true}});
{scripts}
}}"""


class WebKitEngine(Engine):
    """``MiniBrowser --private about:blank`` with ``WEBKIT_INSPECTOR_HTTP_SERVER=127.0.0.1:PORT``;
    ``http://127.0.0.1:PORT/`` lists the window's page as ``/socket/C/T/WebPage``, its websocket.

    Quirks:
    - The socket reaches a page *proxy* that knows only the Target domain: every other command is
      wrapped in ``Target.sendMessageToTarget`` and answered inside ``dispatchMessageFromTarget``.
    - A cross-site navigation swaps the web process and so the target. ``Target.setPauseOnStart``
      holds each new target until Console, Runtime and Page are enabled on it and the init script is
      set again (``Page.setBootstrapScript`` is per target); then it is resumed. Such a target runs
      that script twice in its first document, so the init script guards itself to run once.
    - One page at a time: `new_page` reuses the one window (about:blank, no init script, empty
      console) and refuses while a page is open. Pages share the private session's cookies and HTTP
      cache for the run; nothing is written to disk.
    - ``Runtime.evaluate`` ignores ``awaitPromise``: a promise is awaited by ``Runtime.awaitPromise``.
    - Identical consecutive console messages are folded into a repeat count; each repeat is added
      to the page's console again, as the other engines report it.
    - A CORS failure is three messages: the reason (source ``security``), "... due to access control
      checks." (``javascript``) and "Failed to load resource: ..." (``network``).
    - Screenshots are ``Page.snapshotRect`` of the viewport (no X tools needed).
    """

    name = "webkit"

    def __init__(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="engine-webkit-"))
        self._xvfb: Xvfb | None = None
        self._process: BrowserProcess | None = None
        self._socket: ProtocolSocket | None = None
        self._inner_ids = itertools.count(1)
        self._state = threading.Condition()  # guards everything below; the reader thread fills it
        self._target: str | None = None  # the page target now committed in the window
        self._inner_replies: dict[int, dict[str, Any]] = {}
        self._loads: list[str] = []  # the target of every load event, in order
        self._init_script: str | None = None
        self._page: WebKitPage | None = None
        self._last_message: ConsoleMessage | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @classmethod
    def launch(cls) -> WebKitEngine:
        for path, package in ((MINIBROWSER, "libwebkit2gtk-4.1-0"), (XVFB, "xvfb")):
            if not Path(path).exists():
                raise EngineUnavailable(cls.name, package, f"{path} is missing")
        try:
            return cls()
        except EngineError as failure:
            raise EngineUnavailable(cls.name, "libwebkit2gtk-4.1-0", str(failure)) from failure

    def _start(self) -> None:
        self._xvfb = Xvfb(self._workdir / "xvfb.log")
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self._workdir), "DISPLAY": self._xvfb.display,
               "WEBKIT_INSPECTOR_HTTP_SERVER": f"127.0.0.1:{port}", "GDK_BACKEND": "x11",
               # X11 only, no accessibility bus (there is no D-Bus session) and no GPU compositing
               "NO_AT_BRIDGE": "1", "GTK_A11Y": "none", "WEBKIT_DISABLE_COMPOSITING_MODE": "1"}
        self._process = BrowserProcess([MINIBROWSER, "--private", "about:blank"],
                                       self._workdir / "minibrowser.log", env)
        self._process.wait_for_port(port, START_TIMEOUT)
        self._socket = ProtocolSocket(f"ws://127.0.0.1:{port}{self._page_socket_path(port)}",
                                      self._on_event)
        with self._state:  # the proxy announces the window's page target as soon as we connect
            if not self._state.wait_for(lambda: self._target is not None, COMMAND_TIMEOUT):
                raise EngineError("the inspector announced no page target")
            target = self._target
        assert target is not None
        self._top("Target.setPauseOnStart", {"pauseOnStart": True})
        self._enable(target)
        self.user_agent = self.evaluate("navigator.userAgent")

    def _page_socket_path(self, port: int) -> str:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._process.check_running()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=COMMAND_TIMEOUT) as listing:
                found = re.search(r"/socket/\d+/\d+/WebPage", listing.read().decode())
            if found:
                return found.group(0)
            time.sleep(0.1)
        raise EngineError(f"the inspector listed no WebPage in {START_TIMEOUT} s")

    # --- the protocol ---

    def _top(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A command to the page proxy itself (the Target domain)."""
        if self._socket is None:
            raise EngineError("webkit is closed")
        reply = self._socket.command({"method": method, "params": params})
        if "error" in reply:
            raise EngineError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def command(self, method: str, params: dict[str, Any], target: str | None = None) -> dict[str, Any]:
        """A command to a page target (the committed one unless named), through the proxy."""
        inner_id = next(self._inner_ids)
        with self._state:
            target = target or self._target
        self._top("Target.sendMessageToTarget", {
            "targetId": target, "message": json.dumps({"id": inner_id, "method": method, "params": params})})
        with self._state:
            if not self._state.wait_for(lambda: inner_id in self._inner_replies, COMMAND_TIMEOUT):
                raise EngineError(f"no answer in {COMMAND_TIMEOUT} s to {method}")
            reply = self._inner_replies.pop(inner_id)
        if "error" in reply:
            raise EngineError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _enable(self, target: str) -> None:
        with self._state:
            init_script = self._init_script
        for domain in ("Console", "Runtime", "Page"):
            self.command(f"{domain}.enable", {}, target)
        if init_script is not None:
            self.command("Page.setBootstrapScript", {"source": init_script}, target)

    def _enable_and_resume(self, target: str) -> None:
        try:
            self._enable(target)
        finally:
            self._top("Target.resume", {"targetId": target})

    def _on_event(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Target.dispatchMessageFromTarget":
            self._on_target_message(params["targetId"], json.loads(params["message"]))
        elif method == "Target.targetCreated":
            info = params["targetInfo"]
            with self._state:
                if info["type"] == "page" and not info.get("isProvisional") and self._target is None:
                    self._target = info["targetId"]
                    self._state.notify_all()
            if info.get("isPaused"):
                # Enabling waits for replies, which this (reader) thread delivers: not here.
                threading.Thread(target=self._enable_and_resume, args=(info["targetId"],),
                                 daemon=True).start()
        elif method == "Target.didCommitProvisionalTarget":
            with self._state:
                self._target = params["newTargetId"]
                self._state.notify_all()

    def _on_target_message(self, target: str, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        with self._state:
            if "id" in message:
                self._inner_replies[message["id"]] = message
            elif method == "Page.loadEventFired":
                self._loads.append(target)
            elif method in ("Console.messageAdded", "Console.messageRepeatCountUpdated"):
                if method == "Console.messageAdded":
                    entry = params["message"]
                    self._last_message = ConsoleMessage(console_level(entry.get("level")),
                                                        console_text(entry), entry.get("source", ""))
                if self._page is not None and self._last_message is not None:
                    self._page.console_entry(self._last_message)
            self._state.notify_all()

    # --- what the page asks for ---

    def navigate(self, url: str) -> None:
        """Page.navigate, then wait for the load event of the target committed by then (a process
        swap fires it on the new target)."""
        with self._state:
            loads_before = len(self._loads)
        self.command("Page.navigate", {"url": url})
        with self._state:
            if not self._state.wait_for(lambda: self._target in self._loads[loads_before:],
                                        COMMAND_TIMEOUT):
                raise EngineError(f"no load event in {COMMAND_TIMEOUT} s for {url}")

    def evaluate(self, source: str, arg: Any = None) -> Any:
        evaluated = self.command("Runtime.evaluate", {
            "expression": evaluation_script(source, arg), "objectGroup": "harness", "returnByValue": False})
        if evaluated.get("wasThrown"):
            raise EvaluationError(evaluated["result"].get("description", "exception"))
        settled = self.command("Runtime.awaitPromise", {
            "promiseObjectId": evaluated["result"]["objectId"], "returnByValue": True})
        self.command("Runtime.releaseObjectGroup", {"objectGroup": "harness"})
        return evaluation_outcome(settled["result"]["value"])

    def set_init_script(self, source: str | None) -> None:
        with self._state:
            self._init_script = source
        self.command("Page.setBootstrapScript", {} if source is None else {"source": source})

    def new_page(self) -> WebKitPage:
        if self._page is not None:
            raise EngineError("webkit drives one page at a time: close the open one first")
        self._page = WebKitPage(self)
        return self._page

    def release(self) -> None:
        """Leave the window blank for the next page, with nothing of this one left running."""
        self.set_init_script(None)
        self.navigate("about:blank")
        with self._state:
            self._page = None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._xvfb is not None:
            self._xvfb.stop()
            self._xvfb = None
        shutil.rmtree(self._workdir, ignore_errors=True)


class WebKitPage(Page):
    """The engine's one window, for one test."""

    def __init__(self, engine: WebKitEngine) -> None:
        super().__init__()
        self._engine = engine
        self._init_scripts: list[str] = []

    def console_entry(self, message: ConsoleMessage) -> None:
        self._console.add(message)

    def goto(self, url: str) -> None:
        self._engine.navigate(url)

    def evaluate(self, source: str, arg: Any = None) -> Any:
        return self._engine.evaluate(source, arg)

    def add_init_script(self, source: str) -> None:
        # WebKit keeps one bootstrap script per target: several init scripts run as one, in order.
        self._init_scripts.append(source)
        self._engine.set_init_script(ONCE_PER_DOCUMENT.format(scripts=";\n".join(self._init_scripts)))

    def screenshot(self, path: str) -> None:
        width, height = self.evaluate("[innerWidth, innerHeight]")
        shot = self._engine.command("Page.snapshotRect", {
            "x": 0, "y": 0, "width": width, "height": height, "coordinateSystem": "Viewport"})
        Path(path).write_bytes(base64.b64decode(shot["dataURL"].split(",", 1)[1]))

    def close(self) -> None:
        self._engine.release()


def console_text(entry: dict[str, Any]) -> str:
    """A message as the console prints it: for console.log(a, b) WebKit's ``text`` is only `a`, so
    the text is made of all its arguments, strings as they are and other values by description."""
    arguments = entry.get("parameters")
    if entry.get("source") != "console-api" or not arguments:
        return str(entry.get("text", ""))
    return " ".join(str(argument["value"]) if argument.get("type") == "string"
                    else str(argument.get("description", argument.get("value", "")))
                    for argument in arguments)
