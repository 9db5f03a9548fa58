"""``bookwatch bench``: complete delivery, plausible figures, and a scratch schema that is
always removed (after success, a failing run, Ctrl-C)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql

from pgwatch_cli.commands.bench import options as bench_options
from pgwatch_cli.commands.bench import scratch as bench_scratch
from tests.fix_cli import Invoke, spawn_bookwatch

pytestmark = pytest.mark.timeout(120)

WRITER_APP = "bookwatch bench writer"


def bench_json(bookwatch: Invoke, dsn: str, *args: str) -> dict[str, Any]:
    result = bookwatch("bench", "--dsn", dsn, "--json", *args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "━" not in result.stderr and "processes connected" not in result.stderr  # no bars
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def bench_leftovers(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bookwatch%' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def assert_plausible_latency(latency: dict[str, float]) -> None:
    # Generous: a noisy shared 2-core machine; only order and sanity are checked.
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 30_000


def test_small_run_delivers_everything_once_and_cleans_up(
    bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    figures = bench_json(bookwatch, dsn, "--events", "200", "--listeners", "2", "--durable")

    # --durable is --mode auto; the shared test server runs wal_level = replica: log mode.
    assert figures["mode_requested"] == "auto" and figures["mode"] == "log"
    assert figures["raw_baseline_reads"] == "change_log_on_wakeup"

    assert figures["events_written"] == 200
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["received_per_listener"] == {"min": 200, "max": 200}
    assert_plausible_latency(figures["latency_ms"])
    raw = figures["raw_baseline"]
    assert raw["received_per_listener"] == {"min": 200, "max": 200}
    assert raw["lost"] == 0 and raw["duplicated"] == 0
    assert_plausible_latency(raw["latency_ms"])
    assert figures["latency_ratio_vs_raw"]["p50"] > 0
    overhead = figures["write_overhead"]
    assert overhead["mode"] == "log"
    assert overhead["without_trigger"]["events"] == overhead["with_trigger"]["events"] == 200
    assert overhead["throughput_ratio"] > 0
    assert 0 <= figures["peak_notification_queue_usage"] < 1
    assert figures["healthy"] is True
    # This run created schema bookwatch, so it removed it again along with its own.
    assert bench_leftovers(postgresql) == []


def test_every_listener_receives_everything_not_durable_big_payload(
    bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    # The user's own bookwatch installation must survive the run untouched.
    postgresql.execute("CREATE TABLE bookings (id int PRIMARY KEY, note text)")
    postgresql.commit()
    installed = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings")
    assert installed.exit_code == 0, installed.stderr
    postgresql.execute("INSERT INTO bookings VALUES (1, 'mine')")
    postgresql.commit()

    figures = bench_json(
        bookwatch, dsn, "--events", "150", "--writers", "2", "--listeners", "3",
        "--no-durable", "--payload-bytes", "7400",
    )

    assert figures["events_written"] == 150
    assert figures["received_per_listener"] == {"min": 150, "max": 150}
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["mode"] == figures["write_overhead"]["mode"] == "notify"
    assert figures["raw_baseline_reads"] == "notify_payload"
    assert 7200 <= figures["payload_bytes"] <= 7500  # the largest that keeps its values
    assert_plausible_latency(figures["latency_ms"])
    assert bench_leftovers(postgresql) == ["bookwatch"]
    log = postgresql.execute("SELECT channel FROM bookwatch.change_log").fetchall()
    assert log == [("booking_changes",)]
    status = json.loads(bookwatch("status", "--dsn", dsn, "--json").stdout)
    assert [t["table"] for t in status["tables"]] == ["bookings"]


def test_notify_mode_delivers_payloads_and_the_table_says_so(
    bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    result = bookwatch("bench", "--dsn", dsn, "--events", "200", "--mode", "notify")

    assert result.exit_code == 0, result.stderr
    assert "notify mode" in result.stdout
    assert "plain LISTEN, reading the NOTIFY payload" in result.stdout
    assert bench_leftovers(postgresql) == []


def test_wal_mode_relays_everything_once_and_leaves_no_slot(
    bookwatch: Invoke, logical_db: str
) -> None:
    figures = bench_json(
        bookwatch, logical_db, "--events", "300", "--writers", "2", "--listeners", "2",
        "--mode", "wal", "--payload-bytes", "20000",
    )

    assert figures["mode"] == "wal" and figures["relay"] is True
    assert 19_500 <= figures["payload_bytes"] <= 20_500  # whole: no NOTIFY limit on the way
    assert figures["events_written"] == 300
    assert figures["received_per_listener"] == {"min": 300, "max": 300}
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    raw = figures["raw_baseline"]
    assert raw["received_per_listener"] == {"min": 300, "max": 300}
    assert raw["lost"] == 0 and raw["duplicated"] == 0
    assert_plausible_latency(figures["latency_ms"])
    assert figures["write_overhead"]["throughput_ratio"] > 0
    with psycopg.connect(logical_db, autocommit=True) as conn:
        assert bench_leftovers(conn) == []
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall()
        assert slots == []
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)


def install_users_bookings(bookwatch: Invoke, dsn: str) -> Any:
    """The user's own table ``bookings``, installed (auto mode) before bench runs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, note text)")
    installed = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings")
    assert installed.exit_code == 0, installed.stderr
    return installed


def test_wal_mode_keeps_the_users_own_slot_and_log(
    bookwatch: Invoke, logical_db: str
) -> None:
    installed = install_users_bookings(bookwatch, logical_db)
    assert "capture mode: wal" in installed.stderr
    with psycopg.connect(logical_db, autocommit=True) as conn:
        slots_before = conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    assert len(slots_before) == 1

    result = bookwatch("bench", "--dsn", logical_db, "--events", "100", "--json")

    assert result.exit_code == 0, result.stderr
    assert "capture mode: wal" in result.stderr  # auto says what it chose, as install does
    figures = json.loads(result.stdout)
    assert figures["mode"] == "wal" and figures["lost"] == 0
    with psycopg.connect(logical_db, autocommit=True) as conn:
        assert bench_leftovers(conn) == ["bookwatch"]
        assert conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall() == (
            slots_before
        )
        status = json.loads(bookwatch("status", "--dsn", logical_db, "--json").stdout)
        assert [t["table"] for t in status["tables"]] == ["bookings"]


def test_no_relay_leaves_relaying_to_a_bookwatch_relay_process(
    bookwatch: Invoke, logical_db: str
) -> None:
    install_users_bookings(bookwatch, logical_db)
    relay = spawn_bookwatch("relay", "--dsn", logical_db)
    try:
        figures = bench_json(
            bookwatch, logical_db, "--events", "200", "--mode", "wal", "--no-relay"
        )
        assert figures["mode"] == "wal" and figures["relay"] is False
        assert figures["received_per_listener"] == {"min": 200, "max": 200}
        assert figures["lost"] == 0 and figures["duplicated"] == 0
        assert figures["raw_baseline"]["lost"] == 0
        assert relay.poll() is None  # it relayed all along; the user's slot was kept
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=30)
    assert relay.returncode == 0


def test_no_relay_with_nobody_relaying_fails_clearly_and_cleans_up(
    bookwatch: Invoke, logical_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing can arrive (nobody relays): no production-sized wait for it.
    monkeypatch.setattr(bench_scratch, "CALIBRATION_WAIT_S", 2.0)
    monkeypatch.setattr(bench_options, "DRAIN_TIMEOUT_S", 2.0)
    result = bookwatch("bench", "--dsn", logical_db, "--events", "20", "--mode", "wal",
                       "--no-relay")

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "bookwatch relay" in result.stderr
    with psycopg.connect(logical_db, autocommit=True) as conn:
        assert bench_leftovers(conn) == []
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


def test_duration_and_rate_bound_the_load(bookwatch: Invoke, dsn: str) -> None:
    figures = bench_json(bookwatch, dsn, "--duration", "1.5", "--rate", "100")

    assert 60 <= figures["events_written"] <= 160
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["rate_events_per_s"] == 100


def test_hub_listeners_share_one_connection_and_each_get_everything(
    bookwatch: Invoke, dsn: str
) -> None:
    figures = bench_json(bookwatch, dsn, "--events", "120", "--listeners", "20", "--hub")

    assert figures["listener_mode"] == "hub" and figures["listener_connections"] == 1
    assert figures["received_per_listener"] == {"min": 120, "max": 120}
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["hub_subscribers_cut"] == 0
    assert_plausible_latency(figures["latency_ms"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rate", "-1"], "--rate"),
        (["--listeners", "0"], "--listeners"),
        (["--writers", "0"], "--writers"),
        (["--events", "10", "--duration", "2"], "--duration"),
        (["--events", "0"], "--events"),
        (["--payload-bytes", "7600"], "--payload-bytes"),
        (["--payload-bytes", "2000000", "--mode", "wal"], "--payload-bytes"),
        (["--mode", "wal", "--durable"], "--durable"),
        (["--mode", "log", "--no-durable"], "--no-durable"),
    ],
)
def test_bad_options_are_usage_errors(bookwatch: Invoke, args: list[str], named: str) -> None:
    result = bookwatch("bench", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:")
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_more_listeners_than_connections_is_refused_clearly(
    bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    result = bookwatch("bench", "--dsn", dsn, "--listeners", "100000", "--events", "10")
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "max_connections" in result.stderr
    assert "Traceback" not in result.stderr
    assert bench_leftovers(postgresql) == []


def _start_bench(dsn: str) -> subprocess.Popen[str]:
    return spawn_bookwatch(
        "bench", "--dsn", dsn, "--duration", "30", "--rate", "200", "--listeners", "2"
    )


def _wait_for_writer(conn: psycopg.Connection[Any], bench: subprocess.Popen[str]) -> list[int]:
    """The writers' backend pids, once the first write phase has written something."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert bench.poll() is None, bench.communicate()
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            (WRITER_APP, conn.info.dbname),
        )]
        if pids and _written(conn) > 0:
            return pids
        time.sleep(0.05)
    raise AssertionError("the bench writer never started writing")


def _written(conn: psycopg.Connection[Any]) -> int:
    """Rows the writers have updated so far in the scratch schema's table without trigger."""
    row = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bookwatch\\_bench\\_%'"
    ).fetchone()
    if row is None:
        return 0
    try:
        counted = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.plain WHERE ts > 0").format(sql.Identifier(row[0]))
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(counted[0]) if counted else 0


def test_failing_run_reports_one_error_line_and_leaves_nothing(
    dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    postgresql.autocommit = True
    bench = _start_bench(dsn)
    try:
        for pid in _wait_for_writer(postgresql, bench):
            postgresql.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "writer" in errors[0], stderr
    assert "Traceback" not in stderr
    assert bench_leftovers(postgresql) == []


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_signal_cleans_up_like_ctrl_c(
    dsn: str, postgresql: psycopg.Connection[Any], signum: int, code: int
) -> None:
    """No schema, no connection, no process left: docs/reference.md, "Signals"."""
    postgresql.autocommit = True
    bench = _start_bench(dsn)
    try:
        _wait_for_writer(postgresql, bench)
        workers = psutil.Process(bench.pid).children(recursive=True)
        assert len(workers) >= 3  # 2 listener groups (ChangeStream + raw), 1 writer
        bench.send_signal(signum)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == code, stderr
    assert "Traceback" not in stderr
    assert bench_leftovers(postgresql) == []
    assert connections(postgresql) == 0
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


def connections(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bookwatch%%'"
        " AND datname = %s", (conn.info.dbname,),
    ).fetchone()
    return int(row[0]) if row else -1


def test_workers_exit_when_the_coordinator_is_killed_and_the_next_run_removes_its_schema(
    bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    """SIGKILL runs no cleanup: the workers notice on their own, and the schema, now owned by
    no live session, is named by find_orphans and removed by the next run."""
    from pgwatch_cli.scratch import find_orphans

    postgresql.autocommit = True
    bench = _start_bench(dsn)
    try:
        _wait_for_writer(postgresql, bench)
        workers = psutil.Process(bench.pid).children(recursive=True)
        bench.kill()
        bench.communicate(timeout=30)
        _gone, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == []
    finally:
        bench.kill()
    deadline = time.monotonic() + 15  # the server notices the closed sessions
    while not (orphans := find_orphans(postgresql)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [orphan] = orphans
    assert orphan.schema.startswith("bookwatch_bench_") and orphan.command == "bench"
    # The capture set: row trigger and TRUNCATE trigger (more in wal mode).
    assert orphan.triggers >= 2 and "DROP SCHEMA" in orphan.removal

    result = bookwatch("bench", "--dsn", dsn, "--events", "20", "--json")
    assert result.exit_code == 0, result.stderr
    assert f"removed scratch schema {orphan.schema}" in result.stderr
    assert find_orphans(postgresql) == []
    assert [s for s in bench_leftovers(postgresql) if s.startswith("bookwatch_bench")] == []
