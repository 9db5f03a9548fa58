"""The suite cleans up after runs that were killed: their databases are found by the name
prefix and dropped once provably abandoned (no live session holds the run's lock, its pid
is gone), while a live run's databases are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.fix_db import PREFIX, RUN_ID

pytestmark = pytest.mark.timeout(120)


def databases(server_dsn: str) -> set[str]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (PREFIX.replace("_", "\\_") + "%",)).fetchall()
    return {row[0] for row in rows}


def test_a_new_run_drops_a_killed_runs_databases_only(
    server_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    killed = f"{PREFIX}4194999_db"  # above Linux's default pid_max: never a live process
    mine = {postgresql.info.dbname, f"{PREFIX}{RUN_ID}_tmpl"}  # this live run's, in use
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{killed}"')
    try:
        # The other run must use this run's server: without PostgreSQL on 5432 it would
        # otherwise start an embedded server of its own and never see the killed database.
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
             "tests/test_tail.py::test_no_trigger_at_all_warns"],
            capture_output=True, text=True, timeout=100,
            env={**os.environ, "BOOKWATCH_TEST_DSN": server_dsn},
        )
        assert run.returncode == 0, run.stdout + run.stderr
        left = databases(server_dsn)
        assert killed not in left
        assert mine <= left  # this (live) run's databases survived the other run's cleanup
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{killed}"')
