"""``serve --demo``: the page and the booking API with optimistic locking and the real actor,
on a pool that survives killed connections and saves stuck on a row lock."""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from pgwatch_cli.demo.api import CONFLICT_MESSAGE
from tests.serve_helpers import SseReader, bump_price, running_server


def _put(url: str, booking: int, body: dict[str, Any], version: str | None,
         user: str = "Anna") -> httpx.Response:
    headers = {"X-Bookwatch-User": user}
    if version is not None:
        headers["If-Match"] = version
    return httpx.put(f"{url}/api/bookings/{booking}", json=body, headers=headers, timeout=10)


def test_page_is_served_with_script_and_style_inlined(demo_dsn: str) -> None:
    with running_server(demo_dsn, demo=True) as server:
        page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="demo.js"' not in page.text and 'href="demo.css"' not in page.text
    # The script and style themselves, whatever they hold (the page may build on /bookwatch.js).
    assert "<script>\n" in page.text and "<style>\n" in page.text and "--accent" in page.text


def test_list_and_one_booking_with_its_version_as_etag(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        before = httpx.get(server.url + "/api/bookings", timeout=10)
        seq = bump_price(postgresql, 1)
        after = httpx.get(server.url + "/api/bookings", timeout=10)
        listing = after.json()
        one = httpx.get(server.url + "/api/bookings/123", timeout=10)
        missing = httpx.get(server.url + "/api/bookings/99999", timeout=10)
    # The newest change the list shows, so a stream can resume right after it.
    assert before.headers["x-bookwatch-seq"] == str(seq - 1)
    assert after.headers["x-bookwatch-seq"] == str(seq)
    assert listing[0]["version"] == 2
    assert len(listing) == 200 and listing[122]["id"] == 123
    assert one.headers["etag"] == '"1"'
    booking = one.json()
    assert booking["reservierungsnummer"] == "R-2026-00123"
    assert booking["gesamtpreis"].count(".") == 1 and " " in booking["gast"]
    assert missing.status_code == 404


def test_save_with_if_match_writes_as_the_editing_user_and_stale_save_conflicts(
    demo_dsn: str,
) -> None:
    with running_server(demo_dsn, demo=True) as server, SseReader(server.url) as stream:
        saved = _put(server.url, 123, {"gesamtpreis": "999.50"}, '"1"', user="Anna")
        event = json.loads(stream.next().data)
        stale = _put(server.url, 123, {"status": "storniert"}, '"1"', user="Ben")
        fresh = httpx.get(server.url + "/api/bookings/123", timeout=10).json()
    assert saved.status_code == 200, saved.text
    assert saved.headers["etag"] == '"2"' and saved.json()["gesamtpreis"] == "999.50"
    assert event["actor"] == "Anna" and event["id"] == 123
    assert set(event["changed"]) >= {"gesamtpreis", "version"}
    assert stale.status_code == 409
    assert stale.json()["error"] == CONFLICT_MESSAGE
    assert "modified by another user" in CONFLICT_MESSAGE
    assert stale.json()["current"]["version"] == 2
    assert fresh["status"] != "storniert" and fresh["version"] == 2


def test_the_actor_name_is_bound_not_pasted(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    name = "Robert'); DROP TABLE bookings; --"
    with running_server(demo_dsn, demo=True) as server, SseReader(server.url) as stream:
        assert _put(server.url, 5, {"bemerkungen": "hi"}, '"1"', user=name).status_code == 200
        assert json.loads(stream.next().data)["actor"] == name
    assert postgresql.execute("SELECT count(*) FROM bookings").fetchone() == (200,)


@pytest.mark.parametrize(
    ("body", "version", "status"),
    [
        ({"gesamtpreis": "10"}, None, 428),
        ({"gesamtpreis": "10"}, "yesterday", 400),
        ({"gesamtpreis": "-1"}, '"1"', 422),
        ({"reservierungsnummer": "X"}, '"1"', 422),
        ({}, '"1"', 422),
        ({"anreise": "2027-05-02", "abreise": "2027-05-01"}, '"1"', 422),
    ],
)
def test_bad_saves_are_refused_with_a_reason(
    demo_dsn: str, body: dict[str, Any], version: str | None, status: int
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        response = _put(server.url, 7, body, version)
        unchanged = httpx.get(server.url + "/api/bookings/7", timeout=10).json()
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert unchanged["version"] == 1


def test_without_demo_there_is_no_page_or_api(demo_dsn: str) -> None:
    with running_server(demo_dsn) as server:
        assert httpx.get(server.url + "/", timeout=10).status_code == 404
        assert httpx.get(server.url + "/api/bookings", timeout=10).status_code == 404


def _backends(conn: psycopg.Connection[Any], application_name: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s", (application_name,),
    ).fetchall()
    return [pid for (pid,) in rows]


def test_the_first_request_after_its_connections_were_terminated_succeeds(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn, demo=True) as server:
        warm = [httpx.get(server.url + "/api/bookings/1", timeout=10) for _ in range(3)]
        assert all(response.status_code == 200 for response in warm)
        pids = _backends(postgresql, "bookwatch serve")
        assert pids, "the pool keeps a connection"
        for pid in pids:
            postgresql.execute("SELECT pg_terminate_backend(%s)", (pid,))
        after = [httpx.get(server.url + "/api/bookings/2", timeout=10) for _ in range(3)]
        saved = _put(server.url, 2, {"bemerkungen": "after the restart"}, '"1"')
    assert [response.status_code for response in after] == [200, 200, 200]
    assert saved.status_code == 200, saved.text


def test_saves_stuck_on_a_row_lock_give_up_and_do_not_starve_other_requests(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn, demo=True) as server, \
            psycopg.connect(demo_dsn) as holder:
        holder.execute("SELECT 1 FROM bookings WHERE id = 5 FOR UPDATE")  # held until rollback
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            stuck = [pool.submit(_put, server.url, 5, {"bemerkungen": f"try {n}"}, '"1"')
                     for n in range(4)]
            eventually_waiting = time.monotonic() + 10
            while len(postgresql.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()").fetchall()) < 4:
                assert time.monotonic() < eventually_waiting, "the saves never waited"
                time.sleep(0.02)
            started = time.monotonic()
            other = httpx.get(server.url + "/api/bookings/6", timeout=10)
            answered_in = time.monotonic() - started
            outcomes = [future.result(timeout=30) for future in stuck]
        holder.rollback()
        after = _put(server.url, 5, {"bemerkungen": "now"}, '"1"')
    assert other.status_code == 200 and answered_in < 1.0, answered_in
    assert [response.status_code for response in outcomes] == [503] * 4
    assert all(response.headers["retry-after"] for response in outcomes)
    assert "someone else is saving" in outcomes[0].json()["error"]
    assert after.status_code == 200, after.text


def test_the_editor_name_is_percent_encoded_utf8(demo_dsn: str) -> None:
    with running_server(demo_dsn, demo=True) as server, SseReader(server.url) as stream:
        saved = _put(server.url, 8, {"bemerkungen": "你好"}, '"1"', user=quote("李雷"))
        event = json.loads(stream.next().data)
        refused = {
            label: _put(server.url, 8, {"bemerkungen": "x"}, '"2"', user=header).status_code
            for label, header in [
                ("bad utf-8", "%FF%FE"), ("control", "Anna%07"), ("newline", "Anna%0ABen"),
                ("too long", quote("é" * 101)),
            ]
        }
        raw = httpx.put(f"{server.url}/api/bookings/8", json={"bemerkungen": "x"}, timeout=10,
                        headers={"If-Match": '"2"', "X-Bookwatch-User": "李雷".encode()})
        unchanged = httpx.get(server.url + "/api/bookings/8", timeout=10).json()
    assert saved.status_code == 200, saved.text
    assert event["actor"] == "李雷"
    assert refused == dict.fromkeys(refused, 400)
    assert raw.status_code == 400 and "encodeURIComponent" in raw.json()["error"]
    assert unchanged["version"] == 2


def test_a_conflict_names_who_saved_the_booking(demo_dsn: str) -> None:
    with running_server(demo_dsn, demo=True) as server:
        assert _put(server.url, 9, {"status": "bestätigt"}, '"1"', user="Anna").status_code == 200
        stale = _put(server.url, 9, {"bemerkungen": "late"}, '"1"', user="Ben")
    assert stale.status_code == 409
    assert stale.json()["saved_by"] == "Anna"
    assert stale.json()["current"]["version"] == 2
