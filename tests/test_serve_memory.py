"""``bookwatch serve``'s memory bounds, against a real server process and real PostgreSQL: an
event over the per-event limit becomes a reset naming it (live and in replay alike, never read
into memory in replay), and a crowd resuming together stays within a stated memory budget."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import httpx
import psutil
import psycopg

from tests.serve_helpers import (
    ServeProcess,
    SseReader,
    bump_price,
    running_server,
    seq_of,
    stuck_client,
)

BIG_EVENT_BYTES = 6 << 20  # over the default limit (half of the 1 MiB client buffer)
RESUMING_CLIENTS = 20
# What 20 resumes of a log holding 4 events of 6 MB may add to the server's RSS. Sending them
# whole would take at least 20 x 24 MB = 480 MB (the attack in issue 17 reached 5.8 GB).
RSS_BUDGET_BYTES = 64 << 20


def _append_big_event(conn: psycopg.Connection[Any], *, notify: bool = False) -> int:
    """A logged UPDATE whose diff holds BIG_EVENT_BYTES of text (as the wal relay logs one:
    wal mode has no size limit). Returns its seq."""
    row = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq DESC LIMIT 1"
                       ).fetchone()
    assert row is not None
    payload = json.loads(row[0])
    seq_row = conn.execute("SELECT nextval('bookwatch.change_seq')").fetchone()
    assert seq_row is not None
    payload.update(seq=int(seq_row[0]), changed=["bemerkungen"],
                   diff={"bemerkungen": ["", "x" * BIG_EVENT_BYTES]})
    with conn.transaction():
        conn.execute("INSERT INTO bookwatch.change_log (seq, channel, payload)"
                     " VALUES (%s, 'booking_changes', %s)", (payload["seq"], json.dumps(payload)))
        if notify:
            conn.execute("SELECT pg_notify('booking_changes', %s)", (str(payload["seq"]),))
    return int(payload["seq"])


class PeakRss:
    """The highest RSS a process reaches while this samples it (in a thread)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def test_twenty_resumes_over_oversized_events_stay_within_the_memory_budget(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    start = bump_price(postgresql, 1)
    expected: list[tuple[str, int]] = []
    for number in range(4):
        expected.append(("change", bump_price(postgresql, 2 + number)))
        expected.append(("reset", _append_big_event(postgresql)))
    marker = bump_price(postgresql, 9)
    expected.append(("change", marker))
    server = ServeProcess("--dsn", demo_dsn)
    try:
        rss = PeakRss(server.process.pid)
        before = rss.process.memory_info().rss
        readers = [SseReader(server.url, headers={"Last-Event-ID": str(start)})
                   for _ in range(RESUMING_CLIENTS)]
        try:
            for reader in readers:
                got = []
                while not got or got[-1] != ("change", marker):
                    event = reader.next(kind=None, timeout=60)
                    if event.event in ("change", "reset"):
                        got.append((event.event, seq_of(event)))
                        if event.event == "reset":
                            assert "limit" in json.loads(event.data)["reason"], event.data
                assert got == expected
        finally:
            for reader in readers:
                reader.close()
        grew = rss.stop() - before
    finally:
        server.kill()
    assert grew < RSS_BUDGET_BYTES, f"RSS grew by {grew >> 20} MB (budget 64 MB)"


def test_a_live_oversized_event_is_a_reset_and_the_stream_goes_on(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    bump_price(postgresql, 1)
    server = ServeProcess("--dsn", demo_dsn)
    try:
        with SseReader(server.url) as reader:
            time.sleep(0.5)  # the stream is registered before the events come
            big = _append_big_event(postgresql, notify=True)
            after = bump_price(postgresql, 2)
            reset = reader.next("reset", timeout=30)
            assert seq_of(reset) == big
            assert "limit" in json.loads(reset.data)["reason"]
            assert seq_of(reader.next("change", timeout=30)) == after
    finally:
        server.kill()


def test_clients_that_never_read_are_reset_past_the_process_buffer_budget(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    # Each client alone stays under its own 32 MiB buffer; together they pass the 2 MiB budget.
    with running_server(demo_dsn, client_buffer=32 << 20, buffer_budget=2 << 20) as server:
        stuck = [stuck_client(server.url) for _ in range(4)]
        reader = SseReader(server.url)  # reads everything: never behind, never cut
        try:
            deadline = time.monotonic() + 10
            while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for batch in range(8):
                postgresql.execute(
                    "UPDATE bookings SET bemerkungen = repeat(%s, 3000) WHERE id <= 200",
                    (str(batch),))
            deadline = time.monotonic() + 30
            while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] > 1:
                assert time.monotonic() < deadline, "the budget was never enforced"
                time.sleep(0.1)
            metrics = httpx.get(server.url + "/metrics", timeout=10).text
            assert reader.next("change", timeout=10)  # the reading client was kept
        finally:
            reader.close()
            for sock in stuck:
                sock.close()
    cut = re.search(r"^bookwatch_sse_budget_cut_total (\d+)$", metrics, re.MULTILINE)
    assert cut is not None and int(cut.group(1)) >= 1, metrics
    assert "bookwatch_sse_lagging_clients_cut_total 4" in metrics
