"""``bookwatch serve``: the SSE stream, resume, filters, presence, health and metrics, and
slow clients — against a real server on a free port and real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.serve_helpers import (
    SseReader,
    bump_price,
    newest_seq,
    running_server,
    seq_of,
)


def _raw_head(url: str, path: str, size: int = 200, timeout: float = 10) -> bytes:
    """The first bytes of a response body, read over a plain socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < size:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_change_event_is_id_seq_event_change_data_wire(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn) as server, SseReader(server.url) as reader:
        assert reader.status == 200
        seq = bump_price(postgresql, 123, actor="Anna")
        event = reader.next("change")
    assert seq_of(event) == seq
    data = json.loads(event.data)
    assert data["seq"] == seq and data["table"] == "bookings" and data["id"] == 123
    assert data["actor"] == "Anna" and data["action"] == "UPDATE"
    assert data["changed"] == ["gesamtpreis", "version"] or set(data["changed"]) == {
        "gesamtpreis", "version"}


def test_one_listen_connection_whatever_the_number_of_clients(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn) as server:
        readers = [SseReader(server.url, params={"table": "bookings"}) for _ in range(20)]
        seq = bump_price(postgresql, 3)
        assert all(seq_of(reader.next()) == seq for reader in readers)
        rows = postgresql.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " GROUP BY 1"
        ).fetchall()
        for reader in readers:
            reader.close()
    # Plus one for shared presence (its own wake-ups and batched writes), also per process.
    assert dict(rows) == {"bookwatch listener": 1, "bookwatch serve presence": 1}


def test_stream_starts_with_a_jittered_retry_hint_and_sends_heartbeats(demo_dsn: str) -> None:
    with running_server(demo_dsn, heartbeat_s=0.3) as server:
        heads = [_raw_head(server.url, "/events", size=60, timeout=10) for _ in range(4)]
    assert all(b"content-type: text/event-stream" in head.lower() for head in heads)
    retries = [int(m.group(1)) for head in heads for m in [re.search(rb"retry: (\d+)", head)]
               if m]
    assert len(retries) == 4
    assert all(2000 <= value < 5000 for value in retries)
    assert len(set(retries)) > 1, "the retry hint should vary between clients"
    assert all(b": heartbeat" in head for head in heads)


def test_filters_table_action_and_id_combine_as_in_tail(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn) as server, \
            SseReader(server.url, params={"table": "bookings", "action": "update",
                                          "id": ["5", "7"]}) as by_row, \
            SseReader(server.url, params={"action": ["INSERT", "delete"]}) as by_action, \
            SseReader(server.url, params={"table": ["guests", "public.rooms"]}) as by_table:
        postgresql.execute("UPDATE guests SET telefon = '+49 1' WHERE id = 1")
        postgresql.execute("UPDATE rooms SET typ = 'Suite' WHERE id = 2")
        postgresql.execute("UPDATE bookings SET status = 'angefragt' WHERE id = 4")
        postgresql.execute(
            "INSERT INTO bookings (id, reservierungsnummer, guest_id, room_id, anreise, abreise,"
            " gesamtpreis) VALUES (5000, 'R-X', 1, 1, '2027-01-01', '2027-01-02', 10)"
        )
        postgresql.execute("DELETE FROM bookings WHERE id = 5000")
        postgresql.execute("UPDATE bookings SET status = 'angefragt' WHERE id = 5")
        postgresql.execute("UPDATE bookings SET status = 'angefragt' WHERE id = 7")
        # Events arrive in commit order, so anything let through wrongly would come first.
        rows = [json.loads(by_row.next().data) for _ in range(2)]
        actions = [json.loads(by_action.next().data) for _ in range(2)]
        tables = [json.loads(by_table.next().data) for _ in range(2)]
    assert [(e["table"], e["action"], e["id"]) for e in rows] == [
        ("bookings", "UPDATE", 5), ("bookings", "UPDATE", 7)]
    assert [(e["action"], e["id"]) for e in actions] == [("INSERT", 5000), ("DELETE", 5000)]
    assert [e["table"] for e in tables] == ["guests", "rooms"]


def test_bad_filter_or_resume_point_is_a_400(demo_dsn: str) -> None:
    with running_server(demo_dsn) as server:
        for params in ({"action": "UPSERT"}, {"last_event_id": "abc"}, {"viewer": "Anna"},
                       {"viewer": "Anna", "viewing": "bookings"},
                       # int() reads both as numbers; an event id is ASCII digits only.
                       {"last_event_id": "1_000"}, {"last_event_id": "\u0661\u0662"},
                       {"last_event_id": "-3"}, {"last_event_id": "xyz:12"},
                       # Names that look like another ("Anna" + a zero-width space, a bidi mark).
                       {"viewer": "Anna\u200b", "viewing": "bookings:1"},
                       {"viewer": "\u200eAnna", "viewing": "bookings:1"},
                       {"viewer": "Anna", "viewing": "bookings:1\u2060"}):
            response = httpx.get(server.url + "/events", params=params, timeout=10)
            assert response.status_code == 400, params
            assert response.json()["error"]


def test_a_persian_name_keeps_its_zero_width_non_joiner(demo_dsn: str) -> None:
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647"  # a ZWNJ between two letters
    with running_server(demo_dsn) as server, SseReader(
            server.url, params={"viewer": name, "viewing": "bookings:1"}) as reader:
        assert reader.status == 200
        assert json.loads(reader.next("presence").data)["viewers"] == [name]


def test_event_ids_name_the_log_and_a_replaced_log_resumes_with_a_reset(
    demo_dsn: str, postgresql: psycopg.Connection[Any], bookwatch: Any
) -> None:
    log_id = postgresql.execute(
        "SELECT value FROM bookwatch.meta WHERE key = 'log_id'").fetchone()
    assert log_id is not None
    tag = log_id[0].replace("-", "")[:12]
    with running_server(demo_dsn) as server:
        with SseReader(server.url) as reader:
            seqs = [bump_price(postgresql, booking) for booking in range(1, 11)]
            ids = [reader.next().id for _ in seqs]
        assert ids == [f"{tag}:{seq}" for seq in seqs]
        assert bookwatch("remove-triggers", "--dsn", demo_dsn, "--drop-log").exit_code == 0
        assert bookwatch("install-triggers", "--dsn", demo_dsn, "--mode", "log").exit_code == 0
        for booking in range(1, 16):
            bump_price(postgresql, booking)  # the new log's seqs 1..15 reuse the old numbers
        with SseReader(server.url, headers={"Last-Event-ID": ids[-1]}) as resumed:
            reset = resumed.next("reset", timeout=20)
            assert "replaced" in json.loads(reset.data)["reason"]
            assert reset.id is not None and not reset.id.startswith(tag)
            # Then on from the new log's newest event, live.
            seq = bump_price(postgresql, 3)
            change = resumed.next("change", timeout=20)
            assert change.id == f"{reset.id.partition(':')[0]}:{seq}"


def test_a_resume_across_a_gap_marker_gets_a_reset_there(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    before = bump_price(postgresql, 1)
    seq_row = postgresql.execute("SELECT nextval('bookwatch.change_seq')").fetchone()
    assert seq_row is not None
    gap = int(seq_row[0])
    marker = {"v": 1, "seq": gap, "action": "GAP", "reason": "the slot was invalidated",
              "lost_from": "0/16B3748", "lost_to": "0/2000060",
              "timestamp": "2026-11-28T06:41:00+00:00"}
    postgresql.execute("INSERT INTO bookwatch.change_log (seq, channel, payload)"
                       " VALUES (%s, 'booking_changes', %s)", (gap, json.dumps(marker)))
    after = bump_price(postgresql, 2)
    with running_server(demo_dsn) as server, SseReader(
            server.url, headers={"Last-Event-ID": str(before - 1)}) as reader:
        got = []
        while len(got) < 3:
            event = reader.next(kind=None)
            if event.event in ("change", "reset"):
                got.append(event)
    assert [(event.event, seq_of(event)) for event in got] == [
        ("change", before), ("reset", gap), ("change", after)]
    assert "GAP" in json.loads(got[1].data)["reason"]


def _write_continuously(dsn: str, count: int, done: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number in range(count):
            bump_price(conn, 1 + number % 50)
            time.sleep(0.005)
    done.set()


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    demo_dsn: str, postgresql: psycopg.Connection[Any], how: str
) -> None:
    total = 300
    done = threading.Event()
    with running_server(demo_dsn) as server:
        first = SseReader(server.url)
        writer = threading.Thread(target=_write_continuously, args=(demo_dsn, total, done))
        writer.start()
        seen = [seq_of(first.next()) for _ in range(60)]
        first.close()  # the browser loses the connection while writes go on
        time.sleep(0.3)  # ... and comes back a bit later: these writes must be replayed
        last = str(seen[-1])
        resume = {"headers": {"Last-Event-ID": last}} if how == "header" else {
            "params": {"last_event_id": last}}
        with SseReader(server.url, **resume) as second:
            writer.join(60)
            assert done.is_set()
            final = newest_seq(postgresql)
            while seen[-1] < final:
                seen.append(seq_of(second.next()))
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    logged = [row[0] for row in postgresql.execute(
        "SELECT seq FROM bookwatch.change_log ORDER BY seq").fetchall()]
    assert seen == logged[logged.index(seen[0]):], "gap or duplicate at the resume seam"
    assert len(seen) >= total
    assert "bookwatch_sse_resumes_total 1" in metrics


def test_clients_get_every_event_once_across_a_lost_listener_connection(
    demo_dsn: str, postgresql: psycopg.Connection[Any], server_dsn: str
) -> None:
    total = 150
    done = threading.Event()
    with running_server(demo_dsn) as server, SseReader(server.url) as reader:
        writer = threading.Thread(target=_write_continuously, args=(demo_dsn, total, done))
        writer.start()
        seen = [seq_of(reader.next()) for _ in range(20)]
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            pid = server.relay.stream.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        writer.join(60)
        final = newest_seq(postgresql)
        while seen[-1] < final:
            seen.append(seq_of(reader.next(timeout=30)))
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    logged = [row[0] for row in postgresql.execute(
        "SELECT seq FROM bookwatch.change_log ORDER BY seq").fetchall()]
    assert seen == logged[logged.index(seen[0]):]
    assert "bookwatch_listener_reconnects_total 1" in metrics


def test_resume_after_the_log_was_trimmed_gets_a_reset(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    for booking in range(1, 6):
        bump_price(postgresql, booking)
    newest = newest_seq(postgresql)
    postgresql.execute("DELETE FROM bookwatch.change_log WHERE seq <= 3")
    with running_server(demo_dsn) as server:
        with SseReader(server.url, headers={"Last-Event-ID": "1"}) as too_old:
            reset = too_old.next("reset")
            assert seq_of(reset) == newest
            assert "no longer reaches back" in json.loads(reset.data)["reason"]
            # The stream goes on live after the reset, from the point it named.
            seq = bump_price(postgresql, 9)
            assert seq_of(too_old.next("change")) == seq
        with SseReader(server.url, params={"last_event_id": "3"}) as just_in_time:
            # Seq 4 is the oldest kept: nothing is missing, so no reset, just the replay.
            replayed = [seq_of(just_in_time.next()) for _ in range(3)]
            assert replayed == [4, 5, seq]
        with SseReader(server.url, params={"last_event_id": str(seq + 1000)}) as ahead:
            assert seq_of(ahead.next("reset")) == seq


def test_presence_join_and_leave_reach_every_viewer_of_the_row(demo_dsn: str) -> None:
    with running_server(demo_dsn) as server:
        anna = SseReader(server.url, params={"viewer": "Anna", "viewing": "bookings:123"})
        assert json.loads(anna.next("presence").data) == {
            "entity": "bookings:123", "viewers": ["Anna"]}
        with SseReader(server.url, params={"viewer": "Ben", "viewing": "bookings:123"}) as ben, \
                SseReader(server.url, params={"viewer": "Clara", "viewing": "bookings:7"}):
            both = {"entity": "bookings:123", "viewers": ["Anna", "Ben"]}
            assert json.loads(anna.next("presence").data) == both
            assert json.loads(ben.next("presence").data) == both
            assert httpx.get(server.url + "/presence", timeout=10).json() == {
                "bookings:123": ["Anna", "Ben"], "bookings:7": ["Clara"]}
        assert json.loads(anna.next("presence").data) == {
            "entity": "bookings:123", "viewers": ["Anna"]}
        assert httpx.get(server.url + "/presence", timeout=10).json() == {
            "bookings:123": ["Anna"]}
        anna.close()
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/presence", timeout=10).json() and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        assert httpx.get(server.url + "/presence", timeout=10).json() == {}


def test_token_is_required_everywhere_but_healthz(demo_dsn: str) -> None:
    with running_server(demo_dsn, token="s3cret") as server:
        url = server.url
        for path in ("/events", "/presence", "/metrics"):
            assert httpx.get(url + path, timeout=10).status_code == 401, path
            assert httpx.get(url + path, params={"token": "wrong"},
                             timeout=10).status_code == 401, path
            assert httpx.get(url + path, headers={"Authorization": "Bearer s3cre"},
                             timeout=10).status_code == 401, path
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(url + "/presence", headers={"Authorization": "Bearer s3cret"},
                         timeout=10).status_code == 200
        with SseReader(url, params={"token": "s3cret"}) as by_query:
            assert by_query.status == 200
        with SseReader(url, headers={"Authorization": "Bearer s3cret"}) as by_header:
            assert by_header.status == 200


def test_cors_allows_only_the_listed_origins(demo_dsn: str) -> None:
    with running_server(demo_dsn, token="t", allow_origins=("https://app.example",)) as server:
        preflight = {"Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "authorization"}
        allowed = httpx.options(server.url + "/events", timeout=10,
                                headers={"Origin": "https://app.example", **preflight})
        refused = httpx.options(server.url + "/events", timeout=10,
                                headers={"Origin": "https://evil.example", **preflight})
        unauthorized = httpx.get(server.url + "/presence", timeout=10,
                                 headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in refused.headers
    # The page can read the 401 (and ask for a token) instead of seeing a CORS failure.
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == "https://app.example"


def test_healthz_and_metrics_report_clients_events_and_the_listener(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn) as server, SseReader(server.url) as reader:
        for booking in (1, 2, 3):
            seq = bump_price(postgresql, booking)
            reader.next()
        health = httpx.get(server.url + "/healthz", timeout=10)
        metrics = httpx.get(server.url + "/metrics", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "listener_connected": True, "clients": 1,
                             "last_seq": seq, "bus": "postgres"}
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = dict(
        line.split(" ", 1) for line in metrics.text.splitlines() if not line.startswith("#")
    )
    assert values["bookwatch_sse_clients"] == "1"
    assert values["bookwatch_sse_events_relayed_total"] == "3"
    assert values["bookwatch_sse_lagging_clients_cut_total"] == "0"
    assert values["bookwatch_listener_connected"] == "1"
    assert values["bookwatch_listener_reconnects_total"] == "0"
    assert values["bookwatch_listener_last_seq"] == str(seq)
    assert "# TYPE bookwatch_sse_events_relayed_total counter" in metrics.text


def _stuck_client(url: str) -> socket.socket:
    """A client that connects to /events and then never reads: its buffers fill up."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def _read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with sock, contextlib.suppress(ConnectionResetError):  # a cut client is reset
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_client_that_does_not_read_is_cut_and_does_not_delay_the_others(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    batches, rows = 6, 200
    with running_server(demo_dsn, client_buffer=64 * 1024) as server:
        stuck = _stuck_client(server.url)
        with SseReader(server.url) as fast:
            deadline = time.monotonic() + 10
            while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for batch in range(batches):
                # Big events (a 3 kB note, twice in the diff) fill the socket buffers fast.
                postgresql.execute(
                    "UPDATE bookings SET bemerkungen = repeat(%s, 3000) WHERE id <= %s",
                    (str(batch), rows),
                )
            committed = time.monotonic()
            received = [fast.next(timeout=30) for _ in range(batches * rows)]
            lag = time.monotonic() - committed
            # The watchdog cuts the stuck client within a moment; it gets a second for its
            # goodbye, then the connection is dropped.
            deadline = time.monotonic() + 10
            while True:
                metrics = httpx.get(server.url + "/metrics", timeout=10).text
                if "bookwatch_sse_clients 1\n" in metrics:
                    break
                assert time.monotonic() < deadline, "the stuck client was never closed"
                time.sleep(0.1)
        stuck_got = _read_to_eof(stuck, timeout=10)
    assert len({event.id for event in received}) == batches * rows
    assert lag < 10, f"the fast client got the last event {lag:.1f} s after the commit"
    assert "bookwatch_sse_lagging_clients_cut_total 1" in metrics
    # The stuck client was closed (EOF above) and got far fewer events than were sent.
    assert stuck_got.count(b"event: change") < batches * rows


def test_streams_end_when_the_server_stops(demo_dsn: str) -> None:
    readers = []
    with running_server(demo_dsn) as server:
        readers = [SseReader(server.url, params={"viewer": f"v{n}", "viewing": "bookings:1"})
                   for n in range(3)]
        started = time.monotonic()
    # running_server's exit asserted the server stopped; the clients saw their streams end.
    assert time.monotonic() - started < 5
    assert all(reader.ended(timeout=5) for reader in readers)
    for reader in readers:
        reader.close()
