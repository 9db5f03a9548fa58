"""Output helpers, kept apart from command logic: notes and errors go to stderr.

Text that comes from the database or the user (actor and table names, values, messages) goes
through ``literal`` before it reaches a Rich markup string, and through ``visible`` before it
becomes a ``rich.text.Text``: markup in it stays text, and control characters (ESC, the other
C0 and C1 codes, bidi overrides) are shown as escapes instead of steering the terminal.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import TYPE_CHECKING

from pgwatch_cli.text import TEXT_ESCAPES

if TYPE_CHECKING:
    from rich.console import Console

_debug = False



def visible(text: str) -> str:
    """``text`` with every control character written as an escape (ESC → ``\\x1b``)."""
    return text.translate(TEXT_ESCAPES)


def literal(text: object) -> str:
    """``text`` made safe to place inside a Rich markup string: shown exactly as it is."""
    from rich.markup import escape

    return escape(visible(str(text)))


def enable_tracebacks() -> None:
    """``--debug``: errors show their traceback (a setting of this process, not its env)."""
    global _debug
    _debug = True


def tracebacks_enabled() -> bool:
    return _debug or os.environ.get("BOOKWATCH_DEBUG", "") not in ("", "0")


@cache
def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@cache
def _stdout() -> Console:
    from rich.console import Console

    class Stdout(Console):
        def on_broken_pipe(self) -> None:
            # Rich would exit 1 without a word; the CLI ends quietly instead, as a filter
            # does when its reader goes away (``bookwatch simulate | head -1``).
            raise BrokenPipeError

    # Piped output is read by people in pagers and logs: do not squeeze tables to 80 columns.
    return Stdout(highlight=False, width=None if sys.stdout.isatty() else 200)


def __getattr__(name: str) -> Console:
    # ``console.stdout`` / ``console.stderr`` are made on first use: importing rich costs more
    # than ``bookwatch --help`` should.
    if name == "stdout":
        return _stdout()
    if name == "stderr":
        return _stderr()
    raise AttributeError(name)


def note(message: str) -> None:
    """A one-line progress or context note on stderr (never on stdout, which may be piped)."""
    _stderr().print(f"[dim]bookwatch:[/dim] {literal(message)}")


def warn(message: str) -> None:
    _stderr().print(f"[yellow]bookwatch:[/yellow] {literal(message)}")


def error(message: str, hint: str | None = None) -> None:
    _stderr().print(f"[bold red]Error:[/bold red] {literal(message)}")
    if hint:
        _stderr().print(f"[dim]Hint: {literal(hint)}[/dim]")
