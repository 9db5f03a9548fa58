"""The client as an app gets it: ``npm pack`` → installed into a scratch project → bundled with
esbuild → run in Chromium against a real ``bookwatch serve``. Ten subscriptions share one
connection, and numbers keep every digit from the row to the page."""

from __future__ import annotations

import contextlib
import http.server
import json
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
