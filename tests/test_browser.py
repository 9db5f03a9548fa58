"""The seed's own scenario in a real browser: Anna and Ben edit booking #123 on the demo page.

Headless Debian ``chromium`` driven by Playwright (no browser download is possible here;
``.ci/run`` installs chromium when it is missing).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.serve_helpers import install_demo, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does this)",
)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def demo_dsn(postgresql: psycopg.Connection[Any], dsn: str) -> str:
    install_demo(postgresql)
    return dsn


def test_anna_saves_ben_sees_the_toast_reloads_and_a_stale_save_conflicts(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        # Separate contexts: two people, two browsers, nothing shared.
        anna = browser.new_context().new_page()
        ben = browser.new_context().new_page()
        for page in (anna, ben):
            page.set_default_timeout(15_000)
        anna.goto(f"{server.url}/?user=Anna&booking=123")
        ben.goto(f"{server.url}/?user=Ben&booking=123")
        for page in (anna, ben):
            expect(page.locator("#editor-title")).to_contain_text("#123")
            expect(page.locator("#connection")).to_have_text("live")

        # Presence: each sees the other.
        expect(anna.locator("#presence")).to_have_text("Ben is also viewing")
        expect(ben.locator("#presence")).to_have_text("Anna is also viewing")

        # Anna changes the price and saves.
        anna.locator("#gesamtpreis").fill("1234.50")
        anna.locator("#save").click()
        expect(anna.locator("#saved")).to_be_visible()
        expect(anna.locator("#error")).to_be_hidden()
        expect(anna.locator("#toast")).to_be_hidden()  # her own save is no news to her

        # Ben is told, can see what changed, and reloads to the new price.
        expect(ben.locator("#toast")).to_be_visible()
        expect(ben.locator("#toast-text")).to_have_text(
            re.compile(r"^Anna updated this booking \(\d+ seconds? ago\)$")
        )
        ben.locator("#toast-view").click()
        expect(ben.locator("#diff")).to_be_visible()
        expect(ben.locator("#diff")).to_contain_text("Total price")
        expect(ben.locator("#gesamtpreis")).not_to_have_value("1234.50")
        ben.locator("#toast-reload").click()
        expect(ben.locator("#gesamtpreis")).to_have_value("1234.50")
        expect(ben.locator("#toast")).to_be_hidden()
        # The list refreshed itself too, in both tabs.
        for page in (anna, ben):
            expect(page.locator('#bookings tr[data-id="123"]')).to_contain_text("1.234,50")

        # Anna saves again; Ben dismisses the toast and saves his now stale copy.
        anna.locator("#bemerkungen").fill("Late arrival, around 23:00")
        anna.locator("#save").click()
        expect(ben.locator("#toast")).to_be_visible()
        ben.locator("#toast-dismiss").click()
        expect(ben.locator("#toast")).to_be_hidden()
        ben.locator("#anzahl_gaeste").fill("2")
        ben.locator("#save").click()
        expect(ben.locator("#error")).to_contain_text("modified by another user")
        expect(ben.locator("#bemerkungen")).to_have_value("")  # nothing was overwritten

        # Rows inserted or deleted elsewhere appear and vanish by themselves.
        with psycopg.connect(demo_dsn, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO bookings (id, reservierungsnummer, guest_id, room_id, anreise,"
                " abreise, gesamtpreis) VALUES (777, 'R-2026-LIVE', 1, 1, '2027-02-01',"
                " '2027-02-03', 240)"
            )
            expect(anna.locator('#bookings tr[data-id="777"]')).to_contain_text("R-2026-LIVE")
            writer.execute("DELETE FROM bookings WHERE id = 777")
            expect(anna.locator('#bookings tr[data-id="777"]')).to_have_count(0)

        # Ben leaves: Anna's badge goes away.
        ben.context.close()
        expect(anna.locator("#presence")).to_be_hidden()
        anna.context.close()



def test_with_a_token_the_page_passes_it_to_the_api_and_the_stream(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True, token="s3cret") as server:
        page = browser.new_context().new_page()
        page.set_default_timeout(15_000)
        denied = page.goto(f"{server.url}/?user=Clara&booking=7")
        assert denied is not None and denied.status == 401
        page.goto(f"{server.url}/?user=Clara&booking=7&token=s3cret")
        expect(page.locator("#editor-title")).to_contain_text("#7")
        expect(page.locator("#connection")).to_have_text("live")
        expect(page.locator("#bookings tbody tr")).to_have_count(200)
        page.locator("#status").select_option("storniert")
        page.locator("#save").click()
        expect(page.locator("#saved")).to_be_visible()
        expect(page.locator('#bookings tr[data-id="7"]')).to_contain_text("storniert")
        page.context.close()
