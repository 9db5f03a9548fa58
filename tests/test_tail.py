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

from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.commands.tail import (
    LiveTable,
    TailOptions,
    format_delay,
    nothing_can_arrive,
    row_cells,
)
from pgwatch_cli.stream.events import ChangeEvent, parse
from pgwatch_cli.stream.filters import Filters
from pgwatch_cli.stream.listener import ChangeStream
from tests.capture_helpers import install
from tests.fix_cli import Invoke, run_bookwatch, spawn_bookwatch


def make_items(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    install(dsn, "items")


def write_items(dsn: str, ids: range, pause: float = 0.0) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for item in ids:
            conn.execute("INSERT INTO items (id, note) VALUES (%s, 'x')", (item,))
            if pause:
                time.sleep(pause)  # a steady trickle of writes, not an ordering device

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


FILTER_CASES = [
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
]


def change_event(number: int) -> ChangeEvent:
    """CHANGES[number] as the event the database would send (no database needed)."""
    table, action, row_id, actor = CHANGES[number]
    key = "code" if table == "tags" else "id"
    value: object = row_id if table == "tags" else int(row_id)
    return parse(json.dumps({
        "v": 1, "seq": number + 1, "table": table, "schema": "public", "action": action,
        "id": value, "pk": {key: value}, "actor": actor,
        "changed": ["note"] if action == "UPDATE" else None,
        "diff": None, "truncated": False, "txid": 1,
        "timestamp": "2026-11-28T06:41:00+00:00",
    }))


def filters_of(args: list[str]) -> Filters:
    """The Filters the CLI builds from these options."""
    kinds: dict[str, list[str]] = {"table": [], "action": [], "id": [], "actor": []}
    names = {"-t": "table", "--table": "table", "-a": "action", "--action": "action",
             "--id": "id", "--actor": "actor"}
    for option, value in zip(args[::2], args[1::2], strict=True):
        kinds[names[option]].append(value)
    return Filters.of(kinds["table"], kinds["action"], kinds["id"], kinds["actor"])


@pytest.mark.parametrize(("filters", "expected"), FILTER_CASES)
def test_filters(filters: list[str], expected: list[int]) -> None:
    """The filter logic, in memory: AND across kinds, OR within one."""
    matching = filters_of(filters)
    events = [change_event(number) for number in range(len(CHANGES))]
    assert [n for n, event in enumerate(events) if matching.matches(event)] == expected


@pytest.mark.parametrize(("filters", "expected"), [FILTER_CASES[5], FILTER_CASES[8]])
def test_filters_end_to_end(
    bookwatch: Invoke, changes: str, filters: list[str], expected: list[int]
) -> None:
    """The same through the CLI and a real change log; --count ends it, no timeout waited."""
    result = bookwatch("tail", "--dsn", changes, "--since", "0", "--count", str(len(expected)),
                       "--timeout", "60", *filters)
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
        assert tail.stdout is not None
        seen = [tail.stdout.readline() for _ in range(3)]  # all three shown: now interrupt
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 130, err
    assert "Traceback" not in err
    assert [event.id for event in map(parse, seen)] == [0, 1, 2] and out == ""


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
    returncode, screen, err = tail_on_a_terminal(changes, len(CHANGES), columns=120)
    assert returncode == 0, err
    assert "bookwatch tail" in screen
    for word in ("INSERT", "UPDATE", "DELETE", "Cleo", "note", "label"):
        assert word in screen
    assert "{" not in screen  # a table, not JSON


def tail_on_a_terminal(dsn: str, count: int, *, columns: int) -> tuple[int, str, str]:
    """``tail --since 0`` with a pty as stdout: its exit code, the screen, its stderr."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "30"}
    with subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "tail", "--dsn", dsn, "--since", "0",
         "--count", str(count), "--timeout", "60"],
        stdout=follower, stderr=subprocess.PIPE, env=env,
    ) as tail:
        os.close(follower)
        screen = read_all(leader, tail)
        assert tail.stderr is not None
        err = tail.stderr.read().decode()
    return tail.returncode, screen, err


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
    cells = [str(cell) for cell in row_cells(event, datetime(2026, 11, 28, 6, 41, 2, 500000,
                                                                 tzinfo=UTC))]
    assert cells[1:3] == ["-", "t"] and cells[4] == "a=1,b=2" and cells[-1] == "2.5 s"
    assert format_delay(0.0004) == "0.4 ms" and format_delay(600) == "10 min"


# -- when nothing can arrive -----------------------------------------------------------------


def options(*tables: str, channel: str = "booking_changes") -> TailOptions:
    return TailOptions(dsn="", channel=channel, filters=Filters.of(tables),
                       same_server=" --dsn 'postgresql://u:****@db/app'")


BOOKINGS = TableRef("public", "bookings")


@pytest.mark.parametrize(
    ("installed", "tail", "says"),
    [
        ([], options(), "no bookwatch trigger is installed"),
        ([(BOOKINGS, "other")], options(), "no bookwatch trigger sends on channel"),
        ([(BOOKINGS, "booking_changes")], options("bookngs"), "no bookwatch trigger on bookngs"),
        ([(BOOKINGS, "booking_changes")], options("other.bookings"), "on other.bookings"),
    ],
)
def test_says_why_nothing_can_arrive(
    installed: list[tuple[TableRef, str]], tail: TailOptions, says: str
) -> None:
    [problem] = nothing_can_arrive(installed, tail)
    assert says in problem
    assert "bookwatch install-triggers --dsn 'postgresql://u:****@db/app'" in problem


@pytest.mark.parametrize(
    "tail", [options(), options("bookings"), options("public.bookings", "nothing")]
)
def test_is_quiet_when_events_can_arrive(tail: TailOptions) -> None:
    assert nothing_can_arrive([(BOOKINGS, "booking_changes")], tail) == []


def test_a_typo_in_table_warns_with_the_same_dsn_and_keeps_listening(
    bookwatch: Invoke, changes: str
) -> None:
    result = bookwatch("tail", "--dsn", changes, "-t", "itemz", "--timeout", "0.2")
    assert result.exit_code == 0, result.stderr
    assert "no bookwatch trigger on itemz" in result.stderr
    assert f"install-triggers --dsn '{changes}' -t itemz" in result.stderr


def test_no_trigger_at_all_warns(bookwatch: Invoke, dsn: str) -> None:
    result = bookwatch("tail", "--dsn", dsn, "--timeout", "0.2")
    assert result.exit_code == 0
    assert "no bookwatch trigger is installed" in result.stderr


# -- text from the database is shown literally ---------------------------------------------------

HOSTILE_ACTORS = ["[/bold]", "[link=https://evil.example]Anna[/link]", "\x1b]0;pwned\x07Ben"]


def test_markup_and_escape_sequences_in_names_are_inert_on_a_terminal(dsn: str) -> None:
    make_items(dsn)
    with psycopg.connect(dsn) as conn:
        for number, actor in enumerate(HOSTILE_ACTORS):
            with conn.transaction():
                conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (actor,))
                conn.execute("INSERT INTO items VALUES (%s, 'x')", (number,))
    returncode, screen, err = tail_on_a_terminal(dsn, 3, columns=200)
    assert returncode == 0, err
    assert "Traceback" not in err and "MarkupError" not in err
    assert "[/bold]" in screen
    assert "[link=https://evil.example]Anna[/link]" in screen
    assert "\x1b]8;" not in screen  # no hyperlink
    assert "\x1b]0;" not in screen and "\\x1b]0;pwned\\x07Ben" in screen  # no retitling


def test_markup_in_a_table_filter_is_shown_literally(bookwatch: Invoke, changes: str) -> None:
    result = bookwatch("tail", "--dsn", changes, "-t", "[/bold]", "--timeout", "0.2")
    assert result.exit_code == 0, result.stderr
    assert "no bookwatch trigger on [/bold]" in result.stderr


def test_a_sql_ascii_database_is_a_clear_error(bookwatch: Invoke, server_dsn: str) -> None:
    name = f"bookwatch_test_{os.getpid()}_sql_ascii"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' TEMPLATE template0"
                     " LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        target = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        for command in ("tail", "status"):
            result = bookwatch(command, "--dsn", target)
            assert result.exit_code == 1, result.stderr
            assert "Traceback" not in result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and "SQL_ASCII" in errors[0]
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_json_lines_on_a_terminal_escape_c1_and_bidi_controls(dsn: str) -> None:
    make_items(dsn)
    actor = "Ben\x9b31m\u202eniB"
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (actor,))
        conn.execute("INSERT INTO items VALUES (1, 'x')")
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "tail", "--dsn", dsn, "--since", "0", "--json",
         "--count", "1", "--timeout", "60"],
        stdout=follower, stderr=subprocess.PIPE,
    ) as tail:
        os.close(follower)
        screen = read_all(leader, tail)
    assert tail.returncode == 0
    assert "\x9b" not in screen and "\u202e" not in screen
    line = next(line for line in screen.splitlines() if line.startswith("{"))
    assert json.loads(line)["actor"] == actor  # the same JSON value
