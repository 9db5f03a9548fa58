"""``remove-triggers --drop-log`` and the cluster-wide role bookwatch_reader (issue 17.6): dropped
with the last log of the cluster that uses it, else kept with the DROP ROLE to run later.
On the private wal_level=logical cluster: nobody else's databases use the role there."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.capture_helpers import install
from tests.fix_cli import Invoke
from tests.fix_logical import drop_database

_names = itertools.count(1)


@pytest.fixture
def second_db(logical_server: str) -> Iterator[str]:
    name = f"bwr_{os.getpid()}_{next(_names)}"
    with psycopg.connect(logical_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(logical_server, dbname=name)
    finally:
        drop_database(logical_server, name)


def reader_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'bookwatch_reader'").fetchone()
    return bool(row and row[0])


def capture_guests(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    install(dsn, "guests", mode="log")


def test_the_reader_role_goes_with_the_last_log_of_the_cluster(
    bookwatch: Invoke, logical_db: str, second_db: str
) -> None:
    capture_guests(logical_db)
    capture_guests(second_db)
    second_name = psycopg.conninfo.conninfo_to_dict(second_db)["dbname"]
    first = bookwatch("remove-triggers", "--dsn", logical_db, "--drop-log")
    assert first.exit_code == 0, first.stderr
    said = " ".join(first.stderr.split())
    assert f"role bookwatch_reader kept: database {second_name} still uses it" in said
    assert "DROP ROLE bookwatch_reader;" in said
    assert reader_exists(logical_db)
    dry = bookwatch("remove-triggers", "--dsn", second_db, "--drop-log", "--dry-run")
    assert "DROP ROLE bookwatch_reader" in dry.stdout
    assert "role bookwatch_reader: would be dropped" in " ".join(dry.stderr.split())
    assert reader_exists(second_db)
    last = bookwatch("remove-triggers", "--dsn", second_db, "--drop-log")
    assert last.exit_code == 0, last.stderr
    assert "role bookwatch_reader: dropped (no database of the cluster uses it)" in " ".join(
        last.stderr.split())
    assert not reader_exists(second_db)
    # A later install makes it again.
    install(second_db, "guests", mode="log")
    assert reader_exists(second_db)
