"""``bookwatch tail`` end to end: filters, --since seam, --count/--timeout, Ctrl-C, errors."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from rich.console import Console

from pgwatch_cli.commands.tail import LiveTable, format_delay, row_cells
from pgwatch_cli.stream.events import ChangeEvent, parse
from pgwatch_cli.stream.listener import ChangeStream
from tests.capture_helpers import install
from tests.fix_cli import Invoke, run_bookwatch, spawn_bookwatch
from tests.test_listener import make_items, write_items

# (table, action, id, actor) of the changes written by the ``changes`` fixture, in order.
CHANGES = [
    ("items", "INSERT", "1", "Anna"),
    ("items", "INSERT", "2", "Anna"),
    ("items", "UPDATE", "1", "Ben"),
    ("tags", "INSERT", "a", "Ben"),
    ("items", "DELETE", "2", "Anna"),
    ("tags", "UPDATE", "a", "Cleo"),
]


@pytest.fixture
def changes(dsn: str) -> str:
    """A database whose change log holds CHANGES (two tables, three actors, three actions)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE tags (code text PRIMARY KEY, label text)")
    install(dsn, "items", "tags")
    statements = [
        ("Anna", "INSERT INTO items VALUES (1, 'one')"),
        ("Anna", "INSERT INTO items VALUES (2, 'two')"),
        ("Ben", "UPDATE items SET note = 'uno' WHERE id = 1"),
        ("Ben", "INSERT INTO tags VALUES ('a', 'alpha')"),
        ("Anna", "DELETE FROM items WHERE id = 2"),
        ("Cleo", "UPDATE tags SET label = 'A' WHERE code = 'a'"),
    ]
    with psycopg.connect(dsn) as conn:
        for actor, statement in statements:
            with conn.transaction():
                conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (actor,))
                conn.execute(statement)
    return dsn


def shown(output: str) -> list[tuple[str, str, str, str | None]]:
    events = [parse(line) for line in output.splitlines()]
    return [(e.table, e.action, e.id_text, e.actor) for e in events]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["-t", "items"], [0, 1, 2, 4]),
        (["--table", "public.tags"], [3, 5]),
        (["-a", "update"], [2, 5]),
        (["-a", "INSERT", "--action", "DELETE"], [0, 1, 3, 4]),
        (["--id", "1"], [0, 2]),
        (["--id", "a", "--id", "2"], [1, 3, 4, 5]),
        (["--actor", "Ben"], [2, 3]),
        (["--actor", "Ben", "--actor", "Cleo"], [2, 3, 5]),
        (["-t", "items", "-a", "UPDATE", "--actor", "Ben"], [2]),
        (["-t", "items", "--actor", "Cleo"], []),
        ([], [0, 1, 2, 3, 4, 5]),
    ],
)
def test_filters(
    bookwatch: Invoke, changes: str, filters: list[str], expected: list[int]
) -> None:
    result = bookwatch("tail", "--dsn", changes, "--since", "0", "--timeout", "1", *filters)
    assert result.exit_code == 0, result.stderr
    assert shown(result.stdout) == [CHANGES[number] for number in expected]


def test_json_lines_are_the_wire_format(bookwatch: Invoke, changes: str) -> None:
    result = bookwatch("tail", "--dsn", changes, "--since", "0", "--count", "6", "--json")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(parse(line).to_wire() == line for line in lines)


def test_count_exits_after_n_matching_events(bookwatch: Invoke, changes: str) -> None:
    result = bookwatch("tail", "--dsn", changes, "--since", "0", "--count", "2", "-a", "UPDATE")
    assert result.exit_code == 0
    assert shown(result.stdout) == [CHANGES[2], CHANGES[5]]


def test_timeout_exits_zero_when_nothing_happens(bookwatch: Invoke, changes: str) -> None:
    started = time.monotonic()
    result = bookwatch("tail", "--dsn", changes, "--timeout", "0.5")
    assert result.exit_code == 0 and result.stdout == ""
    assert time.monotonic() - started < 10


def test_since_seam_has_no_gap_and_no_duplicate(dsn: str) -> None:
    """Rows keep coming while tail starts and replays the log: each appears once, in order."""
    make_items(dsn)
    write_items(dsn, range(100))
    writer = threading.Thread(target=write_items, args=(dsn, range(100, 700), 0.003))
    writer.start()  # before tail starts, still writing after it went live
    tail = subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "tail", "--dsn", dsn, "--since", "30",
         "--count", "670", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_listener(dsn)
    with psycopg.connect(dsn) as conn:
        written_when_listening = conn.execute("SELECT count(*) FROM items").fetchone()
    out, err = tail.communicate(timeout=90)
    writer.join()
    assert tail.returncode == 0, err
    events = [parse(line) for line in out.splitlines()]
    assert [event.seq for event in events] == list(range(31, 701))
    assert [event.id for event in events] == list(range(30, 700))
    assert written_when_listening is not None and written_when_listening[0] < 700  # live seam


def test_ctrl_c_exits_130_without_traceback(dsn: str) -> None:
    make_items(dsn)
    tail = spawn_bookwatch("tail", "--dsn", dsn)
    try:
        wait_for_listener(dsn)
        write_items(dsn, range(3))
        time.sleep(0.5)
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 130, err
    assert "Traceback" not in err
    assert [event.id for event in map(parse, out.splitlines())] == [0, 1, 2]


def wait_for_listener(dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'bookwatch listener'"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise AssertionError("tail never started listening")


def test_unreachable_database_is_one_error_line() -> None:
    result = run_bookwatch("tail", "--dsn", "postgresql://postgres@127.0.0.1:1/none")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr


def test_since_without_change_log_is_an_error(bookwatch: Invoke, dsn: str) -> None:
    result = bookwatch("tail", "--dsn", dsn, "--since", "3")
    assert result.exit_code == 1
    assert "Error: There is no change log" in result.stderr


@pytest.mark.parametrize(
    "bad",
    [["--action", "FOO"], ["--count", "0"], ["--timeout", "-1"], ["--since", "-5"],
     ["--count", "many"], ["--channel", "x" * 64]],
)
def test_bad_option_values_are_usage_errors(bookwatch: Invoke, bad: list[str]) -> None:
    result = bookwatch("tail", "--dsn", "postgresql://postgres@127.0.0.1:1/none", *bad)
    assert result.exit_code == 2


def test_on_a_terminal_it_draws_a_live_table(changes: str) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "30"}
    with subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "tail", "--dsn", changes, "--since", "0",
         "--timeout", "2"],
        stdout=follower, stderr=subprocess.PIPE, env=env,
    ) as tail:
        os.close(follower)
        screen = read_all(leader, tail)
        assert tail.stderr is not None
        err = tail.stderr.read().decode()
    assert tail.returncode == 0, err
    assert "bookwatch tail" in screen
    for word in ("INSERT", "UPDATE", "DELETE", "Cleo", "note", "label"):
        assert word in screen
    assert "{" not in screen  # a table, not JSON


def read_all(fd: int, process: subprocess.Popen[bytes]) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the pty closes when the process exits
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(timeout=10)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def test_live_table_rows_are_bounded_and_newest_last(dsn: str) -> None:
    event = parse(json.dumps({
        "v": 1, "seq": 1, "table": "bookings", "schema": "public", "action": "UPDATE",
        "id": 123, "pk": {"id": 123}, "actor": "Anna", "changed": ["gesamtpreis"],
        "diff": {"gesamtpreis": [100, 120]}, "truncated": False, "txid": 1,
        "timestamp": "2026-11-28T06:41:00.000000+00:00",
    }))
    stream = ChangeStream(dsn)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, height=20)
    view = LiveTable(stream, console)
    for number in range(50):
        view.show(numbered(event, number), event.committed_at + timedelta(milliseconds=12))
    console.print(view._render())
    text = out.getvalue()
    assert "#49" in text and "#0 " not in text
    assert text.count("Anna") <= 20
    assert text.index("#48") < text.index("#49")
    assert "gesamtpreis" in text and "12.0 ms" in text


def numbered(event: ChangeEvent, number: int) -> ChangeEvent:
    return event.model_copy(update={"actor": f"Anna #{number}"})


def test_delay_is_receipt_minus_event_time() -> None:
    event = parse(json.dumps({
        "v": 1, "seq": None, "table": "t", "schema": "public", "action": "DELETE",
        "id": None, "pk": {"a": 1, "b": 2}, "actor": None, "changed": None, "diff": None,
        "truncated": False, "txid": 1, "timestamp": "2026-11-28T06:41:00+00:00",
    }))
    cells = row_cells(event, datetime(2026, 11, 28, 6, 41, 2, 500000, tzinfo=UTC))
    assert cells[1:3] == ("-", "t") and cells[4] == "1,2" and cells[-1] == "2.5 s"
    assert format_delay(0.0004) == "0.4 ms" and format_delay(600) == "10 min"
