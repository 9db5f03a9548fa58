"""docs/reference.md "Signals": SIGTERM and SIGHUP clean up exactly as Ctrl-C does — scratch schema,
connections, the embedded server — and exit 128 + signal; a reader that goes away ends the
output quietly; a killed run's scratch schema is named, then removed by the next run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli import lifecycle
from pgwatch_cli.scratch import find_orphans, remove_abandoned
from tests.fix_cli import embedded_env, embedded_servers, spawn_bookwatch

pytestmark = pytest.mark.timeout(180)


def scratch_schemas(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bookwatch%' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def bookwatch_sessions(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bookwatch%%'"
        " AND datname = %s", (conn.info.dbname,),
    ).fetchone()
    return int(row[0]) if row else -1


def wait_for_storm(conn: psycopg.Connection[Any], simulation: subprocess.Popen[str]) -> None:
    """Until the simulated users have saved something (the storm is under way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert simulation.poll() is None, simulation.communicate()
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"
            " AND datname = %s", ("bookwatch simulate user%", conn.info.dbname),
        ).fetchone()
        if row and row[0] == 3 and _saves(conn) > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the storm never began")


def _saves(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM bookwatch.change_log WHERE channel LIKE 'bookwatch\\_sim\\_%%'"
        if _log_exists(conn) else "SELECT 0"
    ).fetchone()
    return int(row[0]) if row else 0


def _log_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('bookwatch.change_log') IS NOT NULL").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_simulate_cleans_up_on_signal(
    dsn: str, postgresql: psycopg.Connection[Any], signum: int, code: int
) -> None:
    postgresql.autocommit = True
    simulation = spawn_bookwatch(
        "simulate", "--dsn", dsn, "--scenario", "storm", "--users", "3", "--rounds", "500"
    )
    try:
        wait_for_storm(postgresql, simulation)
        simulation.send_signal(signum)
        _, stderr = simulation.communicate(timeout=60)
    finally:
        simulation.kill()
    assert simulation.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert scratch_schemas(postgresql) == []
    assert bookwatch_sessions(postgresql) == 0


def test_timeout_leaves_no_embedded_server_running(embedded_home: Path) -> None:
    """``timeout 2.5 bookwatch simulate`` on the embedded server: ``timeout`` sends SIGTERM to
    the whole process group (initdb and pg_ctl included) at whatever moment — while the
    server is made, while it starts, or later — and the server is left stopped every time."""
    home = embedded_home
    env = _environment(embedded_env(home))
    for seconds in ("2.5", "1", "3.5"):  # the first on a fresh home: during initdb/pg_ctl
        run = subprocess.run(
            ["timeout", seconds, sys.executable, "-m", "pgwatch_cli", "simulate"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert run.returncode in (124, 0), run.stderr  # 124: timeout had to stop it
        assert "Traceback" not in run.stderr
        deadline = time.monotonic() + 20
        while embedded_servers(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert embedded_servers(home) == [], run.stderr


def _environment(overrides: dict[str, str | None]) -> dict[str, str]:
    import os

    merged = {**os.environ, **overrides}
    return {name: value for name, value in merged.items() if value is not None}


def test_a_reader_that_goes_away_ends_simulate_quietly(
    dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    """``bookwatch simulate | head -1``: exit 0, no error, nothing left behind."""
    simulation = subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "simulate", "--dsn", dsn, "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert simulation.stdout is not None and simulation.stderr is not None
    first = simulation.stdout.readline()
    simulation.stdout.close()  # what head does after its line
    stderr = simulation.stderr.read()
    simulation.wait(timeout=60)
    assert first
    assert simulation.returncode == 0, stderr
    assert "Error" not in stderr and "Traceback" not in stderr
    assert scratch_schemas(postgresql) == []


def test_orphans_are_only_schemas_no_session_owns(dsn: str) -> None:
    """A scratch schema whose owning session is alive is not an orphan; once that session
    ends it is, and remove_abandoned drops it (and its log rows)."""
    from pgwatch_cli import scratch

    with psycopg.connect(dsn, autocommit=True) as owner, \
            psycopg.connect(dsn, autocommit=True) as other:
        scratch.claim(owner, "bookwatch_sim_00000001")
        owner.execute('CREATE SCHEMA "bookwatch_sim_00000001"')
        other.execute('CREATE SCHEMA "bookwatch_bench_00000002"')  # nobody claimed it
        other.execute('CREATE SCHEMA "bookwatch_simulated"')  # not a scratch name
        assert [o.schema for o in find_orphans(other)] == ["bookwatch_bench_00000002"]
        owner.close()  # the run died; its backend releases the lock as it exits
        deadline = time.monotonic() + 30
        while len(orphans := find_orphans(other)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [o.schema for o in orphans] == ["bookwatch_bench_00000002", "bookwatch_sim_00000001"]
        assert [o.command for o in orphans] == ["bench", "simulate"]
        assert [o.schema for o in remove_abandoned(other)] == [o.schema for o in orphans]
        assert scratch_schemas(other) == ["bookwatch_simulated"]
        assert find_orphans(other) == []


def test_exit_codes_follow_the_signal() -> None:
    assert lifecycle.exit_code(KeyboardInterrupt()) == 130
    assert lifecycle.exit_code(lifecycle.Terminated(signal.SIGTERM)) == 143
    assert lifecycle.exit_code(lifecycle.Terminated(signal.SIGHUP)) == 129


def test_sigterm_exits_zero_for_services_only() -> None:
    with lifecycle.sigterm_exits_zero():
        raise lifecycle.Terminated(signal.SIGTERM)
    with pytest.raises(lifecycle.Terminated), lifecycle.sigterm_exits_zero():
        raise lifecycle.Terminated(signal.SIGHUP)


def test_deferred_signals_arrive_after_the_block() -> None:
    done = []
    with (
        pytest.raises(lifecycle.Terminated) as stopped,
        lifecycle.signals_raise(),
        lifecycle.signals_deferred(),
    ):
        signal.raise_signal(signal.SIGHUP)
        done.append("cleanup")
    assert done == ["cleanup"] and stopped.value.signum == signal.SIGHUP


def test_a_deferred_signal_wins_over_the_failure_it_caused() -> None:
    with (
        pytest.raises(lifecycle.Terminated) as stopped,
        lifecycle.signals_raise(),
        lifecycle.signals_deferred(),
    ):
        signal.raise_signal(signal.SIGTERM)
        raise RuntimeError("initdb was killed too")
    assert stopped.value.signum == signal.SIGTERM
