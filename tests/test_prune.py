"""bookwatch prune and the retention policy: always the oldest events, never a hole."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import prune
from tests.capture_helpers import install


def error_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("Error:")]
    return line


@pytest.fixture
def logged(postgresql: psycopg.Connection[Any], dsn: str) -> psycopg.Connection[Any]:
    """Ten events: seq 1-4 logged three days ago, 5-10 now."""
    postgresql.execute("CREATE TABLE rooms (id int PRIMARY KEY)")
    postgresql.commit()
    install(dsn, "rooms", mode="log")
    postgresql.autocommit = True
    for room in range(1, 11):
        postgresql.execute("INSERT INTO rooms VALUES (%s)", (room,))
    postgresql.execute("UPDATE bookwatch.change_log SET logged_at = now() - interval '3 days'"
                       " WHERE seq <= 4")
    return postgresql


def seqs(conn: psycopg.Connection[Any]) -> list[int]:
    return [row[0] for row in conn.execute("SELECT seq FROM bookwatch.change_log ORDER BY seq")]


def test_older_than_dry_run_then_for_real(bookwatch, dsn, logged):
    dry = bookwatch("prune", "--dsn", dsn, "--older-than", "2d", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would delete 4 events" in dry.stderr
    assert seqs(logged) == list(range(1, 11))
    done = bookwatch("prune", "--dsn", dsn, "--older-than", "2d")
    assert done.exit_code == 0 and "deleted 4 events" in done.stderr
    assert "starts at seq 5" in done.stderr
    assert seqs(logged) == list(range(5, 11))
    assert "deleted 0 events" in bookwatch("prune", "--dsn", dsn, "--older-than", "2d").stderr


def test_keep_last(bookwatch, dsn, logged):
    assert "would delete 7 events" in bookwatch(
        "prune", "--dsn", dsn, "--keep-last", "3", "--dry-run").stderr
    assert bookwatch("prune", "--dsn", dsn, "--keep-last", "3").exit_code == 0
    assert seqs(logged) == [8, 9, 10]
    assert "deleted 0 events" in bookwatch("prune", "--dsn", dsn, "--keep-last", "50").stderr
    assert seqs(logged) == [8, 9, 10]
    assert bookwatch("prune", "--dsn", dsn, "--keep-last", "0").exit_code == 0
    assert seqs(logged) == []


def test_an_old_event_behind_a_new_one_is_kept_so_the_log_has_no_hole(dsn, logged):
    # A long transaction logs with its start time: seq 7 looks old, but 5 and 6 do not.
    logged.execute("UPDATE bookwatch.change_log SET logged_at = now() - interval '3 days'"
                   " WHERE seq = 7")
    with psycopg.connect(dsn) as conn:
        assert prune.prune(conn, older_than="2 days").deleted == 4
    assert seqs(logged) == list(range(5, 11))


def test_apply_retention_uses_the_stored_policy(dsn, logged):
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert prune.retention(conn) == "7 days"
        assert prune.apply_retention(conn) == 0
        conn.execute("UPDATE bookwatch.meta SET value = '1 day' WHERE key = 'retention'")
        assert prune.apply_retention(conn) == 4
        assert prune.apply_retention(conn) == 0
    assert seqs(logged) == list(range(5, 11))


@pytest.mark.parametrize(
    "args",
    [(), ("--older-than", "2d", "--keep-last", "3"), ("--older-than", "2 days"),
     ("--older-than", "0h"), ("--keep-last", "-1")],
)
def test_bad_prune_options_are_usage_errors(bookwatch, dsn, logged, args):
    result = bookwatch("prune", "--dsn", dsn, *args)
    assert result.exit_code == 2
    assert seqs(logged) == list(range(1, 11))


def test_prune_without_a_log_is_exit_1(bookwatch, dsn):
    result = bookwatch("prune", "--dsn", dsn, "--keep-last", "3")
    assert result.exit_code == 1
    assert error_line(result.stderr) == "Error: There is no bookwatch change log in this database."
