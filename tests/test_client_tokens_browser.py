"""Scoped tokens in Chromium: pages load ``/bookwatch.js`` from a real ``serve
--token-secret-file`` and get their tokens from ``getToken()``, as an app's backend would mint
them. A tenant-7 page never receives anything of tenant 8 (live, replay, presence) while a
tenant-8 page runs beside it, and an expiring token is replaced without losing an event."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli.auth import secret as secrets
from pgwatch_cli.auth.tokens import mint
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from tests.fix_browser import TestBrowser
from tests.serve_helpers import SseReader, newest_seq, running_server

WAIT_MS = 15_000
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    """The signing secret as an operator keeps it: a file only its owner reads."""
    path = tmp_path / "token-secret"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return secrets.load_secret(str(path))


@pytest.fixture
def tenant_dsn(postgresql: psycopg.Connection[Any], dsn: str) -> str:
    """bookings with tenant column hotel_id: odd ids belong to hotel 8, even ids to hotel 7."""
    conn = postgresql
    conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, hotel_id int, price numeric)")
    conn.execute("INSERT INTO bookings SELECT g, 7 + g % 2, 100 FROM generate_series(1, 8) g")
    conn.commit()
    table = TableRef("public", "bookings")
    plan = triggers.run(conn, lambda: triggers.plan_install(
        conn, [table], channel=DEFAULT_CHANNEL, mode="log", excluded={},
        tenant_columns={table: "hotel_id"}))
    assert plan.statements
    conn.autocommit = True
    return dsn


@pytest.fixture
def server_url(tenant_dsn: str, secret: bytes) -> Iterator[str]:
    with running_server(tenant_dsn, token_secret=secret) as server:
        yield server.url


def bump(conn: psycopg.Connection[Any], *ids: int) -> list[int]:
    """One committed UPDATE per booking; the seqs they got."""
    seqs = []
    for booking in ids:
        conn.execute("UPDATE bookings SET price = price + 1 WHERE id = %s", (booking,))
        seqs.append(newest_seq(conn))
    return seqs


# The page's side: `window.subscribe(name, options)` connects one subscription through getToken
# (the page's `mintToken`, which the test exposes: the app's backend) and records what it gets.
PAGE_SETUP = """async (tokenDelayMs) => {
  const first = await window.mintToken();
  window.tokenCalls = 0;
  const client = await import(`/bookwatch.js?token=${encodeURIComponent(first)}`);
  const getToken = async () => {
    window.tokenCalls += 1;
    await new Promise((resolve) => setTimeout(resolve, tokenDelayMs));  // the backend's round trip
    return await window.mintToken();
  };
  // The page's fetch, counting the streams the server ended because their token ran out.
  window.expiredResets = 0;
  const pageFetch = window.fetch.bind(window);
  const fetch = async (...args) => {
    const response = await pageFetch(...args);
    if (!response.body) return response;
    const decoder = new TextDecoder();
    const watch = new TransformStream({transform(chunk, controller) {
      if (decoder.decode(chunk, {stream: true}).includes('"token-expired"')) {
        window.expiredResets += 1;
      }
      controller.enqueue(chunk);
    }});
    return new Response(response.body.pipeThrough(watch),
                        {status: response.status, headers: response.headers});
  };
  window.changes = [];
  window.presence = [];
  window.lives = {};
  window.subscribe = (name, options) => {
    const live = client.connect({getToken, fetch, table: "bookings", ...options});
    live.on("change", (event) => window.changes.push(
      {via: name, id: event.id, tenant: event.tenant, seq: event.seq}));
    live.on("presence", ({entity, viewers}) => window.presence.push(
      {via: name, entity, viewers}));
    window.lives[name] = live;
    return live.status;
  };
}"""


def tenant_page(browser: TestBrowser, url: str, secret: bytes, *, sub: str, tenant: int,
                ttl_s: float = 600, clock_behind_s: float = 0, token_delay_ms: int = 0) -> Any:
    """A page of its own (its own context) whose backend mints ``sub``'s token for ``tenant``."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.expose_function("mintToken", lambda: mint(secret, sub=sub, tables=["bookings"],
                                                   tenant=tenant, ttl_s=ttl_s))
    if clock_behind_s:
        # The laptop's clock runs behind the server's (timers still run at their pace).
        page.clock.set_system_time(time.time() - clock_behind_s)
    page.goto(url + "/healthz")  # the server's origin: no CORS needed
    page.evaluate(PAGE_SETUP, token_delay_ms)
    return page


def wait_for_status(page: Any, name: str, status: str = "open") -> None:
    page.wait_for_function("([name, status]) => window.lives[name].status === status",
                           arg=[name, status])


def changes(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate("window.changes"))


def wait_for_seq(page: Any, seq: int) -> None:
    page.wait_for_function("(seq) => window.changes.some((change) => change.seq >= seq)",
                           arg=seq)


def test_a_tenant_7_page_gets_its_own_live_and_replayed_changes_and_nothing_of_tenant_8(
    browser: TestBrowser, server_url: str, secret: bytes, postgresql: psycopg.Connection[Any]
) -> None:
    seven = tenant_page(browser, server_url, secret, sub="Anna", tenant=7)
    eight = tenant_page(browser, server_url, secret, sub="Ben", tenant=8)
    for page in (seven, eight):
        page.evaluate("window.subscribe('live', {})")
        wait_for_status(page, "live")
    # Live: tenant 8's last change (5) comes after tenant 7's last (6).
    one, two, three, four, six, five = bump(postgresql, 1, 2, 3, 4, 6, 5)
    wait_for_seq(seven, six)
    wait_for_seq(eight, five)
    seven.wait_for_timeout(500)  # a leak of booking 5 would have reached the page by now
    assert [(c["id"], c["tenant"], c["seq"]) for c in changes(seven)] == [
        (2, 7, two), (4, 7, four), (6, 7, six)]
    assert [(c["id"], c["tenant"], c["seq"]) for c in changes(eight)] == [
        (1, 8, one), (3, 8, three), (5, 8, five)]

    # Replay: the tenant-7 page goes away, both tenants write, it comes back with the last id
    # it had and gets exactly its own missed changes.
    last_id = seven.evaluate("window.lives.live.lastEventId")
    assert last_id is not None and last_id.rpartition(":")[2] == str(six), last_id
    seven.evaluate("window.lives.live.close(); window.changes = []")
    missed = dict(zip((7, 8, 1, 2), bump(postgresql, 7, 8, 1, 2), strict=True))
    seven.evaluate("(id) => window.subscribe('back', {lastEventId: id})", last_id)
    wait_for_seq(seven, missed[2])
    (later,) = bump(postgresql, 3)  # tenant 8, live again: not for this page
    wait_for_seq(eight, later)
    seven.wait_for_timeout(500)
    assert [(c["via"], c["id"], c["seq"]) for c in changes(seven)] == [
        ("back", 8, missed[8]), ("back", 2, missed[2])]
    assert [c["id"] for c in changes(eight)][3:] == [7, 1, 3]
    assert not seven.errors and not eight.errors, (seven.errors, eight.errors)


def test_presence_of_tenant_8_never_reaches_a_tenant_7_page(
    browser: TestBrowser, server_url: str, secret: bytes
) -> None:
    seven = tenant_page(browser, server_url, secret, sub="Anna", tenant=7)
    eight = tenant_page(browser, server_url, secret, sub="Ben", tenant=8)
    # Each page views a row of its own tenant (2: hotel 7, 1: hotel 8) and one of the other's.
    for page, viewer in ((seven, "Anna"), (eight, "Ben")):
        for entity in ("bookings:1", "bookings:2"):
            page.evaluate("([viewer, entity]) =>"
                          " window.subscribe(entity, {viewer, viewing: entity})", [viewer, entity])
    # A second tenant-7 viewer (Carl) and a second tenant-8 one (Dora) open row 2 elsewhere.
    def viewer(name: str, tenant: int) -> SseReader:
        token = mint(secret, sub=name, tables=["bookings"], tenant=tenant, ttl_s=600)
        return SseReader(server_url, params={"token": token, "viewer": name,
                                             "viewing": "bookings:2"})

    with contextlib.ExitStack() as others:
        others.enter_context(viewer("Carl", 7))
        others.enter_context(viewer("Dora", 8))
        presence = "([entity, viewers]) => window.presence.some((frame) =>" \
                   " frame.entity === entity && frame.viewers.join() === viewers.join())"
        seven.wait_for_function(presence, arg=["bookings:2", ["Anna", "Carl"]])
        eight.wait_for_function(presence, arg=["bookings:2", ["Ben", "Dora"]])
        seven.wait_for_function(presence, arg=["bookings:1", ["Anna"]])
        eight.wait_for_function(presence, arg=["bookings:1", ["Ben"]])
        seven.wait_for_timeout(1000)
    seen_by_seven = {name for frame in seven.evaluate("window.presence")
                     for name in frame["viewers"]}
    seen_by_eight = {name for frame in eight.evaluate("window.presence")
                     for name in frame["viewers"]}
    assert seen_by_seven == {"Anna", "Carl"}
    assert seen_by_eight == {"Ben", "Dora"}
    assert not seven.errors and not eight.errors, (seven.errors, eight.errors)


def write_every(page: Any, conn: psycopg.Connection[Any], ids: list[int],
                pause_ms: int) -> list[int]:
    """A change per id, ``pause_ms`` apart; the page keeps running (and calling getToken)
    while the test waits."""
    seqs = []
    for booking in ids:
        seqs += bump(conn, booking)
        page.wait_for_timeout(pause_ms)
    return seqs


@pytest.mark.parametrize(("clock_behind_s", "token_delay_ms"), [
    # The page refreshes the token itself before it expires.
    pytest.param(0, 0, id="refreshed-before-expiry"),
    # The page's clock is a minute behind: it does not see the expiry coming, the server ends
    # the stream with reset "token-expired", and getToken() replaces the token then. The
    # backend takes its time: changes are written while the page has no stream.
    pytest.param(60, 700, id="ended-by-the-server"),
])
def test_an_expiring_token_is_replaced_by_get_token_without_losing_an_event(
    browser: TestBrowser, server_url: str, secret: bytes, postgresql: psycopg.Connection[Any],
    clock_behind_s: float, token_delay_ms: int,
) -> None:
    ttl_s = 4
    page = tenant_page(browser, server_url, secret, sub="Anna", tenant=7, ttl_s=ttl_s,
                       clock_behind_s=clock_behind_s, token_delay_ms=token_delay_ms)
    opened = time.monotonic()
    page.evaluate("window.subscribe('live', {})")
    wait_for_status(page, "live")
    # Before, across and after the first token's expiry (tenant 7: even ids).
    written = write_every(page, postgresql, [2, 4, 6, 8] * 5, pause_ms=500)
    assert time.monotonic() - opened > 2 * ttl_s  # it spanned at least two tokens' lives
    wait_for_seq(page, written[-1])
    page.wait_for_timeout(500)  # a duplicate would have arrived by now
    assert [c["seq"] for c in changes(page)] == written
    calls = page.evaluate("window.tokenCalls")
    spent = time.monotonic() - opened
    # A new token for each one that ran out, not a stream of them.
    assert 2 <= calls <= spent / ttl_s * 2 + 2, (calls, spent)
    expired = page.evaluate("window.expiredResets")
    if clock_behind_s:
        assert expired >= 1, "no token ran out: the reset path was not taken"
    else:
        assert expired == 0
    assert not page.errors, page.errors
