"""The wal relay against a real ``wal_level = logical`` server: commit order, exactly once across
kill -9, forged messages, big payloads, 2PC, the bookwatch relay command."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwatch_cli.stream.relay_leader import BackgroundRelay
from tests.fix_cli import run_bookwatch, spawn_bookwatch
from tests.relay_helpers import (
    emit,
    install_wal,
    logged,
    slot_active_pid,
    write,
)
from tests.stream_helpers import wait_until


def logged_ids(dsn: str) -> list[int]:
    return [int(str(event["id"])) for _, event in logged(dsn)]


@pytest.fixture
def wal_db(logical_db: str) -> str:
    """A database in wal mode (minimal schema v2, publication, slot)."""
    install_wal(logical_db)
    return logical_db


@contextlib.contextmanager
def relaying(dsn: str, notices: list[str] | None = None) -> Iterator[BackgroundRelay]:
    relay = BackgroundRelay(dsn, (notices if notices is not None else []).append, retry_s=0.2)
    relay.start()
    try:
        wait_until(lambda: relay.leading, 10, "the relay to take the slot")
        yield relay
    finally:
        relay.stop()


def test_events_are_appended_in_commit_order_not_emit_order(wal_db: str) -> None:
    with relaying(wal_db) as relay, psycopg.connect(wal_db) as first, \
            psycopg.connect(wal_db) as second:
        emit(first, 1)  # first emits first ...
        emit(second, 2)
        emit(second, 3)
        second.commit()  # ... but commits last
        first.commit()
        wait_until(lambda: len(logged(wal_db)) == 3, what="3 events")
        stats = relay.stats
    log = logged(wal_db)
    assert [event["id"] for _, event in log] == [2, 3, 1]
    assert [seq for seq, _ in log] == [1, 2, 3]
    assert all(event["seq"] == seq and event["v"] == 1 for seq, event in log)
    assert stats is not None and stats.appended == 3 and stats.transactions == 2
    with psycopg.connect(wal_db) as conn:
        progress = conn.execute("SELECT count(*) FROM bookwatch.relay_progress").fetchone()
    assert progress == (1,)


def test_rolled_back_work_is_never_relayed(wal_db: str) -> None:
    with relaying(wal_db), psycopg.connect(wal_db) as conn:
        emit(conn, 1)
        conn.rollback()
        write(wal_db, [2])
        wait_until(lambda: len(logged(wal_db)) >= 1, what="the committed event")
    assert logged_ids(wal_db) == [2]


@pytest.mark.parametrize("transactional", [False, True])
def test_an_actor_message_attaches_only_to_its_own_transaction(
    wal_db: str, transactional: bool
) -> None:
    with relaying(wal_db) as relay:
        with psycopg.connect(wal_db, autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(%s, 'bookwatch.actor', 'Mallory')",
                         (transactional,))
        with psycopg.connect(wal_db, autocommit=True, application_name="writer") as conn:
            emit(conn, 1)
        wait_until(lambda: len(logged(wal_db)) >= 1, what="the genuine event")
        stats = relay.stats
    assert [event["actor"] for _, event in logged(wal_db)] == ["writer"]
    assert stats is not None and stats.appended == 1


def test_a_message_with_another_prefix_is_not_ours(wal_db: str) -> None:
    with relaying(wal_db) as relay:
        with psycopg.connect(wal_db) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, 'someone_else', 'hello')")
            emit(conn, 1)
        wait_until(lambda: len(logged(wal_db)) >= 1, what="the event")
        stats = relay.stats
    assert logged_ids(wal_db) == [1]
    assert stats is not None and stats.ignored == 0


def test_a_20_kb_diff_arrives_whole(wal_db: str) -> None:
    big = "x" * 20_000
    with relaying(wal_db), psycopg.connect(wal_db) as conn:
        emit(conn, 1)
        conn.commit()
        emit(conn, 1, note=big)
        conn.commit()
        wait_until(lambda: len(logged(wal_db)) == 2, what="the big event")
    _, (_, event) = logged(wal_db)
    assert event["diff"] == {"note": ["", big], "version": [1, 2]}
    assert event["truncated"] is False


def test_a_prepared_transaction_appears_once_at_commit_prepared(wal_db: str) -> None:
    with relaying(wal_db), psycopg.connect(wal_db) as conn:
        emit(conn, 1)
        conn.execute("PREPARE TRANSACTION 'bw_2pc'")
        conn.commit()  # psycopg's transaction block ends; the prepared one stays
        write(wal_db, [2])  # decoded after the PREPARE: a marker the relay got past it
        wait_until(lambda: logged_ids(wal_db) == [2], what="the marker")
        conn.autocommit = True
        conn.execute("COMMIT PREPARED 'bw_2pc'")
        wait_until(lambda: len(logged(wal_db)) == 2, what="the prepared event")
    assert logged_ids(wal_db) == [2, 1]


def test_restart_skips_what_is_already_logged(wal_db: str) -> None:
    write(wal_db, range(5))
    with relaying(wal_db):
        wait_until(lambda: len(logged(wal_db)) == 5, what="5 events")
    # A relay that appended but died before confirming sees the same transactions again:
    # rewind the slot's view by restarting from the stored progress only.
    with psycopg.connect(wal_db) as conn:
        conn.execute("DELETE FROM bookwatch.relay_progress")
        conn.execute("INSERT INTO bookwatch.relay_progress (slot_name, commit_lsn) SELECT"
                     " slot_name, confirmed_flush_lsn FROM pg_replication_slots")
    write(wal_db, range(5, 8))
    with relaying(wal_db):
        wait_until(lambda: len(logged(wal_db)) == 8, what="8 events")
    assert logged_ids(wal_db) == list(range(8))


def _writer(dsn: str, stop: threading.Event, written: list[int]) -> None:
    """Sequential transactions of 1-3 events until ``stop``: commit order is id order."""
    rng = random.Random(7)
    item = 0
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            for _ in range(rng.randint(1, 3)):
                emit(conn, item)
                item += 1
            conn.commit()
    written.append(item)


def test_relay_killed_9_repeatedly_loses_and_duplicates_nothing(wal_db: str) -> None:
    stop = threading.Event()
    written: list[int] = []
    writer = threading.Thread(target=_writer, args=(wal_db, stop, written))
    writer.start()
    rng = random.Random(11)
    appended_before_kill = []
    try:
        for _ in range(6):
            relay = spawn_bookwatch("relay", "--dsn", wal_db)
            try:
                wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "the relay")
                time.sleep(rng.uniform(0.2, 1.0))  # kill it at a random instant while relaying
                appended_before_kill.append(len(logged(wal_db)))
            finally:
                relay.send_signal(signal.SIGKILL)
                relay.wait()
    finally:
        stop.set()
        writer.join(60)
    total = written[0]
    relay = spawn_bookwatch("relay", "--dsn", wal_db)
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "the last relay")
        wait_until(lambda: len(logged(wal_db)) >= total, 60, "every event")
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(20) == 0
    log = logged(wal_db)
    assert logged_ids(wal_db) == list(range(total))  # each once, in commit order
    assert [seq for seq, _ in log] == sorted({seq for seq, _ in log})
    # The kills landed while the log was growing, not before or after all the work.
    assert appended_before_kill == sorted(appended_before_kill)
    assert appended_before_kill[-1] < total
    print(f"{total} events, relay killed at log lengths {appended_before_kill}")


def test_relay_command_without_a_slot_names_the_fix(logical_db: str) -> None:
    result = run_bookwatch("relay", "--dsn", logical_db, timeout=60)
    assert result.returncode == 1
    assert "Error:" in result.stderr and "install-triggers --mode wal" in result.stderr
    assert "Traceback" not in result.stderr


def test_relay_command_reports_and_stops_cleanly(wal_db: str) -> None:
    relay = spawn_bookwatch("relay", "--dsn", wal_db)
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "the relay")
        write(wal_db, range(3))
        wait_until(lambda: len(logged(wal_db)) == 3, what="3 events")
        relay.send_signal(signal.SIGINT)
        _, stderr = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:
            relay.kill()
    assert relay.returncode == 130
    assert "relaying bookwatch_" in stderr and "Traceback" not in stderr
    wait_until(lambda: slot_active_pid(wal_db) is None, 10, "the slot to be released")


def test_a_second_relay_waits_on_standby_and_takes_over(wal_db: str, tmp_path: Path) -> None:
    first = spawn_bookwatch("relay", "--dsn", wal_db)
    second = None
    second_log = tmp_path / "second.stderr"
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "the first relay")
        with second_log.open("w") as log:
            second = spawn_bookwatch("relay", "--dsn", wal_db, stderr=log)
        # It tried, found the slot taken, and stays up (a fixed sleep was too short under load).
        wait_until(lambda: "standby" in second_log.read_text(), 30, "the second relay's standby")
        assert second.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait()
        write(wal_db, [1])
        wait_until(lambda: logged_ids(wal_db) == [1], 15, "the standby relay to take over")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
    assert second is not None
    second.communicate()
    assert second.returncode == 0, second_log.read_text()


def test_payloads_in_the_log_are_valid_events(wal_db: str) -> None:
    write(wal_db, range(3), per_transaction=3)
    with relaying(wal_db):
        wait_until(lambda: len(logged(wal_db)) == 3, what="3 events")
    with psycopg.connect(wal_db) as conn:
        payloads = [row[0] for row in conn.execute(
            "SELECT payload FROM bookwatch.change_log ORDER BY seq")]
    from pgwatch_cli.stream.events import parse

    events = [parse(payload) for payload in payloads]
    assert [e.seq for e in events] == [1, 2, 3]
    assert len({e.txid for e in events}) == 1
    assert all(json.loads(p)["seq"] == e.seq for p, e in zip(payloads, events, strict=True))


def test_a_reinstall_while_the_relay_runs_is_picked_up_at_once(wal_db: str) -> None:
    from tests.relay_helpers import create_log

    with relaying(wal_db) as relay:
        write(wal_db, [1])
        wait_until(lambda: logged_ids(wal_db) == [1], what="the first event")
        create_log(wal_db)  # new log, new configuration, while the relay runs
        write(wal_db, [2])
        wait_until(lambda: logged_ids(wal_db) == [2], what="the event after the reinstall")
        stats = relay.stats
    assert stats is not None and stats.ignored == 0


@pytest.mark.parametrize("replication", [False, True])
def test_a_role_that_may_not_relay_gets_one_error_line(wal_db: str, replication: bool) -> None:
    role = f"bw_norelay_{os.getpid()}_{int(replication)}"
    with psycopg.connect(wal_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN {'REPLICATION' if replication else ''}")
        if not replication:  # may read what the relay reads first: fails at the WAL itself
            conn.execute(f"GRANT USAGE ON SCHEMA bookwatch TO {role}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA bookwatch TO {role}")
    try:
        as_role = psycopg.conninfo.make_conninfo(wal_db, user=role)
        result = run_bookwatch("relay", "--dsn", as_role, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Error:" in result.stderr and "Traceback" not in result.stderr
        assert "install-triggers" in result.stderr  # the hint: relay as the installer
        assert ("may not read the WAL" in result.stderr) == (not replication)
        assert slot_active_pid(wal_db) is None
    finally:
        with psycopg.connect(wal_db, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_housekeeping_runs_on_the_relays_connection(
    wal_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgwatch_cli.stream import relay as relay_module

    monkeypatch.setattr(relay_module, "HOUSEKEEPING_EVERY_S", 0.0)
    calls: list[str] = []

    def housekeeping(conn: psycopg.Connection) -> None:
        calls.append(conn.execute("SELECT current_database()").fetchone()[0])

    relay = BackgroundRelay(wal_db, [].append, retry_s=0.2, housekeeping=housekeeping)
    relay.start()
    try:
        wait_until(lambda: len(calls) >= 2, 10, "housekeeping")
    finally:
        relay.stop()
    assert set(calls) == {psycopg.conninfo.conninfo_to_dict(wal_db)["dbname"]}


def test_relay_command_waits_while_the_log_is_missing(wal_db: str) -> None:
    from tests.relay_helpers import create_log

    relay = spawn_bookwatch("relay", "--dsn", wal_db)
    try:
        wait_until(lambda: slot_active_pid(wal_db) is not None, 20, "the relay")
        with psycopg.connect(wal_db) as conn:
            conn.execute("DROP SCHEMA bookwatch CASCADE")
            emit(conn, 1)  # relayed while there is no change log: waits in the slot
        time.sleep(1.0)  # the relay meets the missing log
        assert relay.poll() is None
        create_log(wal_db)
        wait_until(lambda: logged_ids(wal_db) == [1], 20, "the waiting event")
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:
            relay.kill()
    assert relay.returncode == 0
    assert "change log is missing" in stderr
