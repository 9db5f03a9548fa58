"""Presence shared by several ``serve`` processes through PostgreSQL (real servers, sockets)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import psycopg

from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.presence_sync import PresenceSync
from tests.presence_helpers import Frames, Replica, eventually
from tests.serve_helpers import SseReader, running_server

SEEN_WITHIN_S = 2.0  # docs/reference.md: a viewer on one replica is seen on another within 2 s


def presence_of(url: str) -> dict[str, list[str]]:
    response = httpx.get(url + "/presence", timeout=10)
    assert response.status_code == 200
    result: dict[str, list[str]] = response.json()
    return result


def test_a_viewer_on_one_server_is_seen_on_another_within_2_s_and_leaves(demo_dsn: str) -> None:
    with running_server(demo_dsn) as a, running_server(demo_dsn) as b, \
            SseReader(b.url, params={"viewer": "Ben", "viewing": "bookings:123"}) as ben:
        assert json.loads(ben.next("presence").data)["viewers"] == ["Ben"]
        eventually(lambda: presence_of(a.url), lambda seen: seen == {"bookings:123": ["Ben"]},
                   timeout=10)  # B has joined the shared map (it connects in the background)
        opened = time.monotonic()
        with SseReader(a.url, params={"viewer": "Anna", "viewing": "bookings:123"}) as anna:
            # A already knows Ben: Anna's first list names both.
            assert json.loads(anna.next("presence").data)["viewers"] == ["Anna", "Ben"]
            both = json.loads(ben.next("presence", timeout=SEEN_WITHIN_S).data)
            seen_after = time.monotonic() - opened
            assert both == {"entity": "bookings:123", "viewers": ["Anna", "Ben"]}
            assert presence_of(b.url) == {"bookings:123": ["Anna", "Ben"]}
        left = json.loads(ben.next("presence", timeout=SEEN_WITHIN_S).data)
        assert left == {"entity": "bookings:123", "viewers": ["Ben"]}
    assert seen_after < SEEN_WITHIN_S


def test_a_person_with_three_tabs_on_two_servers_is_listed_once(demo_dsn: str) -> None:
    with running_server(demo_dsn) as a, running_server(demo_dsn) as b:
        tab = {"viewer": "Anna", "viewing": "bookings:5"}
        with SseReader(a.url, params=tab), SseReader(a.url, params=tab), \
                SseReader(b.url, params=tab) as third, \
                SseReader(b.url, params={"viewer": "Ben", "viewing": "bookings:5"}):
            for url in (a.url, b.url):
                eventually(lambda url=url: presence_of(url),
                           lambda seen: seen == {"bookings:5": ["Anna", "Ben"]}, timeout=10)
            assert json.loads(third.next("presence").data)["viewers"] in (
                ["Anna"], ["Anna", "Ben"])
        for url in (a.url, b.url):
            eventually(lambda url=url: presence_of(url), lambda seen: seen == {}, timeout=10)


def test_a_crashed_replicas_viewers_expire(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    replica = Replica(demo_dsn, ttl_s=1.0)
    try:
        with running_server(demo_dsn) as server:
            eventually(lambda: replica.shared, bool, timeout=10)
            replica.call(lambda presence: presence.join("bookings:9", "Zoe", Frames()))
            eventually(lambda: presence_of(server.url),
                       lambda seen: seen == {"bookings:9": ["Zoe"]}, timeout=10)
            replica.crash()
            crashed = time.monotonic()
            rows = postgresql.execute("SELECT count(*) FROM bookwatch.presence").fetchone()
            assert rows == (1,)  # no cleanup: the rows stay until they expire
            eventually(lambda: presence_of(server.url), lambda seen: seen == {}, timeout=15)
            # The live server's heartbeat deletes them (default heartbeat: 5 s).
            eventually(
                lambda: postgresql.execute("SELECT count(*) FROM bookwatch.presence").fetchone(),
                lambda count: count == (0,), timeout=15,
            )
            assert time.monotonic() - crashed < 15
    finally:
        replica.close()


def test_a_crashed_replica_expires_even_while_the_others_churn(demo_dsn: str) -> None:
    live, doomed = Replica(demo_dsn), Replica(demo_dsn, ttl_s=1.0)
    try:
        eventually(lambda: live.shared and doomed.shared, bool, timeout=10)
        doomed.call(lambda presence: presence.join("bookings:4", "Zoe", Frames()))
        eventually(lambda: live.call(lambda presence: presence.viewers("bookings:4")),
                   lambda seen: seen == ["Zoe"], timeout=10)
        doomed.crash()
        tab = Frames()
        deadline = time.monotonic() + 15
        while "Zoe" in live.call(lambda presence: presence.viewers("bookings:4")):
            assert time.monotonic() < deadline, "the crashed replica's viewer stayed"
            # A sync every tick on the live server, and no wake-up from the crashed one.
            live.call(lambda presence: presence.join("bookings:8", "Churn", tab))
            time.sleep(0.1)
            live.call(lambda presence: presence.leave("bookings:8", "Churn", tab))
    finally:
        live.close()
        doomed.close()


def test_a_sync_stuck_behind_a_lock_fails_and_catches_up_without_flapping(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    notices: list[str] = []
    here, there = Replica(demo_dsn, notice=notices.append), Replica(demo_dsn)
    try:
        eventually(lambda: here.shared and there.shared, bool, timeout=10)
        here.call(lambda presence: presence.join("bookings:2", "Anna", Frames()))
        eventually(lambda: there.call(lambda presence: presence.snapshot()),
                   lambda seen: seen == {"bookings:2": ["Anna"]}, timeout=10)
        assert here.sync is not None
        with psycopg.connect(demo_dsn) as locker:
            locker.execute("LOCK TABLE bookwatch.presence IN ACCESS EXCLUSIVE MODE")
            here.call(lambda presence: presence.join("bookings:2", "Ben", Frames()))
            time.sleep(3)  # longer than the sync's lock_timeout: its statement fails
            assert here.shared
            assert here.call(lambda presence: presence.viewers("bookings:2")) == ["Anna", "Ben"]
        eventually(lambda: there.call(lambda presence: presence.snapshot()),
                   lambda seen: seen == {"bookings:2": ["Anna", "Ben"]}, timeout=10)
        assert notices == []
    finally:
        here.close()
        there.close()


def test_a_clean_stop_withdraws_viewers_at_once(demo_dsn: str) -> None:
    replica = Replica(demo_dsn)
    try:
        with running_server(demo_dsn) as server:
            eventually(lambda: replica.shared, bool, timeout=10)
            replica.call(lambda presence: presence.join("bookings:3", "李雷", Frames()))
            eventually(lambda: presence_of(server.url),
                       lambda seen: seen == {"bookings:3": ["李雷"]}, timeout=10)
            replica.stop()
            eventually(lambda: presence_of(server.url), lambda seen: seen == {},
                       timeout=SEEN_WITHIN_S)
    finally:
        replica.close()


def test_unicode_viewer_names_cross_servers(demo_dsn: str) -> None:
    with running_server(demo_dsn) as a, running_server(demo_dsn) as b, \
            SseReader(a.url, params={"viewer": "李雷", "viewing": "bookings:1"}):
        eventually(lambda: presence_of(b.url), lambda seen: seen == {"bookings:1": ["李雷"]},
                   timeout=10)
        bad = httpx.get(b.url + "/events", params={"viewer": "Anna\x07", "viewing": "b:1"},
                        timeout=10)
        assert bad.status_code == 400 and "control" in bad.json()["error"]


def test_without_schema_bookwatch_presence_stays_per_process_with_one_warning(dsn: str) -> None:
    notices: list[str] = []
    replica = Replica(dsn, notice=notices.append)
    try:
        eventually(lambda: list(notices), bool, timeout=10)
        assert len(notices) == 1
        assert "schema bookwatch does not exist" in notices[0]
        assert not replica.shared
        frames = Frames()
        replica.call(lambda presence: presence.join("bookings:1", "Anna", frames))
        assert replica.call(lambda presence: presence.snapshot()) == {"bookings:1": ["Anna"]}
    finally:
        replica.close()


def test_a_role_that_may_not_create_the_tables_gets_the_fix(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    role = f"bw_presence_{threading.get_ident() % 100000}_{int(time.time())}"
    postgresql.execute(f"CREATE ROLE {role} LOGIN")
    try:
        postgresql.execute(f"GRANT USAGE ON SCHEMA bookwatch TO {role}")
        notices: list[str] = []
        conninfo = psycopg.conninfo.make_conninfo(demo_dsn, user=role)
        sync_dsn = conninfo
        replica = Replica(sync_dsn, notice=notices.append)
        try:
            eventually(lambda: list(notices), bool, timeout=10)
        finally:
            replica.close()
        assert "permission denied" in notices[0] and "install-triggers" in notices[0]
    finally:
        postgresql.execute(f"DROP OWNED BY {role}")
        postgresql.execute(f"DROP ROLE {role}")


def test_a_burst_of_joins_costs_a_few_batched_round_trips(demo_dsn: str) -> None:
    replica = Replica(demo_dsn)
    try:
        eventually(lambda: replica.shared, bool, timeout=10)
        assert replica.sync is not None
        before = replica.sync.syncs

        def burst(presence: Presence) -> None:
            for number in range(500):
                presence.join(f"bookings:{number % 20}", f"Gast {number}", Frames())

        replica.call(burst)
        with psycopg.connect(demo_dsn) as conn:
            eventually(
                lambda: conn.execute("SELECT count(*) FROM bookwatch.presence").fetchone(),
                lambda count: count == (500,), timeout=5,
            )
        assert replica.sync.syncs - before <= 3
    finally:
        replica.close()


def test_workers_starting_together_create_the_tables_once(demo_dsn: str) -> None:
    notices: list[str] = []
    replicas = [Replica(demo_dsn, notice=notices.append) for _ in range(3)]
    try:
        for replica in replicas:
            eventually(lambda replica=replica: replica.shared, bool, timeout=10)
    finally:
        for replica in replicas:
            replica.close()
    assert notices == []


def test_stopping_while_the_database_is_unreachable_is_immediate() -> None:
    notices: list[str] = []
    replica = Replica("postgresql://postgres@127.0.0.1:1/none", notice=notices.append)
    try:
        time.sleep(1.5)  # a few failed attempts: the retry delay has grown
        started = time.monotonic()
        replica.stop()
        assert time.monotonic() - started < 1.0
        assert not replica.shared and notices == []  # never shared: nothing to warn about
    finally:
        replica.close()


def test_server_ids_are_distinct_per_process(demo_dsn: str) -> None:
    ids = {PresenceSync(Presence(), demo_dsn).server_id for _ in range(3)}
    assert len(ids) == 3
