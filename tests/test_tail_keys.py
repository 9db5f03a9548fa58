"""``tail`` and composite keys, TRUNCATE, GAP markers and invisible characters (issue 17.4,
17.12, 17.17, 16.3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from pgwatch_cli.commands.tail import row_cells
from pgwatch_cli.console import visible
from pgwatch_cli.stream.events import parse
from tests.capture_helpers import install
from tests.fix_cli import Invoke

NIGHTS = [(12, "2027-01-05"), (5, "2027-01-12"), (2027, "2027-01-05")]


@pytest.fixture
def nights(dsn: str) -> str:
    """A composite key whose declared order (night, room) is not the JSON order (room, night)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE nights (night date, room int, price int,"
                     " PRIMARY KEY (night, room))")
    install(dsn, "nights")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for room, night in NIGHTS:
            conn.execute("INSERT INTO nights VALUES (%s, %s, 100)", (night, room))
    return dsn


def tail_ids(bookwatch: Invoke, dsn: str, *args: str) -> list[dict[str, object]]:
    result = bookwatch("tail", "--dsn", dsn, "--since", "0", "--timeout", "3", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line)["pk"] for line in result.stdout.splitlines()]


@pytest.mark.parametrize("wanted", [
    "2027-01-05,12",                 # the key's declared column order
    "room=12,night=2027-01-05",      # labelled, any order
    "night=2027-01-05,room=12",
])
def test_a_composite_id_matches_in_both_forms(
    bookwatch: Invoke, nights: str, wanted: str
) -> None:
    assert tail_ids(bookwatch, nights, "--id", wanted) == [{"room": 12, "night": "2027-01-05"}]


def test_a_composite_id_in_another_order_matches_nothing(bookwatch: Invoke, nights: str) -> None:
    assert tail_ids(bookwatch, nights, "--id", "12,2027-01-05") == []
    assert tail_ids(bookwatch, nights, "--id", "room=12") == []  # the whole key, not a part


def test_the_table_shows_a_composite_key_labelled_in_declared_order() -> None:
    event = parse(json.dumps({
        "v": 1, "seq": 1, "table": "nights", "schema": "public", "action": "INSERT",
        "id": None, "pk": {"room": 12, "night": "2027-01-05"}, "actor": "Anna\u200b",
        "changed": None, "diff": None, "truncated": False, "txid": 1,
        "timestamp": "2026-11-28T06:41:00.000000+00:00",
    }))
    cells = row_cells(event, datetime.now(UTC), ("night", "room"))
    assert str(cells[4]) == "night=2027-01-05,room=12"
    assert str(cells[5]) == "Anna\\u200b"  # looks like nobody else


@pytest.mark.parametrize("name", ["Anna\u200b", "An\u200dna", "\u2060Anna", "Anna\u200f",
                                  "\ufeffAnna"])
def test_invisible_characters_are_shown(name: str) -> None:
    assert visible(name) != "Anna" and visible(name).replace("\\u", "").isascii()


def test_help_says_what_a_composite_id_looks_like(bookwatch: Invoke) -> None:
    result = bookwatch("tail", "--help")
    text = " ".join(result.stdout.split())
    assert "COLUMN=VALUE" in text and "declared column order" in text
    assert "TRUNCATE" in text


def test_truncate_is_an_action_to_filter_on(bookwatch: Invoke, nights: str) -> None:
    with psycopg.connect(nights, autocommit=True) as conn:
        conn.execute("TRUNCATE nights")
    result = bookwatch("tail", "--dsn", nights, "--since", "0", "--count", "1", "--timeout",
                       "30", "--json", "-a", "truncate")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "TRUNCATE"


def test_a_gap_is_an_error_line_and_tail_goes_on(bookwatch: Invoke, nights: str) -> None:
    with psycopg.connect(nights, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bookwatch.change_log (seq, channel, payload)"
            " SELECT s, 'booking_changes', '{\"v\":1,\"seq\":' || s || ',\"action\":\"GAP\","
            "\"reason\":\"the slot was invalidated\",\"lost_from\":\"0/1000\","
            "\"lost_to\":\"0/2000\"}' FROM nextval('bookwatch.change_seq') AS s")
        conn.execute("INSERT INTO nights VALUES ('2027-02-01', 1, 1)")
    result = bookwatch("tail", "--dsn", nights, "--since", "0", "--count", "4", "--timeout",
                       "30", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2, 3, 5]
    assert "Error: changes were lost (0/1000 .. 0/2000): the slot was invalidated" in " ".join(
        result.stderr.split())
