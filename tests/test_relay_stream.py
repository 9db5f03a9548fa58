"""Listeners in wal mode: wake-ups only, forged NOTIFYs, a recreated log, schema versions, the
background relay's failover between listening processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import pathlib
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import psutil
import psycopg
import pytest

from pgwatch_cli.stream.events import ChangeEvent, LogReplaced, StreamItem
from pgwatch_cli.stream.hub import Hub
from pgwatch_cli.stream.listener import ChangeStream, UnsupportedSchema
from tests.fix_cli import run_bookwatch, spawn_bookwatch
from tests.relay_helpers import create_log, forge_notify, install_wal, slot_active_pid, write
from tests.stream_helpers import wait_until

T = TypeVar("T")

FORGED_EVENT = json.dumps({
    "v": 1, "seq": 9000000000, "table": "items", "schema": "public", "action": "UPDATE",
    "id": 1, "pk": {"id": 1}, "actor": "Anna", "changed": ["note"], "diff": {"note": ["a", "b"]},
    "truncated": False, "txid": 1, "timestamp": "2026-11-28T06:41:00.123456+00:00",
})


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def wal_db(logical_db: str) -> str:
    install_wal(logical_db)
    return logical_db


async def take(items: Any, count: int) -> list[StreamItem]:
    got: list[StreamItem] = []
    async for item in items:
        got.append(item)
        if len([i for i in got if isinstance(i, ChangeEvent)]) >= count:
            break
    return got


def test_forged_notifications_change_nothing_in_what_a_stream_delivers(wal_db: str) -> None:
    async def scenario() -> tuple[list[StreamItem], ChangeStream]:
        async with ChangeStream(wal_db, check_interval=0.5) as stream:
            await asyncio.to_thread(write, wal_db, range(3))
            got = await take(stream.items(), 3)
            for forged in ("9000000000", FORGED_EVENT, "junk"):
                await asyncio.to_thread(forge_notify, wal_db, forged)
            await asyncio.to_thread(write, wal_db, range(3, 6))
            got += await take(stream.items(), 3)
            assert stream.relaying  # it relayed the WAL itself: nobody else did
            return got, stream

    got, stream = run(scenario())
    events = [item for item in got if isinstance(item, ChangeEvent)]
    assert [event.id for event in events] == [0, 1, 2, 3, 4, 5]
    assert [event.seq for event in events] == [1, 2, 3, 4, 5, 6]
    assert all(event.actor == "writer" for event in events)
    assert stream.stats.invalid >= 1  # the junk one was counted


def test_forged_notifications_change_nothing_in_tail(wal_db: str) -> None:
    tail = spawn_bookwatch("tail", "--json", "--count", "4", "--dsn", wal_db)
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "tail to relay")
        write(wal_db, [0])
        forge_notify(wal_db, FORGED_EVENT)
        forge_notify(wal_db, "9000000000")
        write(wal_db, [1, 2, 3])
        stdout, stderr = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["id"], e["seq"], e["actor"]) for e in events] == [
        (0, 1, "writer"), (1, 2, "writer"), (2, 3, "writer"), (3, 4, "writer")
    ]
    assert tail.returncode == 0, stderr


def test_a_recreated_log_yields_log_replaced_then_the_new_events(wal_db: str) -> None:
    async def scenario() -> tuple[list[StreamItem], str]:
        async with ChangeStream(wal_db, check_interval=0.5) as stream:
            old = stream.log_id
            await asyncio.to_thread(write, wal_db, range(3))
            got = await take(stream.items(), 3)
            new = await asyncio.to_thread(create_log, wal_db)
            await asyncio.to_thread(write, wal_db, range(10, 12))
            got += await take(stream.items(), 2)
            assert old is not None
            return got, new

    got, new_id = run(scenario())
    replaced = [item for item in got if isinstance(item, LogReplaced)]
    assert len(replaced) == 1 and replaced[0].new_log_id == new_id
    after = got[got.index(replaced[0]) + 1:]
    assert [(e.id, e.seq) for e in after if isinstance(e, ChangeEvent)] == [(10, 1), (11, 2)]
    assert [e.id for e in got[:3] if isinstance(e, ChangeEvent)] == [0, 1, 2]


def test_plain_iteration_reports_a_recreated_log_and_continues(wal_db: str) -> None:
    notices: list[str] = []

    async def scenario() -> list[ChangeEvent]:
        async with ChangeStream(wal_db, notice=notices.append, check_interval=0.5) as stream:
            await asyncio.to_thread(write, wal_db, range(2))
            got = [event async for event in _first(stream, 2)]
            await asyncio.to_thread(create_log, wal_db)
            await asyncio.to_thread(write, wal_db, [7])
            got += [event async for event in _first(stream, 1)]
            return got

    got = run(scenario())
    assert [(e.id, e.seq) for e in got] == [(0, 1), (1, 2), (7, 1)]
    assert any("change log was recreated" in notice for notice in notices)


async def _first(stream: ChangeStream, count: int) -> Any:
    async for event in stream:
        yield event
        count -= 1
        if count == 0:
            return


def test_tail_says_the_log_was_recreated_and_goes_on(wal_db: str) -> None:
    tail = spawn_bookwatch("tail", "--json", "--count", "3", "--dsn", wal_db)
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "tail to relay")
        write(wal_db, [0, 1])
        wait_until(lambda: _logged_count(wal_db) == 2, what="2 events")
        create_log(wal_db)
        write(wal_db, [5])
        stdout, stderr = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert [(e["id"], e["seq"]) for e in map(json.loads, stdout.splitlines())] == [
        (0, 1), (1, 2), (5, 1)
    ]
    assert "change log was recreated" in stderr and tail.returncode == 0


def _logged_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM bookwatch.change_log").fetchone()
    return int(row[0]) if row else 0


def test_an_unknown_schema_version_is_an_error(wal_db: str) -> None:
    with psycopg.connect(wal_db) as conn:
        conn.execute("UPDATE bookwatch.meta SET value = '99' WHERE key = 'schema_version'")

    async def start() -> None:
        async with ChangeStream(wal_db):
            pass

    with pytest.raises(UnsupportedSchema):
        run(start())
    result = run_bookwatch("tail", "--json", "--timeout", "1", "--dsn", wal_db, timeout=60)
    assert result.returncode == 1
    assert "Error:" in result.stderr and "version 99" in result.stderr
    assert "Traceback" not in result.stderr


def _listening(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity"
                           " WHERE application_name = 'bookwatch listener'").fetchone()
    return row is not None and row[0] > 0


def test_tail_no_relay_leaves_the_slot_alone(wal_db: str) -> None:
    tail = spawn_bookwatch("tail", "--no-relay", "--json", "--dsn", wal_db)
    try:
        wait_until(lambda: _listening(wal_db), 20, "tail to listen")
        write(wal_db, [1])
        watched_until = time.monotonic() + 4  # longer than a background relay's retry
        while time.monotonic() < watched_until:
            assert slot_active_pid(wal_db) is None
            time.sleep(0.1)
        assert _logged_count(wal_db) == 0  # nothing relays: the event waits in the slot
        relay = spawn_bookwatch("tail", "--json", "--count", "1", "--dsn", wal_db)
        stdout, _ = relay.communicate(timeout=30)  # one that may relay delivers it
        assert json.loads(stdout)["id"] == 1
    finally:
        tail.send_signal(signal.SIGTERM)
        tail.wait(20)


def test_a_late_hub_subscriber_gets_log_replaced_through_items(wal_db: str) -> None:
    async def scenario() -> list[StreamItem]:
        async with ChangeStream(wal_db, check_interval=0.5) as stream:
            hub = Hub(stream)
            subscription = hub.subscribe()
            pump = asyncio.create_task(hub.run())
            await asyncio.to_thread(write, wal_db, [1])
            got = await take(subscription.items(), 1)
            await asyncio.to_thread(create_log, wal_db)
            await asyncio.to_thread(write, wal_db, [2])
            got += await take(subscription.items(), 1)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            return got

    got = run(scenario())
    assert [type(item).__name__ for item in got] == ["ChangeEvent", "LogReplaced", "ChangeEvent"]


# -- failover between two listening processes -----------------------------------------------


def _relaying_process(dsn: str, candidates: list[subprocess.Popen[str]]) -> int | None:
    """Which of ``candidates`` holds the slot (matching its socket to the walsender's client)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT a.client_port FROM pg_stat_replication r JOIN pg_stat_activity a"
            " ON a.pid = r.pid"
        ).fetchone()
    if row is None:
        return None
    for index, process in enumerate(candidates):
        ports = {c.laddr.port for c in psutil.Process(process.pid).net_connections("tcp")}
        if row[0] in ports:
            return index
    return None


WARM_UP_IDS = 100_000  # ids written before the kill; the writer after it counts from 1


def _reader(process: subprocess.Popen[str], lines: queue.Queue[tuple[float, str]]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put((time.monotonic(), line))


def test_failover_between_two_listeners_within_ten_seconds(
    wal_db: str, tmp_path: pathlib.Path
) -> None:
    logs = [(tmp_path / f"tail{n}.stderr").open("w+") for n in range(2)]
    tails = [spawn_bookwatch("tail", "--json", "--dsn", wal_db, stderr=log) for log in logs]
    outputs: list[queue.Queue[tuple[float, str]]] = [queue.Queue(), queue.Queue()]
    for process, lines in zip(tails, outputs, strict=True):
        threading.Thread(target=_reader, args=(process, lines), daemon=True).start()

    def said() -> str:
        texts = (pathlib.Path(log.name).read_text() for log in logs)
        return " | ".join(f"tail {n} said {text!r}" for n, text in enumerate(texts))

    stop = threading.Event()
    try:
        wait_until(lambda: _relaying_process(wal_db, tails) is not None, 20, "a leader")
        leader = _relaying_process(wal_db, tails)
        assert leader is not None
        survivor = 1 - leader
        # Under a loaded suite the survivor may still be starting when the leader relays; an
        # event written before it has read the log once is before its cursor. Write until it
        # shows one, so it is surely listening before the kill.
        warm_up = itertools.count(WARM_UP_IDS)
        deadline = time.monotonic() + 40
        while True:
            write(wal_db, [next(warm_up)])
            with contextlib.suppress(queue.Empty):
                outputs[survivor].get(timeout=1)
                break
            assert time.monotonic() < deadline, f"the survivor printed nothing in 40 s; {said()}"

        def keep_writing() -> None:
            item = 1
            while not stop.is_set():
                write(wal_db, [item])
                item += 1
                time.sleep(0.05)

        writer = threading.Thread(target=keep_writing)
        tails[leader].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        writer.start()
        while True:  # warm-up events still on their way are not the takeover's
            try:
                seen_at, line = outputs[survivor].get(timeout=15)
            except queue.Empty:
                raise AssertionError(f"nothing relayed 15 s after the kill; {said()}") from None
            if json.loads(line)["id"] < WARM_UP_IDS:
                break
        failover_s = seen_at - killed_at
        wait_until(lambda: _relaying_process(wal_db, tails) == survivor, 5, "the new leader")
        stop.set()
        writer.join()
    finally:
        stop.set()
        for process in tails:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
        for log in logs:
            log.close()
    print(f"failover: first event delivered {failover_s:.2f} s after kill -9 of the relay")
    assert json.loads(line)["id"] == 1
    assert failover_s < 10
    rest = [json.loads(text)["id"] for _, text in list(outputs[survivor].queue)]
    assert rest == list(range(2, 2 + len(rest)))  # nothing lost, nothing twice


def test_a_stream_started_before_wal_mode_was_installed_relays_and_delivers(
    logical_db: str,
) -> None:
    async def scenario() -> list[ChangeEvent]:
        async with ChangeStream(logical_db, check_interval=0.5) as stream:
            assert stream.background_relay is None  # nothing to relay yet
            await asyncio.to_thread(install_wal, logical_db)
            await asyncio.to_thread(write, logical_db, [1, 2])
            return [event async for event in _first(stream, 2)]

    got = run(scenario())
    assert [(e.id, e.seq) for e in got] == [(1, 1), (2, 2)]
