"""Browser fixtures: one headless Chromium per test module, a fresh set of contexts per test.

Debian's ``chromium`` driven by Playwright (no browser download is possible here; ``.ci/run``
installs chromium when it is missing). Launching Chromium costs about a second of CPU, so it is
launched once per module; each test gets ``browser``, which makes contexts (one per person,
nothing shared between them) and closes every context it made when the test ends.

Playwright's sync API keeps an event loop running on the main thread while it is started, so
``asyncio.run`` fails in any other test that runs meanwhile: a module's browser tests therefore
run in xdist groups (each group together on one worker), and Chromium stops with the module.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_executable() -> str | None:
    return str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")


# A module's browser tests are dealt round-robin into this many groups: each group runs on one
# worker with one Chromium, and the groups run side by side.
BROWSER_GROUPS = 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    dealt: dict[Path, int] = {}
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            number = dealt.get(item.path, 0)
            dealt[item.path] = number + 1
            group = f"browser:{item.path.name}:{number % BROWSER_GROUPS}"
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """The module's Chromium (a Playwright ``Browser``); skips when chromium is absent."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; "
                    ".ci/run does this)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


class TestBrowser:
    """The module's Chromium as one test sees it: the contexts it makes die with the test."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, launched: Any) -> None:
        self._launched = launched
        self._contexts: list[Any] = []

    def new_context(self, **options: Any) -> Any:
        context = self._launched.new_context(**options)
        self._contexts.append(context)
        return context

    def close_contexts(self) -> None:
        for context in reversed(self._contexts):
            context.close()
        self._contexts.clear()


@pytest.fixture
def browser(chromium: Any) -> Iterator[TestBrowser]:
    """Contexts on the module's Chromium, all closed when the test ends."""
    session = TestBrowser(chromium)
    try:
        yield session
    finally:
        session.close_contexts()
