"""Each migration is safe to run again by itself (issue 17.7): not only the version check and
the install lock protect an install from a second run of one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import sqlfiles
from tests.capture_helpers import install, log_payloads

MIGRATIONS = {number: text for number, _, text in sqlfiles.migrations()}


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    meta = conn.execute("SELECT key, value FROM bookwatch.meta ORDER BY key").fetchall()
    tables = conn.execute(
        "SELECT c.relname, c.relacl::text FROM pg_class c"
        " WHERE c.relnamespace = 'bookwatch'::regnamespace ORDER BY 1").fetchall()
    secrets = conn.execute(
        "SELECT count(*) FROM bookwatch.wal_secret").fetchone() if any(
        name == "wal_secret" for name, _ in tables) else None
    schema_acl = conn.execute(
        "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'bookwatch'").fetchone()
    return meta, tables, secrets, schema_acl


@pytest.mark.parametrize("number", [1, 2, 3])
def test_each_migration_runs_twice_in_a_row(postgresql: psycopg.Connection[Any], number: int):
    conn = postgresql
    conn.autocommit = True
    for earlier in range(1, number):
        conn.execute(MIGRATIONS[earlier])
    conn.execute(MIGRATIONS[number])
    once = state(conn)
    conn.execute(MIGRATIONS[number])
    assert state(conn) == once


@pytest.mark.parametrize("number", [1, 2, 3])
def test_a_migration_run_again_on_an_install_keeps_its_events(
    dsn: str, postgresql: psycopg.Connection[Any], number: int
):
    conn = postgresql
    conn.autocommit = True
    conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    install(dsn, "guests")
    conn.execute("INSERT INTO guests VALUES (1, 'Anna')")
    before = state(conn), log_payloads(conn)
    conn.execute(MIGRATIONS[number])
    assert (state(conn), log_payloads(conn)) == before
    conn.execute("INSERT INTO guests VALUES (2, 'Ben')")
    assert [event["seq"] for event in log_payloads(conn)] == [1, 2]
