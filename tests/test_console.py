"""Text from the database or the user reaches the terminal literally (no database needed, but
for the CLI error run, which fails on purpose)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pgwatch_cli.console import literal, visible
from tests.fix_cli import Invoke


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\nb\tc\rd", "a\\x0ab\\x09c\\x0dd"),
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("\x7f", "\\x7f"),
        ("abc\u202edcba", "abc\\u202edcba"),  # bidi override
        ("Zoë 😀 [b]", "Zoë 😀 [b]"),
    ],
)
def test_visible_spells_out_control_characters(raw: str, shown: str) -> None:
    assert visible(raw) == shown


@pytest.mark.parametrize("text", ["[/bold]", "[link=https://evil.example]Anna[/link]",
                                  "[red]x", "\\[escaped]"])
def test_literal_text_survives_markup(text: str) -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, highlight=False, width=200).print(
        f"[dim]actor:[/dim] {literal(text)}"
    )
    printed = out.getvalue()
    assert text in printed and "\x1b]8;" not in printed


def test_an_error_naming_hostile_text_stays_one_inert_line(bookwatch: Invoke) -> None:
    result = bookwatch("install-triggers", "--dsn", "postgresql://postgres@127.0.0.1:1/x",
                       "-t", "[/bold]\x1b]0;x\x07", "--exclude-column", "nope")
    assert result.exit_code == 2
    assert "\x1b]0;" not in result.stderr and "Traceback" not in result.stderr


def test_status_shows_hostile_table_and_column_names_literally(
    bookwatch: Invoke, dsn: str
) -> None:
    import psycopg

    from tests.capture_helpers import install

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "[/bold]" ("[link=https://evil.example]id" int PRIMARY KEY)')
        conn.execute('CREATE TABLE "\x1b]0;pwned\x07" (id int PRIMARY KEY)')
    install(dsn, '"[/bold]"', '"\x1b]0;pwned\x07"')
    result = bookwatch("status", "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "[/bold]" in text and "[link=https://evil.example]id" in text
    assert "\x1b]0;" not in result.stdout and "\\x1b]0;pwned\\x07" in text
