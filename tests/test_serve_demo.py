"""``serve --demo``: the page and the booking API with optimistic locking and the real actor."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest

from pgwatch_cli.demo.api import CONFLICT_MESSAGE
from tests.serve_helpers import SseReader, bump_price, install_demo, running_server


@pytest.fixture
def demo_dsn(postgresql: psycopg.Connection[Any], dsn: str) -> str:
    install_demo(postgresql)
    postgresql.autocommit = True
    return dsn


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
    assert "new EventSource(" in page.text and "--accent" in page.text


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
