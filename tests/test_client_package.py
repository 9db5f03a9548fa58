"""The client as an app gets it: ``npm pack`` → installed into a scratch project → bundled with
esbuild → run in Chromium against a real ``bookwatch serve``. Ten subscriptions share one
connection, and numbers keep every digit from the row to the page."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from tests.client import npm
from tests.serve_helpers import running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does this)",
)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

APP = """
import {connect} from "@bookwatch/client";

const server = new URLSearchParams(location.search).get("server");
window.received = [];
window.lives = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((id) => {
  const live = connect({url: server, table: "amounts", id, exactNumbers: true});
  live.on("status", (state) => { document.getElementById("state").textContent = state; });
  live.on("change", (event) => {
    const values = {subscription: id, id: event.id, amount: event.diff.amount?.[1] ?? null,
                    big: event.diff.big?.[1] ?? null};
    window.received.push(values);
    const line = document.createElement("li");
    line.dataset.id = String(event.id);
    line.textContent = `${values.amount} ${values.big}`;
    document.getElementById("out").append(line);
  });
  return live;
});
"""
REACT_APP = """
import {useState} from "react";
import {createRoot} from "react-dom/client";
import {useBookwatch} from "@bookwatch/client/react";

const server = new URLSearchParams(location.search).get("server");

function Amount() {
  const [clicks, setClicks] = useState(0);
  const [shown, setShown] = useState("-");
  // A new handler and a new filter list on every render: neither may reopen the stream, and
  // the handler must see this render's `clicks` (no stale closure).
  const {status} = useBookwatch({
    url: server, table: ["amounts"], id: [5], exactNumbers: true,
    onChange: (event) => setShown(`${event.diff.amount[1]} after ${clicks} clicks`),
  });
  return <div>
    <p id="state">{status}</p><p id="shown">{shown}</p>
    <button id="click" onClick={() => setClicks((n) => n + 1)}>click</button>
  </div>;
}

function App() {
  const [mounted, setMounted] = useState(true);
  return <div>
    {mounted ? <Amount /> : <p id="state">unmounted</p>}
    <button id="unmount" onClick={() => setMounted(false)}>unmount</button>
  </div>;
}

createRoot(document.getElementById("root")).render(<App />);
"""
REACT_PAGE = """<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>r</title>
<div id="root"></div><script type="module" src="react-app.js"></script>"""
PAGE = """<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>app</title>
<p id="state">-</p><ul id="out"></ul><script type="module" src="app.js"></script>"""


@pytest.fixture(scope="module")
def bundled_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch app that installed the packed tarball and bundled a page with it."""
    modules = npm.dev_tools()
    packs = tmp_path_factory.mktemp("pack")
    npm.run([npm.npm(), "pack", "--pack-destination", str(packs)], npm.PACKAGE)
    [tarball] = packs.glob("bookwatch-client-*.tgz")
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "app", "private": True,
                                                  "type": "module"}))
    npm.run([npm.npm(), "install", "--no-audit", "--no-fund", "--prefer-offline", str(tarball)],
            app)
    installed = app / "node_modules" / "@bookwatch" / "client"
    assert (installed / "src" / "index.d.ts").exists() and (installed / "src" / "react.js").exists()
    (app / "main.js").write_text(APP)
    site = app / "site"
    site.mkdir()
    npm.run([str(modules / ".bin" / "esbuild"), "main.js", "--bundle", "--format=esm",
             f"--outfile={site / 'app.js'}"], app)
    (site / "index.html").write_text(PAGE)
    # React comes from the package's dev tools, as the app's own dependency would.
    (app / "react-app.jsx").write_text(REACT_APP)
    npm.run([str(modules / ".bin" / "esbuild"), "react-app.jsx", "--bundle", "--format=esm",
             "--jsx=automatic", "--define:process.env.NODE_ENV=\"production\"",
             f"--outfile={site / 'react-app.js'}"], app, env={"NODE_PATH": str(modules)})
    (site / "react.html").write_text(REACT_PAGE)
    return site


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """The app's own origin, serving the bundled page (another origin than the server's)."""

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                              headless=True)
        yield launched
        launched.close()


def install_amounts(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("CREATE TABLE amounts (id int PRIMARY KEY, amount numeric, big bigint)")
        conn.execute("INSERT INTO amounts SELECT n, 0, 0 FROM generate_series(1, 12) n")
        plan = triggers.plan_install(conn, [TableRef("public", "amounts")],
                                     channel=DEFAULT_CHANNEL, durable=True, excluded={})
        for statement in plan.statements:
            conn.execute(statement)


def test_a_bundled_app_shares_one_stream_and_keeps_every_digit(
    bundled_app: Path, browser: Any, postgresql: psycopg.Connection[Any], dsn: str
) -> None:
    install_amounts(postgresql)
    postgresql.autocommit = True
    with static_site(bundled_app) as app_origin, running_server(
        dsn, allow_origins=(app_origin,)
    ) as server:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        streams: list[str] = []
        page.on("request", lambda request: streams.append(request.url)
                if "/events" in request.url and request.method == "GET" else None)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{app_origin}/?server={server.url}")
        expect(page.locator("#state")).to_have_text("open")
        postgresql.execute("UPDATE amounts SET amount = 12345678901234567890.12,"
                           " big = 9007199254740993 WHERE id = 3")
        postgresql.execute("UPDATE amounts SET amount = 399.90 WHERE id = 4")
        postgresql.execute("UPDATE amounts SET amount = 1 WHERE id = 11")  # nobody's row
        expect(page.locator("#out li")).to_have_count(2)
        expect(page.locator('#out li[data-id="3"]')).to_have_text(
            "12345678901234567890.12 9007199254740993")
        expect(page.locator('#out li[data-id="4"]')).to_have_text("399.90 null")
        received = page.evaluate("window.received")
        assert received == [
            {"subscription": 3, "id": 3, "amount": "12345678901234567890.12",
             "big": "9007199254740993"},
            {"subscription": 4, "id": 4, "amount": "399.90", "big": None},
        ]
        assert len(streams) == 1, streams
        assert not errors


# -- the demo page, built on the package: its notice and its "Saved." ------------------------------


def person(browser: Any, width: int = 1280, height: int = 800) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    return context


def open_booking(context: Any, url: str, user: str, booking: int = 123) -> Any:
    page = context.new_page()
    page.missing = []
    page.on("response", lambda response: page.missing.append(response.url)
            if response.status == 404 else None)
    page.goto(f"{url}/?user={user}&booking={booking}")
    expect(page.locator("#editor-title")).to_contain_text(f"#{booking}")
    expect(page.locator("#connection")).to_have_text("live")
    return page


def anna_sets(dsn: str, assignments: str, booking: int = 123) -> None:
    with psycopg.connect(dsn) as anna, anna.transaction():
        anna.execute("SELECT set_config('bookwatch.actor', 'Anna', true)")
        anna.execute(f"UPDATE bookings SET {assignments}, version = version + 1"  # type: ignore[arg-type]
                     " WHERE id = %s", (booking,))


def booking_row(dsn: str, booking: int = 123) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute("SELECT * FROM bookings WHERE id = %s", (booking,))
        names = [column.name for column in cursor.description or []]
        found = cursor.fetchone()
        assert found is not None
        return dict(zip(names, found, strict=True))


def test_the_notice_tells_only_current_values_and_stays_small(demo_dsn: str, browser: Any) -> None:
    guests = booking_row(demo_dsn)["anzahl_gaeste"]
    with running_server(demo_dsn, demo=True) as server:
        ben = open_booking(person(browser), server.url, "Ben")
        toast = ben.locator("#toast-changes")
        anna_sets(demo_dsn, f"anzahl_gaeste = {guests + 1}")
        expect(toast).to_contain_text(f"Guests: {guests} → {guests + 1}")
        # Ben saves his own number of guests: Anna's 2 → 3 is no longer true, the notice says
        # nothing of it from now on.
        ben.locator("#anzahl_gaeste").fill(str(guests + 3))
        ben.locator("#save").click()
        expect(ben.locator("#saved")).to_be_visible()
        for price in ("100.00", "101.00", "102.00", "103.00", "399.90"):
            anna_sets(demo_dsn, f"gesamtpreis = {price}")
        # Every step shows (the oldest collapsed), the newest value with its every digit.
        expect(ben.locator('#toast-changes li[data-column="gesamtpreis"]')).to_have_text(
            re.compile(r"^Total price: €[\d,]+\.\d\d → … → €103\.00 → €399\.90$"))
        expect(toast).not_to_contain_text("Guests")
        expect(ben.locator("#gesamtpreis")).to_have_value("399.90")
        # Many fields at once: the list stays short.
        anna_sets(demo_dsn, f"anreise = anreise + 1, abreise = abreise + 1, status = 'storniert',"
                            f" bemerkungen = 'late arrival', anzahl_gaeste = {guests + 4}")
        expect(toast.locator("li.more")).to_have_text("and 2 more fields")
        expect(toast.locator("li")).to_have_count(5)
        expect(toast.locator('li[data-column="anzahl_gaeste"]')).to_have_text(
            f"Guests: {guests + 3} → {guests + 4}")
        assert not ben.missing, ben.missing  # no /favicon.ico (or anything else) 404s
        assert ben.locator('link[rel="icon"]').count() == 1


def test_saved_is_hidden_once_a_field_needs_a_choice(demo_dsn: str, browser: Any) -> None:
    with running_server(demo_dsn, demo=True) as server:
        ben = open_booking(person(browser), server.url, "Ben")
        # "Saved." goes by itself 2 s after a save; here it is long: only the clash may hide it.
        ben.evaluate("""() => {
          const later = window.setTimeout;
          window.setTimeout = (fn, ms, ...rest) => later(fn, ms === 2000 ? 600000 : ms, ...rest);
        }""")
        ben.locator("#bemerkungen").fill("Ben's note")
        ben.locator("#save").click()
        expect(ben.locator("#saved")).to_be_visible()
        ben.locator("#gesamtpreis").fill("1.00")
        anna_sets(demo_dsn, "gesamtpreis = 2.00")
        expect(ben.locator('[data-conflict="gesamtpreis"]')).to_be_visible()
        expect(ben.locator("#pending-note")).to_have_text("Choose a value for 1 field first.")
        assert ben.locator("#saved").is_hidden()


def test_at_390_px_the_notice_covers_neither_who_nor_the_list_header(
    demo_dsn: str, browser: Any
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        ben = open_booking(person(browser, 390, 844), server.url, "Ben")
        anna_sets(demo_dsn, "gesamtpreis = gesamtpreis + 1, bemerkungen = 'a long note here'")
        expect(ben.locator("#toast")).to_be_visible()
        toast = ben.locator("#toast").bounding_box()
        for covered in (".who", "#bookings thead"):
            box = ben.locator(covered).bounding_box()
            assert toast is not None and box is not None
            overlaps = (toast["x"] < box["x"] + box["width"]
                        and box["x"] < toast["x"] + toast["width"]
                        and toast["y"] < box["y"] + box["height"]
                        and box["y"] < toast["y"] + toast["height"])
            assert not overlaps, (covered, toast, box)
        assert ben.evaluate("document.documentElement.scrollWidth") <= 390


def test_use_bookwatch_keeps_one_stream_sees_the_latest_render_and_closes_on_unmount(
    bundled_app: Path, browser: Any, postgresql: psycopg.Connection[Any], dsn: str
) -> None:
    install_amounts(postgresql)
    postgresql.autocommit = True
    with static_site(bundled_app) as app_origin, running_server(
        dsn, allow_origins=(app_origin,)
    ) as server:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        streams: list[str] = []
        ended: list[str] = []
        page.on("request", lambda request: streams.append(request.url)
                if "/events" in request.url and request.method == "GET" else None)
        page.on("requestfailed", lambda request: ended.append(request.url)
                if "/events" in request.url else None)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{app_origin}/react.html?server={server.url}")
        expect(page.locator("#state")).to_have_text("open")
        for _ in range(3):
            page.locator("#click").click()
        postgresql.execute("UPDATE amounts SET amount = 9007199254740993.5 WHERE id = 5")
        expect(page.locator("#shown")).to_have_text("9007199254740993.5 after 3 clicks")
        assert len(streams) == 1, streams  # re-renders did not reopen it
        page.locator("#unmount").click()
        expect(page.locator("#state")).to_have_text("unmounted")
        page.wait_for_timeout(300)
        assert len(ended) == 1, (streams, ended)  # the stream closed with the component
        assert len(streams) == 1 and not errors, (streams, errors)
