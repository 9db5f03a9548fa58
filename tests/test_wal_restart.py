"""A fast shutdown of the server under a running relay finishes in seconds (the relay answers
the walsender's last keepalive instead of holding it), and nothing is lost across it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg

from tests.fix_cli import spawn_bookwatch
from tests.fix_logical import _as_server_user, _binaries, logical_cluster
from tests.relay_helpers import install_wal, slot_active_pid, write
from tests.stream_helpers import wait_until


def test_pg_ctl_restart_fast_under_a_relaying_tail_takes_seconds_and_loses_nothing() -> None:
    with logical_cluster() as server:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE restart_me")
            data = Path(str(conn.execute("SHOW data_directory").fetchone()[0]))
        dsn = psycopg.conninfo.make_conninfo(server, dbname="restart_me")
        install_wal(dsn)
        tail = spawn_bookwatch("tail", "--json", "--count", "600", "--dsn", dsn)
        try:
            wait_until(lambda: slot_active_pid(dsn) is not None, 20, "tail to relay")
            write(dsn, range(300), per_transaction=3)  # a burst right before the shutdown
            started = time.monotonic()
            subprocess.run(
                [*_as_server_user(data.parent), str(_binaries() / "pg_ctl"), "-D", str(data),
                 "-l", str(data.parent / "restart.log"), "-m", "fast", "-w", "-t", "120",
                 "restart"],
                check=True, capture_output=True,
            )
            took = time.monotonic() - started
            write(dsn, range(300, 600))
            stdout, stderr = tail.communicate(timeout=90)
        finally:
            if tail.poll() is None:
                tail.kill()
        assert took < 20, f"pg_ctl restart -m fast took {took:.1f} s"
        ids = [json.loads(line)["id"] for line in stdout.splitlines()]
        assert sorted(ids) == list(range(600)), stderr[-2000:]
        assert tail.returncode == 0, stderr[-2000:]
