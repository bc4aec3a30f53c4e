"""What every browser engine offers the tests: an `Engine` that opens pages, and a `Page` that
loads a URL, evaluates script, reads the console, takes init scripts and screenshots.

The three engines (Chromium, Firefox, WebKit) subclass these; a test written against `Page` runs in
all of them. Console messages cross engines as `ConsoleMessage` with one level vocabulary; their
text is each engine's own, word for word, because that text is what a developer reads. This module
starts no process and speaks no protocol.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

# Seconds a protocol command may take before the harness gives up on the browser.
COMMAND_TIMEOUT = 30.0
# Seconds a browser process may take to start and accept its first command.
START_TIMEOUT = 60.0


class EngineError(RuntimeError):
    """The browser did not do what was asked: it crashed, timed out or refused a command."""


class EngineUnavailable(EngineError):
    """The browser cannot start on this machine; `package` is the Debian package that provides it."""

    def __init__(self, engine: str, package: str, detail: str) -> None:
        super().__init__(f"{engine} cannot start ({detail}): needs Debian's {package} "
                         f"(.ci/run installs it)")
        self.package = package


class EvaluationError(EngineError):
    """The evaluated script threw, or the promise it returned rejected; the message is the page's."""


@dataclass(frozen=True)
class ConsoleMessage:
    """One console entry. `level` is debug, info, warning or error in every engine; `source` is the
    engine's own category (``javascript``, ``network``, ``security``, ``console-api`` ...)."""

    level: str
    text: str
    source: str


# Each engine's level words, mapped onto the four the tests use.
LEVELS = {"verbose": "debug", "debug": "debug", "trace": "debug", "log": "info", "info": "info",
          "warn": "warning", "warning": "warning", "error": "error", "assert": "error"}


def console_level(engine_level: str | None) -> str:
    return LEVELS.get(engine_level or "info", "info")


def evaluation_script(source: str, arg: Any) -> str:
    """The one expression that evaluates `source` as Playwright's ``page.evaluate(source, arg)``
    does: a function's source is called with `arg`, any other expression is its own value, and a
    promise is awaited. `arg` crosses as JSON, which is also JavaScript. The expression's value is
    ``{value}`` or ``{thrown}`` (the error as the page prints it), for `evaluation_outcome`: a
    protocol's own report of an exception loses the message in Firefox ("Missing stack")."""
    return (f"(async () => {{ try {{ const value = ({source}\n);\n"
            f"return {{value: typeof value === 'function' ? await value({json.dumps(arg)}) : await value}};"
            f" }} catch (error) {{ return {{thrown: String(error)}}; }} }})()")


def evaluation_outcome(outcome: dict[str, Any]) -> Any:
    """The value of `evaluation_script`'s expression, or EvaluationError with what it threw."""
    if "thrown" in outcome:
        raise EvaluationError(outcome["thrown"])
    return outcome["value"]


class ConsoleLog:
    """A page's console messages, filled by the protocol's reader thread and read by the test."""

    def __init__(self) -> None:
        self._messages: list[ConsoleMessage] = []
        self._changed = threading.Condition()

    def add(self, message: ConsoleMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def messages(self) -> list[ConsoleMessage]:
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def wait_for_change(self, seconds: float) -> None:
        with self._changed:
            self._changed.wait(seconds)


class Page(ABC):
    """A fresh tab: its own cookies and storage where the engine allows (see each engine's quirks)."""

    def __init__(self) -> None:
        self._console = ConsoleLog()

    @abstractmethod
    def goto(self, url: str) -> None:
        """Navigate and return once the page's load event has fired."""

    @abstractmethod
    def evaluate(self, source: str, arg: Any = None) -> Any:
        """Playwright's convention: `source` is a function (called with `arg`) or an expression; a
        promise is awaited; the value comes back as JSON-like Python data. Raises EvaluationError."""

    @abstractmethod
    def add_init_script(self, source: str) -> None:
        """Run `source` before any of the page's own scripts, on every later navigation."""

    @abstractmethod
    def screenshot(self, path: str) -> None:
        """Write a PNG of the viewport to `path`."""

    @abstractmethod
    def close(self) -> None:
        """Close the tab and whatever was opened for it alone."""

    def console_messages(self) -> list[ConsoleMessage]:
        return self._console.messages()

    def clear_console(self) -> None:
        self._console.clear()

    def wait_console(self, predicate: Callable[[ConsoleMessage], bool],
                     timeout: float = 5.0) -> ConsoleMessage:
        """The first message (already seen or still to come) that `predicate` accepts. Engines report
        a CORS failure to the console and to the page separately, so either may come first."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self._console.messages():
                if predicate(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(f"no matching console message in {timeout} s; "
                                  f"seen: {self._console.messages()}")
            self._wait_for_events(min(left, 0.05))

    def _wait_for_events(self, seconds: float) -> None:
        """Let the engine deliver events for up to `seconds` (a reader thread does, by default)."""
        self._console.wait_for_change(seconds)


class Engine(ABC):
    """One running browser, started once per test session; every test gets a new page from it."""

    name: ClassVar[str]
    user_agent: str

    @abstractmethod
    def new_page(self) -> Page:
        """A new, blank page (about:blank) with an empty console and no init scripts."""

    @abstractmethod
    def close(self) -> None:
        """Stop what this engine started: its pages, its browser process, its display."""
