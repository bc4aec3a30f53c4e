"""The three browser engines the suite runs in, behind one interface: `Engine` starts a browser once
per run and opens pages; `Page` loads, evaluates, reads the console, takes init scripts and
screenshots. Chromium is driven by Playwright, Firefox by WebDriver BiDi, WebKit by its Web
Inspector protocol; each engine's module says what is particular to it. The pytest fixtures
(``engine``, ``engine_page``) are in tests/conftest.py; nothing here depends on pytest.
"""

from tests.engines.base import (
    ConsoleMessage,
    Engine,
    EngineError,
    EngineUnavailable,
    EvaluationError,
    Page,
)

ENGINE_NAMES = ("chromium", "firefox", "webkit")

__all__ = ["ENGINE_NAMES", "ConsoleMessage", "Engine", "EngineError", "EngineUnavailable",
           "EvaluationError", "Page"]
