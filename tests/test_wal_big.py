"""A transaction of any size is relayed in bounded memory, in chunks with recorded progress,
exactly once even when the relay is killed -9 in the middle of it."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from tests.fix_cli import spawn_bookwatch
from tests.relay_helpers import install_wal, slot_active_pid
from tests.stream_helpers import wait_until

RSS_LIMIT_KB = 150 * 1024


def logged_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM bookwatch.change_log").fetchone()
    return int(row[0]) if row else 0


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def big_update_killed_mid_way(dsn: str, rows: int, timeout: float) -> int:
    """UPDATE ``rows`` rows in one transaction, kill -9 the relay while it appends them,
    relay again; returns the second relay's peak RSS in kB."""
    install_wal(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO items (id) SELECT generate_series(1, %s)", (rows,))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_logical_slot_get_binary_changes('bookwatch_' || oid, NULL,"
                     " NULL, 'proto_version', '1', 'publication_names', 'bookwatch_messages')"
                     " FROM pg_database WHERE datname = current_database()")  # the INSERTs
        conn.execute("UPDATE items SET version = version + 1")
    first = spawn_bookwatch("relay", "--dsn", dsn)
    try:
        wait_until(lambda: logged_count(dsn) > 0, timeout, "the first chunks")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = logged_count(dsn)
    assert 0 < killed_at < rows, "the kill was meant to land inside the transaction"
    wait_until(lambda: slot_active_pid(dsn) is None, 20, "the slot to be free")
    second = spawn_bookwatch("relay", "--dsn", dsn)
    try:
        wait_until(lambda: logged_count(dsn) >= rows, timeout, "every row of the transaction")
        time.sleep(0.5)  # nothing more may come
        peak = peak_rss_kb(second.pid)
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=20)
    finally:
        if second.poll() is None:
            second.kill()
    with psycopg.connect(dsn) as conn:
        count, distinct, low, high = conn.execute(
            "SELECT count(*), count(DISTINCT (payload::jsonb ->> 'id')), min(seq), max(seq)"
            " FROM bookwatch.change_log").fetchone()
        actions = conn.execute("SELECT DISTINCT payload::jsonb ->> 'action'"
                               " FROM bookwatch.change_log").fetchall()
    assert (count, distinct) == (rows, rows)  # nothing lost, nothing twice
    assert high - low + 1 == rows  # seq without holes
    assert actions == [("UPDATE",)]
    return peak


def test_a_big_transaction_killed_mid_way_is_relayed_exactly_once(logical_db: str) -> None:
    big_update_killed_mid_way(logical_db, 40_000, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_million_row_transaction_in_bounded_memory_exactly_once(logical_db: str) -> None:
    peak = big_update_killed_mid_way(logical_db, 1_000_000, timeout=1500)
    print(f"relay peak RSS for a 1,000,000-row transaction: {peak / 1024:.0f} MB")
    assert peak < RSS_LIMIT_KB, f"relay peak RSS {peak} kB"
