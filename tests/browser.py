"""Headless Chromium for the dashboard tests: Playwright for Python driving Debian's ``chromium``.

We never run ``playwright install``: Playwright launches the system binary through
``executable_path`` (``LIGHTNING_STREAM_CHROMIUM`` overrides the search). Without a
Chromium the browser tests skip, unless ``LIGHTNING_STREAM_REQUIRE_BROWSER=1`` (set in
CI), in which case they fail so a missing browser cannot pass silently.

Import ``browser_fixture`` into a test module and ask for ``browser`` (one Chromium per module) and ``open_page(browser, url)``, which
records console errors and uncaught exceptions; read the page's state through
``window.lightningStream.snapshot()`` and wait with ``wait_until`` (polling with a
generous deadline, never a timed assertion: the machine is shared).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

ENV_REQUIRE = "LIGHTNING_STREAM_REQUIRE_BROWSER"
ENV_CHROMIUM = "LIGHTNING_STREAM_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: long enough for a loaded 2-core machine; a healthy page answers in well under a second
WAIT_S = 20.0

T = TypeVar("T")


def chromium_executable() -> str | None:
    """The Chromium to drive: ``$LIGHTNING_STREAM_CHROMIUM``, else the first on ``PATH``."""
    configured = os.environ.get(ENV_CHROMIUM)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium path, or skip the test (fail when CI demands a browser)."""
    path = chromium_executable()
    if path is not None:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            path = None
            reason = "playwright is not installed (pip install -e '.[test]')"
        else:
            return path
    else:
        reason = "chromium not found (sudo apt-get install chromium, or make browser-deps)"
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{reason}; {ENV_REQUIRE}=1 requires the browser tests to run")
    pytest.skip(reason)


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    """One headless Chromium for the module (launching costs about a second)."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class Watched:
    """A page and what it reported: console errors and uncaught exceptions."""

    page: Any
    context: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, in order

    def snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("window.lightningStream.snapshot()")
        return result

    def series(self, run: str, tag: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.page.evaluate(
            "([run, tag]) => window.lightningStream.series(run, tag)", [run, tag]
        )
        return result

    def wait_js(self, expression: str, arg: Any = None, timeout_s: float = WAIT_S) -> Any:
        """Wait until the JS function ``expression`` (called with ``arg``) returns a truthy value."""
        handle = self.page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000, polling=50)
        return handle.json_value()


@contextlib.contextmanager
def open_page(
    browser: Any, url: str, *, color_scheme: str = "dark", init_script: str | None = None, **context_options: Any
) -> Iterator[Watched]:
    """A fresh browser context (no shared storage) with the dashboard at ``url``, closed afterwards;
    ``init_script`` runs in the page before any of its own scripts (to observe its load)."""
    options: dict[str, Any] = {"viewport": {"width": 1400, "height": 900}, "color_scheme": color_scheme}
    options.update(context_options)
    context = browser.new_context(**options)
    page = context.new_page()
    if init_script is not None:
        page.add_init_script(init_script)
    watched = Watched(page, context)
    page.on("console", lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watched.page_errors.append(str(exc)))
    page.on("request", lambda request: watched.requests.append(request.url))
    try:
        page.goto(url)
        page.wait_for_function("window.lightningStream !== undefined", timeout=WAIT_S * 1000)
        yield watched
    finally:
        context.close()


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float = WAIT_S, interval_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}; last value {value!r}")
        time.sleep(interval_s)
