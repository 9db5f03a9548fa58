"""``serve --token-secret-file``: signed tokens scope what a client receives — live events,
replay, presence frames, ``/presence`` and ``/metrics`` — against a real server and real
PostgreSQL, with tenant 7 and tenant 8 side by side."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from pgwatch_cli.auth import mint
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from tests.serve_helpers import SseReader, newest_seq, running_server

SECRET = b"tenant-tests-secret-0123456789abcdef"
SHARED = "shared-team-token"


def token(sub: str = "Anna", tables: tuple[str, ...] = ("bookings",), ttl_s: float = 600,
          **claims: Any) -> str:
    return mint(SECRET, sub=sub, tables=tables, ttl_s=ttl_s, **claims)


@pytest.fixture
def tenant_dsn(postgresql: psycopg.Connection[Any], dsn: str) -> str:
    """bookings (tenant column hotel_id) and rooms (no tenant column), log mode."""
    conn = postgresql
    conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, hotel_id int, price numeric)")
    conn.execute("CREATE TABLE rooms (id int PRIMARY KEY, name text)")
    conn.execute("INSERT INTO bookings SELECT g, 7 + g % 2, 100 FROM generate_series(1, 8) g")
    conn.commit()
    tables = [TableRef("public", "bookings"), TableRef("public", "rooms")]
    plan = triggers.run(conn, lambda: triggers.plan_install(
        conn, tables, channel=DEFAULT_CHANNEL, mode="log", excluded={},
        tenant_columns={tables[0]: "hotel_id"}))
    assert plan.statements
    conn.autocommit = True
    return dsn


@pytest.fixture
def server_url(tenant_dsn: str) -> Iterator[str]:
    with running_server(tenant_dsn, token=SHARED, token_secret=SECRET) as server:
        yield server.url


def test_the_demo_api_is_not_for_scoped_tokens(demo_dsn: str) -> None:
    """It lists and writes every booking, whatever the token: only the shared token or an
    unrestricted one may use it."""
    with running_server(demo_dsn, token_secret=SECRET, demo=True) as server:
        def status(who: str, path: str = "/api/bookings") -> int:
            return httpx.get(server.url + path, params={"token": who}, timeout=10).status_code

        assert status(token(tenant=7)) == 403
        assert status(token(tables=("bookings",)), "/api/bookings/123") == 403
        put = httpx.put(server.url + "/api/bookings/123", params={"token": token(ids=[123])},
                        json={}, timeout=10)
        assert put.status_code == 403
        assert status(token(tables=("*",))) == 200
        assert status(token(tenant=7), "/bookwatch.js") == 200


def write_both_tenants(conn: psycopg.Connection[Any]) -> int:
    """One change to a row of each tenant and one to a table without tenants; the last seq."""
    conn.execute("UPDATE bookings SET price = price + 1 WHERE id = 1")  # tenant 8
    conn.execute("UPDATE bookings SET price = price + 1 WHERE id = 2")  # tenant 7
    conn.execute("INSERT INTO rooms VALUES (1, 'Blue')")
    conn.execute("UPDATE bookings SET price = price + 1 WHERE id = 3")  # tenant 8
    conn.execute("UPDATE bookings SET price = price + 1 WHERE id = 4")  # tenant 7
    return newest_seq(conn)


def changes_until(reader: SseReader, last_seq: int) -> list[dict[str, Any]]:
    """Change events up to the one with ``last_seq``, which the reader must receive."""
    seen = []
    while True:
        event = json.loads(reader.next("change").data)
        seen.append(event)
        if event["seq"] >= last_seq:
            return seen


def test_live_events_reach_only_the_tenant_and_tables_of_the_token(
    server_url: str, postgresql: psycopg.Connection[Any]
) -> None:
    seven = SseReader(server_url, params={"token": token(tenant=7)})
    eight = SseReader(server_url, headers={"Authorization": f"Bearer {token(tenant=8)}"})
    rooms = SseReader(server_url, params={"token": token(tables=("rooms", "bookings"))})
    shared = SseReader(server_url, params={"token": SHARED})
    with seven, eight, rooms, shared:
        assert {seven.status, eight.status, rooms.status, shared.status} == {200}
        write_both_tenants(postgresql)
        # tenant 8's last event comes after tenant 7's last: a leak would have arrived by then
        marker = postgresql.execute(
            "UPDATE bookings SET price = price + 1 WHERE id = 6 RETURNING id").fetchone()
        assert marker == (6,)
        last = newest_seq(postgresql)
        everything = changes_until(shared, last)
        seen_by_eight = changes_until(eight, last - 2)  # its last: booking 3
        assert [(e["id"], e["tenant"]) for e in seen_by_eight] == [(1, 8), (3, 8)]
        seen_by_seven = changes_until(seven, last)
        assert [(e["id"], e["tenant"]) for e in seen_by_seven] == [(2, 7), (4, 7), (6, 7)]
        with pytest.raises(AssertionError):  # booking 6 (tenant 7) never reaches tenant 8
            eight.next("change", timeout=1.0)
        # No tenant claim: every tenant of the tables it names, rooms included.
        assert len(changes_until(rooms, last)) == 6
    assert [e["table"] for e in everything].count("rooms") == 1
    assert len(everything) == 6


def test_replay_after_last_event_id_keeps_to_the_tenant(
    server_url: str, postgresql: psycopg.Connection[Any]
) -> None:
    start = newest_seq(postgresql)
    write_both_tenants(postgresql)
    postgresql.execute("UPDATE bookings SET price = price + 1 WHERE id = 6")  # tenant 7
    last = newest_seq(postgresql)
    with SseReader(server_url, params={"token": token(tenant=8)},
                   headers={"Last-Event-ID": str(start)}) as eight, \
            SseReader(server_url, params={"token": token(tenant=7, ids=[4, 6])},
                      headers={"Last-Event-ID": str(start)}) as seven_rows:
        replayed = changes_until(seven_rows, last)
        assert [(e["id"], e["tenant"]) for e in replayed] == [(4, 7), (6, 7)]
        # tenant 8 hears of its own two rows, then (live) nothing of tenant 7's row 6
        assert [e["id"] for e in changes_until(eight, last - 2)] == [1, 3]
        postgresql.execute("UPDATE bookings SET price = price + 1 WHERE id = 5")  # tenant 8
        assert json.loads(eight.next("change").data)["id"] == 5


def test_presence_is_kept_apart_per_tenant_and_row(server_url: str) -> None:
    def viewer(name: str, viewing: str, **claims: Any) -> SseReader:
        return SseReader(server_url, params={
            "token": token(sub=name, **claims), "viewer": name, "viewing": viewing})

    anna = viewer("Anna", "bookings:2", tenant=7)
    assert json.loads(anna.next("presence").data) == {"entity": "bookings:2",
                                                      "viewers": ["Anna"]}
    # Ben (tenant 8) opens tenant 7's row 2 by its id: he must neither see Anna nor be seen.
    ben = viewer("Ben", "bookings:2", tenant=8)
    assert json.loads(ben.next("presence").data) == {"entity": "bookings:2",
                                                     "viewers": ["Ben"]}
    carl = viewer("Carl", "bookings:2", tenant=7)
    both = {"entity": "bookings:2", "viewers": ["Anna", "Carl"]}
    assert json.loads(anna.next("presence").data) == both
    assert json.loads(carl.next("presence").data) == both
    # A token for row 4 only: its join for row 2 is ignored (no frame, no entry).
    dora = viewer("Dora", "bookings:2", tenant=7, ids=[4])
    assert dora.status == 200
    # A token for another table: same.
    erik = viewer("Erik", "bookings:2", tables=("rooms",))

    def presence(who: str) -> Any:
        return httpx.get(server_url + "/presence", params={"token": who}, timeout=10).json()

    deadline = time.monotonic() + 10
    while presence(SHARED) != {"bookings:2": ["Anna", "Ben", "Carl"]}:
        assert time.monotonic() < deadline, presence(SHARED)
        time.sleep(0.1)
    assert presence(token(tenant=7)) == {"bookings:2": ["Anna", "Carl"]}
    assert presence(token(tenant=8)) == {"bookings:2": ["Ben"]}
    assert presence(token(tenant=7, ids=[4])) == {}
    assert presence(token(tables=("rooms",))) == {}
    with pytest.raises(AssertionError):
        dora.next("presence", timeout=1.5)
    with pytest.raises(AssertionError):
        erik.next("presence", timeout=0.5)
    with pytest.raises(AssertionError):  # Ben heard nothing of Carl
        ben.next("presence", timeout=0.5)
    for reader in (anna, ben, carl, dora, erik):
        reader.close()


def test_a_token_announces_its_own_sub_only(server_url: str) -> None:
    response = httpx.get(server_url + "/events", timeout=10, params={
        "token": token(sub="Anna", tenant=7), "viewer": "Boss", "viewing": "bookings:2"})
    assert response.status_code == 403
    assert "viewer must be the token's sub" in response.json()["error"]


def test_metrics_need_the_shared_token_or_an_unrestricted_one(server_url: str) -> None:
    def status(who: str) -> int:
        return httpx.get(server_url + "/metrics", params={"token": who}, timeout=10).status_code

    assert status(token(tenant=7)) == 403
    assert status(token(tables=("bookings",))) == 403
    assert status(token(tables=("*",))) == 200
    assert status(SHARED) == 200


def test_an_expired_token_ends_the_stream_with_a_token_expired_reset(
    server_url: str, postgresql: psycopg.Connection[Any]
) -> None:
    with SseReader(server_url, params={"token": token(tenant=7, ttl_s=2)}) as reader:
        opened = time.monotonic()
        reset = reader.next("reset", timeout=20)
        waited = time.monotonic() - opened
        assert reader.ended()
    assert json.loads(reset.data) == {"reason": "token-expired"}
    assert reset.id in ("", None)  # Last-Event-ID stays the last event received
    # Ended by its expiry (within 2 s of minting), not by a later event or heartbeat.
    assert waited < 10


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: mint(b"another-secret-of-enough-length-123456", sub="Anna",
                              tables=["bookings"], tenant=7, ttl_s=600), id="forged"),
    pytest.param(lambda: jwt.encode({"sub": "Anna", "tables": ["bookings"], "tenant": 7,
                                     "exp": int(time.time()) + 600}, None, algorithm="none"),
                 id="alg-none"),
    pytest.param(lambda: jwt.encode({"sub": "Anna", "tables": ["bookings"],
                                     "exp": int(time.time()) + 600}, SECRET,
                                    algorithm="HS512"), id="other-alg"),
    pytest.param(lambda: mint(SECRET, sub="Anna", tables=["bookings"], ttl_s=60,
                              now=time.time() - 3600), id="expired"),
    pytest.param(lambda: jwt.encode({"sub": "Anna", "exp": int(time.time()) + 600}, SECRET,
                                    algorithm="HS256"), id="no-tables"),
    pytest.param(lambda: token()[:-3] + "abc", id="tampered"),
    pytest.param(lambda: "not.a.jwt", id="garbage"),
])
def test_forged_expired_or_malformed_tokens_get_401(server_url: str, bad: Any) -> None:
    presented = bad()
    for path in ("/events", "/presence", "/metrics", "/bookwatch.js"):
        response = httpx.get(server_url + path, params={"token": presented}, timeout=10)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(server_url + "/healthz", timeout=10).status_code == 200
