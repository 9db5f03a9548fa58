"""The seed's own scenario in a real browser: Anna and Ben edit booking #123 on the demo page,
and nothing Ben typed is ever lost.

Headless Debian ``chromium`` driven by Playwright, launched once per module
(``tests/fix_browser.py``). Two people are two browser contexts; two
tabs of one person are two pages of one context.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import statistics
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from tests.fix_browser import chromium_executable
from tests.serve_helpers import bump_price, running_server

WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    chromium_executable() is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does this)",
)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)  # a loaded machine takes more than the default 5 s


def person(browser: Any, width: int = 1280, height: int = 800) -> Any:
    """A browser of one's own: nothing shared with the other people in the test."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    return context


def open_booking(context: Any, url: str, user: str, booking: int = 123, live: bool = True) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{url}/?user={user}&booking={booking}")
    expect(page.locator("#editor-title")).to_contain_text(f"#{booking}")
    if live:
        expect(page.locator("#connection")).to_have_text("live")
    return page


def expect_saved(page: Any) -> None:
    """Wait for the page's "Saved." note. It is in the page, hidden, from the start, so its
    text alone does not say that the save went through: it must show."""
    expect(page.locator("#saved")).to_be_visible()
    expect(page.locator("#saved")).to_have_text("Saved.")


def row(dsn: str, booking: int = 123) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM bookings WHERE id = %s", (booking,))
        found = cur.fetchone()
    assert found is not None
    return found


def wait_for_clients(url: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/healthz", timeout=5).json()["clients"] != count:
        assert time.monotonic() < deadline, f"the server never had {count} clients"
        time.sleep(0.05)


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate(
        "document.scrollingElement.scrollWidth <= window.innerWidth"
    ))


def test_bens_typing_survives_annas_save_of_another_field_and_is_saved_with_it(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        ben = open_booking(person(browser), server.url, "Ben")
        expect(ben.locator("[data-viewer=Anna]")).to_have_count(1)
        expect(anna.locator("[data-viewer=Ben]")).to_have_count(1)

        ben.locator("#bemerkungen").fill("Late arrival, around 23:00")
        guests = "4" if row(demo_dsn)["anzahl_gaeste"] != 4 else "2"
        ben.locator("#anzahl_gaeste").fill(guests)
        notes_at = ben.locator("#bemerkungen").bounding_box()

        anna.locator("#gesamtpreis").fill("1234.50")
        anna.locator("#save").click()
        expect(anna.locator("#saved")).to_be_visible()
        expect(anna.locator("#toast")).to_be_hidden()  # her own save is no news to her

        # Ben's form shows Anna's price at once, his own edits untouched, and he is told.
        expect(ben.locator("#gesamtpreis")).to_have_value("1234.50")
        expect(ben.locator('.field[data-field="gesamtpreis"]')).to_have_class(re.compile("updated"))
        expect(ben.locator("#bemerkungen")).to_have_value("Late arrival, around 23:00")
        expect(ben.locator("#anzahl_gaeste")).to_have_value(guests)
        expect(ben.locator("[data-conflict]")).to_have_count(0)
        expect(ben.locator("#toast-text")).to_have_text("Anna updated this booking · just now")
        expect(ben.locator("#toast-changes")).to_contain_text("Total price: €1,352.00 → €1,234.50")
        # The notice floats: the field he is typing in did not move.
        assert ben.locator("#bemerkungen").bounding_box() == notes_at

        ben.locator("#toast-dismiss").click()
        expect(ben.locator("#toast")).to_be_hidden()
        expect(ben.locator("#bemerkungen")).to_have_value("Late arrival, around 23:00")
        ben.locator("#save").click()
        expect_saved(ben)
        expect(ben.locator("#error")).to_be_hidden()

        saved = row(demo_dsn)
        assert saved["gesamtpreis"] == Decimal("1234.50")
        assert saved["bemerkungen"] == "Late arrival, around 23:00"
        assert saved["anzahl_gaeste"] == int(guests) and saved["version"] == 3
        # Anna, who had nothing pending, sees Ben's save in her form.
        expect(anna.locator("#bemerkungen")).to_have_value("Late arrival, around 23:00")
        expect(anna.locator("#toast-text")).to_contain_text("Ben updated this booking")
        # The list refreshed itself too, in both tabs, in one money format.
        for page in (anna, ben):
            expect(page.locator('#bookings tr[data-id="123"]')).to_contain_text("€1,234.50")
        assert anna.errors == [] and ben.errors == []


@pytest.mark.parametrize("choice", ["Keep mine", "Use theirs"])
def test_a_same_field_clash_asks_at_the_field_and_saves_the_choice(
    demo_dsn: str, browser: Any, choice: str
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        ben = open_booking(person(browser), server.url, "Ben")
        expect(ben.locator("[data-viewer=Anna]")).to_have_count(1)
        ben.locator("#gesamtpreis").fill("999")
        ben.locator("#bemerkungen").fill("Ben's note")

        anna.locator("#gesamtpreis").fill("1500")
        anna.locator("#save").click()
        expect(anna.locator("#saved")).to_be_visible()

        clash = ben.locator("[data-conflict=gesamtpreis]")
        expect(clash).to_be_visible()
        expect(clash).to_contain_text("Anna saved €1,500.00")
        expect(ben.locator("#gesamtpreis")).to_have_value("999")  # his value stays meanwhile
        expect(ben.locator("#save")).to_be_disabled()
        clash.get_by_role("button", name=choice).click()
        expect(clash).to_have_count(0)
        expected_price = "999.00" if choice == "Keep mine" else "1500.00"
        if choice == "Use theirs":
            expect(ben.locator("#gesamtpreis")).to_have_value("1500.00")
        ben.locator("#save").click()
        expect_saved(ben)
        expect(ben.locator("#error")).to_be_hidden()

        saved = row(demo_dsn)
        assert saved["gesamtpreis"] == Decimal(expected_price)
        assert saved["bemerkungen"] == "Ben's note"
        expect(anna.locator("#gesamtpreis")).to_have_value(expected_price)
        assert anna.errors == [] and ben.errors == []


def test_a_409_with_bens_stream_paused_leads_to_the_choice_not_to_data_loss(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        bens = person(browser)
        # Ben's live stream never gets through: he hears of Anna's save only from the 409.
        bens.route(re.compile(r".*/events(\?.*)?$"), lambda route: route.abort())
        ben = open_booking(bens, server.url, "Ben", live=False)
        ben.locator("#gesamtpreis").fill("777")
        ben.locator("#bemerkungen").fill("Typed while offline")

        anna.locator("#gesamtpreis").fill("1500")
        anna.locator("#status").select_option("storniert")
        anna.locator("#save").click()
        expect(anna.locator("#saved")).to_be_visible()
        expect(ben.locator("#gesamtpreis")).to_have_value("777")  # nothing reached him

        ben.locator("#save").click()
        clash = ben.locator("[data-conflict=gesamtpreis]")
        expect(clash).to_be_visible()
        expect(clash).to_contain_text("€1,500.00")
        expect(ben.locator("#error")).to_be_hidden()
        expect(ben.locator("#gesamtpreis")).to_have_value("777")
        expect(ben.locator("#bemerkungen")).to_have_value("Typed while offline")
        expect(ben.locator("#status")).to_have_value("storniert")  # Anna's other field, merged
        assert row(demo_dsn)["gesamtpreis"] == Decimal("1500.00")

        clash.get_by_role("button", name="Keep mine").click()
        ben.locator("#save").click()
        expect_saved(ben)
        expect(ben.locator("#error")).to_be_hidden()
        saved = row(demo_dsn)
        assert (saved["gesamtpreis"], saved["status"], saved["bemerkungen"]) == (
            Decimal("777.00"), "storniert", "Typed while offline")
        assert saved["version"] == 3


def test_a_409_without_a_clash_merges_and_saves_by_itself(demo_dsn: str, browser: Any) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        bens = person(browser)
        bens.route(re.compile(r".*/events(\?.*)?$"), lambda route: route.abort())
        ben = open_booking(bens, server.url, "Ben", live=False)
        guests = 1 if row(demo_dsn)["anzahl_gaeste"] != 1 else 2
        ben.locator("#anzahl_gaeste").fill(str(guests))
        anna.locator("#gesamtpreis").fill("1500")
        anna.locator("#save").click()
        expect(anna.locator("#saved")).to_be_visible()
        ben.locator("#save").click()
        expect_saved(ben)
        expect(ben.locator("#gesamtpreis")).to_have_value("1500.00")
        expect(ben.locator("[data-conflict]")).to_have_count(0)
        saved = row(demo_dsn)
        assert (saved["gesamtpreis"], saved["anzahl_gaeste"]) == (Decimal("1500.00"), guests)
        assert saved["version"] == 3


@pytest.mark.parametrize("width", [390, 1024, 1280, 1920])
def test_the_page_fits_without_horizontal_scroll_and_shows_the_open_booking(
    demo_dsn: str, browser: Any, width: int
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        page = open_booking(person(browser, width, 844), server.url, "Ben", booking=180)
        assert no_horizontal_scroll(page)
        # The list scrolled to the open booking.
        selected = page.locator('#bookings tr.selected[data-id="180"]')
        expect(selected).to_be_in_viewport()
        list_box, row_box = page.locator("#list").bounding_box(), selected.bounding_box()
        assert list_box["y"] <= row_box["y"] <= list_box["y"] + list_box["height"] - 10
        # A clash box and the notice do not widen it either.
        page.locator("#bemerkungen").fill("Ben's")
        with psycopg.connect(demo_dsn, autocommit=True) as writer:
            writer.execute(
                "SELECT set_config('bookwatch.actor', 'Anna', false);"
                " UPDATE bookings SET bemerkungen = 'Anna''s long note ' || repeat('x', 300),"
                " version = version + 1 WHERE id = 180"
            )
        expect(page.locator("[data-conflict=bemerkungen]")).to_be_visible()
        expect(page.locator("#toast")).to_be_visible()
        assert no_horizontal_scroll(page)
        # The status is shown in English, stored as the schema has it.
        status = row(demo_dsn, 180)["status"]
        english = {"bestätigt": "Confirmed", "angefragt": "Requested",
                   "eingecheckt": "Checked in", "storniert": "Cancelled"}[status]
        expect(page.locator("#status option:checked")).to_have_text(english)


def test_one_badge_per_person_however_many_tabs(demo_dsn: str, browser: Any) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        bens = person(browser)
        first = open_booking(bens, server.url, "Ben")
        second = open_booking(bens, server.url, "Ben")
        expect(anna.locator("[data-viewer=Ben]")).to_have_count(1)
        expect(anna.locator("[data-viewer]")).to_have_count(1)
        for tab in (first, second):
            expect(tab.locator("[data-viewer=Anna]")).to_have_count(1)
            expect(tab.locator("[data-viewer=Ben]")).to_have_count(0)  # not himself
        second.close()
        wait_for_clients(server.url, 2)  # the server has seen the tab go
        # Clara joins: her frame comes after any frame about that tab, and lists everyone.
        open_booking(person(browser), server.url, "Clara")
        expect(anna.locator("[data-viewer=Clara]")).to_have_count(1)
        expect(anna.locator("[data-viewer=Ben]")).to_have_count(1)  # one tab left: still there
        first.close()
        expect(anna.locator("[data-viewer=Ben]")).to_have_count(0)


def test_any_unicode_name_works(demo_dsn: str, browser: Any) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        li = open_booking(person(browser), server.url, "李雷")
        expect(li.locator("#bookings tbody tr")).to_have_count(200)
        expect(li.locator("#user-name")).to_have_text("李雷")
        expect(anna.locator("[data-viewer=李雷]")).to_have_count(1)
        li.locator("#bemerkungen").fill("来自李雷")
        li.locator("#save").click()
        expect(li.locator("#saved")).to_be_visible()
        expect(li.locator("#error")).to_be_hidden()
        assert row(demo_dsn)["bemerkungen"] == "来自李雷"
        expect(anna.locator("#bemerkungen")).to_have_value("来自李雷")
        assert li.errors == []


def test_the_change_event_names_a_unicode_editor(demo_dsn: str, browser: Any) -> None:
    """The page sends the name percent-encoded (a header must be Latin-1); the server must
    decode it (the presence branch's api.py does)."""
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        li = open_booking(person(browser), server.url, "李雷")
        li.locator("#bemerkungen").fill("来自李雷")
        li.locator("#save").click()
        expect(li.locator("#saved")).to_be_visible()
        try:
            expect(anna.locator("#toast-text")).to_have_text(
                "李雷 updated this booking · just now", timeout=5_000)
        except AssertionError:
            pytest.xfail("the server does not decode X-Bookwatch-User yet (presence branch)")


@contextlib.contextmanager
def plain_page_server(page: dict[str, str]) -> Iterator[str]:
    """Someone else's page on an origin of its own (another port): serves ``page["html"]``."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


PLAIN_PAGE = """<!doctype html><meta charset="utf-8"><title>app</title>
<p id="state">-</p><p id="out">-</p>
<script type="module">
  import {connect} from "SERVER/bookwatch.js";
  const live = connect({url: "SERVER", table: "bookings", id: 5, viewer: "Clara",
                        viewing: "bookings:5"});
  live.on("status", (state) => { document.getElementById("state").textContent = state; });
  live.on("change", (event) => {
    const changed = [...event.changed].sort().join(",");
    document.getElementById("out").textContent = `${event.actor} ${changed}`;
  });
</script>"""


def test_bookwatch_js_as_a_module_on_a_plain_page_receives_a_change(
    demo_dsn: str, browser: Any, postgresql: psycopg.Connection[Any]
) -> None:
    # The page lives on another origin (as a developer's app would): it names the server in
    # `url` (the default is the page's own origin, SPEC).
    plain: dict[str, str] = {}
    with plain_page_server(plain) as app_origin, running_server(
        demo_dsn, allow_origins=(app_origin,)
    ) as server:
        plain["html"] = PLAIN_PAGE.replace("SERVER", server.url)
        page = person(browser).new_page()
        page.goto(f"{app_origin}/")
        expect(page.locator("#state")).to_have_text("open")
        postgresql.autocommit = True
        bump_price(postgresql, 4, actor="Bob")  # filtered out: another booking
        bump_price(postgresql, 5, actor="Anna")
        expect(page.locator("#out")).to_have_text("Anna gesamtpreis,version")


def test_rows_inserted_or_deleted_elsewhere_appear_and_vanish(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        anna = open_booking(person(browser), server.url, "Anna")
        with psycopg.connect(demo_dsn, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO bookings (id, reservierungsnummer, guest_id, room_id, anreise,"
                " abreise, gesamtpreis) VALUES (777, 'R-2026-LIVE', 1, 1, '2027-02-01',"
                " '2027-02-03', 240)"
            )
            expect(anna.locator('#bookings tr[data-id="777"]')).to_contain_text("€240.00")
            writer.execute("DELETE FROM bookings WHERE id = 777")
            expect(anna.locator('#bookings tr[data-id="777"]')).to_have_count(0)


def test_with_a_token_the_page_passes_it_to_the_api_the_module_and_the_stream(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True, token="s3cret") as server:
        page = person(browser).new_page()
        denied = page.goto(f"{server.url}/?user=Clara&booking=7")
        assert denied is not None and denied.status == 401
        page.goto(f"{server.url}/?user=Clara&booking=7&token=s3cret")
        expect(page.locator("#editor-title")).to_contain_text("#7")
        expect(page.locator("#connection")).to_have_text("live")
        expect(page.locator("#bookings tbody tr")).to_have_count(200)
        page.locator("#status").select_option("storniert")
        page.locator("#save").click()
        expect(page.locator("#saved")).to_be_visible()
        expect(page.locator('#bookings tr[data-id="7"]')).to_contain_text("Cancelled")
        assert row(demo_dsn, 7)["status"] == "storniert"


SAVES = 20
# Records when the page writes a value into the price input: the moment the form shows it.
WATCH_PRICE = """
window.priceShownAt = {};
const property = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value");
Object.defineProperty(HTMLInputElement.prototype, "value", {
  configurable: true,
  get() { return property.get.call(this); },
  set(value) {
    property.set.call(this, value);
    if (this.name === "gesamtpreis") window.priceShownAt[value] = Date.now();
  },
});
"""


def test_annas_commit_reaches_bens_form_quickly(
    demo_dsn: str, browser: Any, record_property: Any
) -> None:
    """Commit → Ben's form shows the value, p50 of 20 saves (wall clock, same machine)."""
    with running_server(demo_dsn, demo=True) as server:
        context = person(browser)
        context.add_init_script(WATCH_PRICE)
        ben = open_booking(context, server.url, "Ben")
        delays = []
        with psycopg.connect(demo_dsn) as anna:
            for n in range(SAVES):
                price = f"{2000 + n}.25"
                anna.execute("SELECT set_config('bookwatch.actor', 'Anna', true)")
                anna.execute(
                    "UPDATE bookings SET gesamtpreis = %s, version = version + 1,"
                    " updated_at = now() WHERE id = 123", (price,))
                committed = time.time() * 1000
                anna.commit()
                expect(ben.locator("#gesamtpreis")).to_have_value(price)
                shown = ben.evaluate(f"window.priceShownAt[{price!r}]")
                delays.append(shown - committed)
        p50 = statistics.median(delays)
        record_property("commit_to_form_ms", {"p50": p50, "max": max(delays)})
        print(f"\ncommit → Ben's form: p50 {p50:.1f} ms, max {max(delays):.1f} ms "
              f"over {SAVES} saves")
        assert p50 < 1000, delays  # usually a few ms: a wide margin for a busy machine
