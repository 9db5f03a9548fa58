"""The commit-order lock is a row lock: a REPEATABLE READ or SERIALIZABLE writer whose snapshot
predates another writer's commit must still commit (a row that was only locked, never updated,
is no serialization conflict)."""

from __future__ import annotations

import psycopg
import pytest

from tests.capture_helpers import install, log_payloads


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_writer_with_an_older_snapshot_still_commits(dsn: str, isolation: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
    install(dsn, "guests", mode="log")
    with psycopg.connect(dsn) as early, psycopg.connect(dsn, autocommit=True) as other:
        early.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        early.execute("SELECT count(*) FROM guests")  # the snapshot is taken here
        other.execute("INSERT INTO guests VALUES (1)")  # locks the row, commits
        early.execute("INSERT INTO guests VALUES (2)")
        early.commit()
        assert [e["id"] for e in log_payloads(other)] == [1, 2]
